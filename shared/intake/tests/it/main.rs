//! Integration tests of the intakes, linked into one binary.

mod okta_catchup;
