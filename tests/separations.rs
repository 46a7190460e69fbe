//! The arrows between crates that must never exist (ARCHITECTURE.md, "Crates"): each binary and
//! library links only what it runs. Read from `cargo tree` (normal dependencies, the ones that
//! end up in the binary), so a new `[dependencies]` line that breaks a separation fails here.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// Every package `package` links (normal dependencies, transitively, itself included).
fn linked(package: &str) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
            "-p",
            package,
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree -p {package} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// `package` links each of `required` and none of `forbidden`.
fn check(package: &str, required: &[&str], forbidden: &[&str]) {
    let deps = linked(package);
    for r in required {
        assert!(deps.contains(*r), "{package} must link {r}; links: {deps:?}");
    }
    let found: Vec<_> = forbidden.iter().filter(|f| deps.contains(**f)).collect();
    assert!(found.is_empty(), "{package} must not link {found:?}");
}

/// What only the processor may hold: the engine, the target clients (Looker, AWS IAM, GCP IAM),
/// the rotator.
const PROCESSOR_ONLY: &[&str] = &[
    "gatehouse-engine",
    "gatehouse-targets",
    "gatehouse-rotation",
    "gatehouse-app",
    "aws-sdk-iam",
];

#[test]
fn the_ingress_links_no_engine_no_target_client_no_iam_sdk() {
    check(
        "gatehouse-ingress",
        &["gatehouse-intake", "gatehouse-store"],
        PROCESSOR_ONLY,
    );
}

#[test]
fn the_intake_library_links_no_engine_no_target_client_no_iam_sdk() {
    check(
        "gatehouse-intake",
        &["gatehouse-store", "gatehouse-platform"],
        PROCESSOR_ONLY,
    );
}

#[test]
fn the_rotator_links_no_intake() {
    check(
        "gatehouse-rotator",
        &["gatehouse-rotation", "gatehouse-engine"],
        &["gatehouse-intake", "gatehouse-app"],
    );
}

#[test]
fn the_processor_library_links_no_intake() {
    check(
        "gatehouse-engine",
        &["gatehouse-targets", "gatehouse-store"],
        &["gatehouse-intake", "gatehouse-app"],
    );
}

#[test]
fn stores_and_targets_link_neither_engine_nor_intake() {
    check(
        "gatehouse-store",
        &["gatehouse-domain"],
        &[
            "gatehouse-engine",
            "gatehouse-intake",
            "gatehouse-targets",
            "aws-sdk-iam",
        ],
    );
    check(
        "gatehouse-targets",
        &["aws-sdk-iam"],
        &["gatehouse-engine", "gatehouse-intake", "gatehouse-app"],
    );
}

#[test]
fn the_standalone_binary_links_everything() {
    check(
        "gatehouse",
        &[
            "gatehouse-app",
            "gatehouse-intake",
            "gatehouse-engine",
            "gatehouse-targets",
            "gatehouse-store",
            "gatehouse-rotation",
        ],
        &[],
    );
}
