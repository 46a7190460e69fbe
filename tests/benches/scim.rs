//! SCIM benchmark (being written).
fn main() {}
