//! Time for schedules, grace periods and leases: the one clock (`gatehouse_domain::clock`),
//! injected so tests drive it. [`TokioClock`] follows tokio's (pausable) clock, [`ManualClock`]
//! moves only when told.

pub use gatehouse_platform::clock::{Clock, ManualClock, SystemClock, TokioClock};
