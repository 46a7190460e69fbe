//! AWS SQS queue backend (being written).
