//! The processor: the [`engine`] decides and applies, the [`worker`] drives it from the queue,
//! [`reconcile`] compares the directory with every target, [`budget`] counts Looker calls,
//! [`breaker`] holds mass changes, and [`app`] wires it from configuration.

pub mod access;
pub mod access_render;
pub mod app;
pub mod breaker;
pub mod budget;
pub mod cloud;
pub mod engine;
pub mod error;
pub mod head_export;
pub mod looker_core;
pub mod operator;
pub mod reconcile;
pub mod reconcile_budget;
pub mod reconcile_leader;
pub mod reconcile_model;
pub mod reconcile_orphans;
pub mod reconcile_paged;
pub mod reconcile_plan;
pub mod worker;
