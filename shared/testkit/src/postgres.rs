//! A fresh PostgreSQL database per test, on the throwaway cluster `scripts/postgres.sh` starts
//! (`make test` and `scripts/with-servers.sh` export `GATEHOUSE_TEST_POSTGRES_URL`).

use sqlx::Connection;

/// The cluster's URL (a database to connect to for `CREATE DATABASE`). Panics, telling how to
/// start the cluster, when the variable is missing: PostgreSQL tests fail, they never skip.
pub fn cluster_url() -> String {
    std::env::var("GATEHOUSE_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "GATEHOUSE_TEST_POSTGRES_URL is not set: the PostgreSQL tests need a cluster. Run `make test` \
             (scripts/with-servers.sh starts one with scripts/postgres.sh), or `POSTGRES_PORT=5432 \
             scripts/postgres.sh start` and \
             GATEHOUSE_TEST_POSTGRES_URL=postgres://gatehouse:gatehouse@127.0.0.1:5432/postgres"
        )
    })
}

/// Create a database with a random name and return its URL.
pub async fn fresh_database() -> String {
    let cluster = cluster_url();
    let name = format!("gh_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&cluster)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test cluster (run `make test`): {e}"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create the test database");
    conn.close().await.ok();
    let (base, _) = cluster
        .rsplit_once('/')
        .expect("GATEHOUSE_TEST_POSTGRES_URL ends in /DATABASE");
    format!("{base}/{name}")
}
