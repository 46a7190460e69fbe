# Gatehouse. The README documents `make run` and `make test`; the rest are for contributors.
CARGO ?= cargo

.PHONY: run test soak fuzz bench lint slim fmt build release image clean

## run: build and start `gatehouse standalone` on 127.0.0.1:8080 with the example config (dry run)
run:
	$(CARGO) run --quiet -p gatehouse -- --config examples/gatehouse.toml standalone

## test: every test in the workspace (unit, integration, end to end); starts moto (SQS) and the
## Pub/Sub emulator on loopback, installing them on first use, and stops them afterwards
test:
	scripts/test.sh

## soak: GATEHOUSE_SOAK_EVENTS events (default 100,000) per queue through SQS (moto) and Pub/Sub
## (the emulator) with 20% Looker faults, SIGKILLed processors and a TCP proxy dropping and
## stalling the queue connections (issue 17; long, not part of `make test`; bench/soak.md)
soak:
	scripts/with-servers.sh $(CARGO) test --locked -p gatehouse --test soak -- soak:: --nocapture --test-threads 1

## fuzz: the property-based fuzzing of every parser of outside input (Okta, SCIM, Graph, Google,
## Standard Webhooks, CloudTrail, GCP audit, Pub/Sub), long: FUZZ_CASES cases per property
## (`make test` runs the same properties with a few hundred cases each)
FUZZ_CASES ?= 100000
fuzz:
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --locked -p gatehouse-domain -p gatehouse-intake --lib -- fuzz

## bench: offboarding latency -> bench/results.md, SCIM throughput -> bench/scim.md, events/s and
## peak RSS per queue backend -> bench/queues.md (starts moto and the Pub/Sub emulator), events/s
## end to end next to a bare axum handler -> bench/throughput.md
bench:
	scripts/bench.sh

## lint: formatting and clippy, as CI runs them, then `make slim`
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	$(MAKE) slim

## slim: clippy on every service built without its default features (no PostgreSQL, SQS,
## Pub/Sub: the code under `#[cfg(not(feature = ...))]` compiles nowhere else). `-p` is required:
## in the workspace the other packages' features would turn the backends back on. That no such
## build links their clients is tests/separations.rs (`cargo tree`, part of `make test`).
SERVICES_P = -p gatehouse -p gatehouse-ingress -p gatehouse-processor -p gatehouse-rotator
slim:
	$(CARGO) clippy --locked $(SERVICES_P) --no-default-features -- -D warnings

fmt:
	$(CARGO) fmt --all

build:
	$(CARGO) build --workspace --locked

## release: every service binary, optimised and stripped of debug info (scripts/build-release.sh,
## the same build the Dockerfile runs); binaries in $(CARGO_TARGET_DIR or target)/release
release:
	scripts/build-release.sh

## image: `docker build` when a container engine answers; without one, runs the Dockerfile's
## builder commands here and checks every service binary comes out (CI does this)
image:
	scripts/image.sh

clean:
	$(CARGO) clean
