# syntax=docker/dockerfile:1
# Gatehouse: every service binary in one small image.
#   docker build -t gatehouse .
#   docker run --rm -p 8080:8080 gatehouse                      # gatehouse standalone
#   docker run --rm --entrypoint gatehouse-processor gatehouse   # one service on its own
# The builder runs scripts/build-release.sh, the same release build CI runs (`make release`): every
# package under services/ is built, so a new service is picked up without editing this file.

ARG RUST_VERSION=1
FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY . .
ENV CARGO_TARGET_DIR=/src/target
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    scripts/build-release.sh /out && ls -l /out/bin

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 gatehouse \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/gatehouse --create-home \
        --shell /usr/sbin/nologin gatehouse
COPY --from=builder /out/bin/ /usr/local/bin/
WORKDIR /var/lib/gatehouse
# Listen on every interface inside the container; state under the non-root user's home. The
# admin listener (/healthz, /readyz, /metrics) is on 9090, deliberately not EXPOSEd: give it to
# the orchestrator's probes and the metrics scraper only, never publish it.
ENV GATEHOUSE_LISTEN=0.0.0.0:8080 \
    GATEHOUSE_ADMIN_LISTEN=0.0.0.0:9090 \
    GATEHOUSE_DATA_DIR=/var/lib/gatehouse/data \
    GATEHOUSE_LOG_FORMAT=json
USER 10001:10001
EXPOSE 8080
# No HEALTHCHECK: the slim image has no HTTP client; orchestrators probe GET :9090/healthz and /readyz.
ENTRYPOINT ["gatehouse"]
CMD ["standalone"]
