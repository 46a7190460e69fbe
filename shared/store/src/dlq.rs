//! Dead letters as the `gatehouse dlq` tools show them, whatever the queue backend: the embedded
//! queue's `dead_letters` table, an SQS dead-letter queue, a Pub/Sub dead-letter subscription.

use crate::sqlite::Sqlite;
use chrono::{DateTime, Utc};
use gatehouse_domain::ports::{BackendError, DeadLetter};
use serde::Serialize;

/// One dead-lettered message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadMessage {
    /// The backend's id: the row id (embedded), the SQS `MessageId`, the Pub/Sub message id.
    pub id: String,
    /// When it was dead-lettered (SQS: when it was first sent; Pub/Sub: not known).
    pub at: Option<DateTime<Utc>>,
    /// Deliveries before it was dead-lettered, when known.
    pub attempts: Option<u32>,
    /// Why, as the processor said it; `None` when the queue moved it by itself (SQS
    /// `maxReceiveCount`, Pub/Sub `max_delivery_attempts`).
    pub reason: Option<String>,
    /// The message body, verbatim.
    pub body: String,
}

impl From<DeadLetter> for DeadMessage {
    fn from(d: DeadLetter) -> Self {
        DeadMessage {
            id: d.id.to_string(),
            at: Some(d.at),
            attempts: Some(d.attempts),
            reason: Some(d.reason),
            body: d.body,
        }
    }
}

/// Which dead letters to redrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redrive {
    One(String),
    All,
}

impl Redrive {
    #[cfg(any(feature = "sqs", feature = "pubsub"))]
    pub(crate) fn wants(&self, id: &str) -> bool {
        match self {
            Redrive::One(want) => want == id,
            Redrive::All => true,
        }
    }
}

/// The embedded queue's dead letters.
impl Sqlite {
    pub async fn dlq_list(&self) -> Result<Vec<DeadMessage>, BackendError> {
        Ok(self
            .dead_letters()
            .await?
            .into_iter()
            .map(DeadMessage::from)
            .collect())
    }

    /// Redrive one or all dead letters back onto the embedded queue; how many went back.
    pub async fn dlq_redrive(&self, which: &Redrive) -> Result<usize, BackendError> {
        let ids: Vec<i64> = match which {
            Redrive::All => self.dead_letters().await?.iter().map(|d| d.id).collect(),
            Redrive::One(id) => id.parse().ok().into_iter().collect(),
        };
        let mut n = 0;
        for id in ids {
            if self.redrive_dead_letter(id).await? {
                n += 1;
            }
        }
        Ok(n)
    }
}
