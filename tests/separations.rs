//! The arrows between crates that must never exist (ARCHITECTURE.md, "Crates"): each binary and
//! library links only what it runs. Read from `cargo tree` (normal dependencies, the ones that
//! end up in the binary), so a new `[dependencies]` line that breaks a separation fails here.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// Every package `package` links (normal dependencies, transitively, itself included), built
/// with `features` (none: its default features; or `--no-default-features`, `--features sqs`).
fn linked_with(package: &str, features: &[&str]) -> BTreeSet<String> {
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
        .args(features)
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
    check_with(package, &[], required, forbidden);
}

/// [`check`] with `features` arguments.
fn check_with(package: &str, features: &[&str], required: &[&str], forbidden: &[&str]) {
    let deps = linked_with(package, features);
    for r in required {
        assert!(
            deps.contains(*r),
            "{package} {features:?} must link {r}; links: {deps:?}"
        );
    }
    let found: Vec<_> = forbidden.iter().filter(|f| deps.contains(**f)).collect();
    assert!(found.is_empty(), "{package} {features:?} must not link {found:?}");
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

/// Issue 12, item 1: the optional backends are cargo features (`postgres`, `sqs`, `pubsub`), on
/// in every service's defaults. The feature and the client library it brings in.
const OPTIONAL_BACKENDS: &[(&str, &str)] = &[
    ("postgres", "sqlx-postgres"),
    ("sqs", "aws-sdk-sqs"),
    ("pubsub", "google-cloud-pubsub"),
];

const SERVICES: &[&str] = &[
    "gatehouse-ingress",
    "gatehouse-processor",
    "gatehouse-rotator",
    "gatehouse",
];

fn backend_crates() -> Vec<&'static str> {
    OPTIONAL_BACKENDS.iter().map(|(_, c)| *c).collect()
}

#[test]
fn without_default_features_no_service_links_postgres_sqs_or_pubsub() {
    for service in SERVICES {
        check_with(
            service,
            &["--no-default-features"],
            &["gatehouse-store", "sqlx-sqlite"],
            &backend_crates(),
        );
    }
}

#[test]
fn by_default_every_service_links_every_backend() {
    for service in SERVICES {
        check(service, &backend_crates(), &[]);
    }
}

/// One feature brings in its own client library and no other (the slim ingress as the example).
#[test]
fn each_backend_feature_links_its_client_alone() {
    for (feature, client) in OPTIONAL_BACKENDS {
        let others: Vec<_> = backend_crates().into_iter().filter(|c| c != client).collect();
        check_with(
            "gatehouse-ingress",
            &["--no-default-features", "--features", feature],
            &[client],
            &others,
        );
    }
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Issue 12, item 4: the processor and the rotator meet through the rotation queue, never a
/// shared table. The rotator's inbox of requests (`rotation_inbox`, formerly the processor's
/// `rotation_requests`) is named in no source file outside the rotator's crate: no processor,
/// store or intake code reads or writes it, so a request can only reach the rotator as a message.
#[test]
fn only_the_rotator_touches_its_inbox_of_rotation_requests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for base in ["shared", "services"] {
        for krate in std::fs::read_dir(root.join(base)).unwrap() {
            let src = krate.unwrap().path().join("src");
            if src.is_dir() {
                rust_files(&src, &mut files);
            }
        }
    }
    assert!(files.len() > 50, "found the sources: {}", files.len());
    let rotator = root.join("shared/rotation/src");
    let mut rotator_files = 0;
    let mut offenders = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let names = text.contains("rotation_inbox") || text.contains("rotation_requests ");
        if f.starts_with(&rotator) {
            rotator_files += usize::from(names);
        } else if names {
            offenders.push(f.display().to_string());
        }
    }
    assert!(
        offenders.is_empty(),
        "outside the rotator, these name its inbox table: {offenders:?}"
    );
    assert!(
        rotator_files >= 2,
        "the rotator's SQLite and PostgreSQL stores keep the inbox"
    );
}
