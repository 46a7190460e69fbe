//! Integration tests of the targets and their clients, linked into one binary.

mod aws_iam;
mod aws_iam_sweep;
mod contract;
mod gcp_groups;
mod gcp_iam;
mod identity_center;
mod looker;
mod looker_content;
mod looker_sso;
mod own_identity;
mod real_targets;
mod retry_core;
mod toy_target;
mod toy_target_contract;
