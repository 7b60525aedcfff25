# syntax=docker/dockerfile:1
#
# rekeyd container image: a Rust build stage and a distroless runtime stage.
#
#   docker build -t rekeyd:0.1.0 --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#   docker run --read-only --stop-timeout 90 \
#     -v rekeyd-state:/var/lib/rekeyd -v "$PWD/policy.toml:/etc/rekeyd/policy.toml:ro" rekeyd:0.1.0
#
# The runtime image writes nothing outside /var/lib/rekeyd (the policy's [daemon] state_dir:
# audit log, fingerprint key, file store), so it runs with a read-only root filesystem.
# See docs/deployment.md. Base images are pinned by tag here; pin them by digest in the
# registry you build from.

ARG RUST_VERSION=1.95

# Debian 12 (bookworm) in both stages: the binary links the build stage's glibc, which must
# not be newer than the runtime's.
FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
# Only what `cargo build` reads: the manifest, the lock file, the sources, and benches/
# (Cargo.toml declares a [[bench]] target, so its file must exist for the manifest to load).
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# The cache mounts keep downloaded crates and compiled dependencies between builds; the
# binary is copied out because the target directory is a cache, not part of the layer.
# /out/state becomes the state directory of the runtime image: it must exist there, owned
# by the runtime user with mode 0700, and the distroless image has no shell to create it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin rekeyd \
    && install -D -m 0755 target/release/rekeyd /out/rekeyd \
    && install -d -m 0700 /out/state

# distroless "cc": glibc, libgcc, OpenSSL and CA certificates, no shell, no package manager.
# The :nonroot variant's user is 65532, which USER below names by number so that
# Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="rekeyd" \
      org.opencontainers.image.description="Secrets rotation daemon with a tamper-evident audit log" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

COPY --from=build --chown=0:0 /out/rekeyd /usr/local/bin/rekeyd
COPY --from=build --chown=65532:65532 /out/state /var/lib/rekeyd

# REKEYD_POLICY is the path the CLI reads by default too; mount the policy there read-only.
# JSON logs, one object per line, for log shippers.
ENV REKEYD_POLICY=/etc/rekeyd/policy.toml \
    REKEYD_LOG_FORMAT=json

USER 65532:65532
WORKDIR /var/lib/rekeyd
# Everything rekeyd writes lives here. Declared as a volume so a container started without
# one still never writes to its root filesystem; mount a named volume to keep the audit log
# and the keys across container replacements.
VOLUME ["/var/lib/rekeyd"]
# The HTTP API ([api] listen in the policy): /healthz, /readyz, /metrics, /v1/...
EXPOSE 9464

# SIGTERM drains in-flight rotations (up to 60 s) and exits 0; give it that long
# (docker run --stop-timeout 90, compose stop_grace_period: 90s). SIGHUP reloads the policy.
STOPSIGNAL SIGTERM

# There is no shell or curl in this image, so the binary probes its own API: `rekeyd
# health` GETs /healthz on the policy's [api] listener over loopback (the policy must
# enable [api]; HTTPS listeners are probed by the orchestrator instead).
HEALTHCHECK --interval=30s --timeout=5s --start-period=1m --retries=3 \
    CMD ["/usr/local/bin/rekeyd", "health"]

ENTRYPOINT ["/usr/local/bin/rekeyd"]
CMD ["run"]
