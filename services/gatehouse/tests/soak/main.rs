//! `make soak` (issue 17; not part of `make test`): many events through SQS (moto) and through
//! Pub/Sub (the emulator) into `gatehouse standalone` processes killed at random points, with
//! 20% of the fake Looker's answers 429/5xx and a TCP proxy that drops and stalls connections
//! between the processors and the queue emulator. `GATEHOUSE_SOAK_EVENTS` (per queue, default
//! 100,000) sets the size. See docs/crash-test.md and bench/soak.md.
//!
//! It reuses the crash test's harness (`tests/it/crash.rs`, compiled in here too: `make soak`
//! runs only the `soak::` tests).

use std::process::Command;

#[path = "../it/crash.rs"]
#[allow(dead_code)]
mod crash;
mod soak;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    // Never inherit a developer's real settings.
    for (k, _) in std::env::vars() {
        if k.starts_with("GATEHOUSE_") || k.starts_with("OTEL_") {
            c.env_remove(k);
        }
    }
    c.env("RUST_LOG", "warn");
    c.env("GATEHOUSE_ADMIN_LISTEN", "127.0.0.1:0");
    c
}
