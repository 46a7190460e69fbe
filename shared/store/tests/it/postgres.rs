//! What is specific to the PostgreSQL state store (the shared contract is in
//! `state_contract.rs`): several replicas on one database, and the URL's password kept secret.

use crate::state_contract::{entry, postgres};
use gatehouse_domain::ledger_chain;
use gatehouse_domain::ports::StateStore;
use gatehouse_store::postgres::Postgres;
use secrecy::SecretString;

/// Replicas start together (each migrates: sqlx serializes that with an advisory lock) and append
/// through their own pools: one linear chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_migrate_together_and_append_one_chain() {
    let url = SecretString::from(gatehouse_testkit::postgres::fresh_database().await);
    let replicas = futures::future::join_all((0..3).map(|_| Postgres::connect(&url, 3))).await;
    let replicas: Vec<Postgres> = replicas.into_iter().map(|r| r.expect("connect")).collect();
    let tasks: Vec<_> = replicas
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let r = r.clone();
            tokio::spawn(async move {
                for n in 0..10 {
                    r.append_ledger(&[entry(i * 100 + n)]).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let ok = ledger_chain::verify_store(&replicas[0]).await.unwrap().unwrap();
    assert_eq!(ok.rows, 30);
    assert_eq!(ok.head.unwrap().seq, 30);
}

/// A wrong password or an unreachable server: the error says so without the password or URL.
#[tokio::test]
async fn connection_errors_never_contain_the_password() {
    let (_db, good) = postgres().await;
    let secret = "hunter2-d0-not-leak";
    let wrong = good
        .0
        .replacen("gatehouse:gatehouse@", &format!("gatehouse:{secret}@"), 1);
    assert!(wrong.contains(secret));
    let e = Postgres::connect(&SecretString::from(wrong), 1)
        .await
        .unwrap_err();
    let shown = format!("{e} {e:?} {:?}", std::error::Error::source(&e));
    assert!(!shown.contains(secret), "{shown}");
    assert!(shown.contains("cannot connect to postgresql"), "{shown}");

    let bad = format!("postgres://gatehouse:{secret}@127.0.0.1:notaport/db");
    let e = Postgres::connect(&SecretString::from(bad), 1).await.unwrap_err();
    let shown = format!("{e} {e:?}");
    assert!(!shown.contains(secret), "{shown}");
}
