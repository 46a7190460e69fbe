//! The API clients the targets drive: Looker (users, groups, roles, content hand-over), AWS IAM,
//! GCP IAM (+ Google groups over Cloud Identity) and AWS IAM Identity Center.

pub mod aws_iam;
pub mod cloud_identity;
pub mod gcp_iam;
pub mod identity_center;
pub mod looker;
pub mod looker_content;
pub mod looker_pages;
