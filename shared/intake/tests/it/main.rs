//! Integration tests of the intakes, linked into one binary.

mod catchup_postgres;
mod okta_catchup;
mod okta_import;
mod okta_oauth;
