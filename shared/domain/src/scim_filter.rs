//! SCIM 2.0 filter and PATCH path parser and evaluator (being written).
