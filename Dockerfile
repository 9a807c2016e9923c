# syntax=docker/dockerfile:1
#
# keygate's container image.
#
#   docker build -t keygate .                   the gateway (the last stage)
#   docker build --target mock -t keygate-mock . the mock push backend that
#                                                docker-compose.yml runs
#
# The build stage compiles keygate in release mode. The final stage holds
# only the binary, the config folder layout of NPS deployments and a
# non-root user.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build

# Some of pingora's dependencies compile C and C++ code, and libz-ng-sys
# builds zlib-ng with cmake.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake make g++ pkg-config \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY examples ./examples
# Cargo.toml names targets under benches/, and cargo refuses a manifest
# whose target files are missing.
COPY benches ./benches

# The cache mounts keep downloaded crates and compiled dependencies between
# builds. They are not part of the image, so the binary is copied out.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin keygate \
    && install -D -m 0755 target/release/keygate /out/keygate


# The mock push backend: returns 404 for every push and records requests.
# It is for trying keygate out, never for production.
FROM build AS mock-build
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --example mock_push_backend \
    && install -D -m 0755 target/release/examples/mock_push_backend /out/mock_push_backend

FROM debian:${DEBIAN_RELEASE}-slim AS mock
COPY --from=mock-build /out/mock_push_backend /usr/local/bin/mock_push_backend
USER 10001:10001
# The mock accepts only loopback addresses, because it returns the recorded
# requests, API keys included, to anyone who connects. docker-compose.yml
# therefore runs it in keygate's network namespace.
ENTRYPOINT ["/usr/local/bin/mock_push_backend"]
CMD ["--listen", "127.0.0.1:20280"]


FROM debian:${DEBIAN_RELEASE}-slim AS runtime

# A fixed numeric id lets Kubernetes check runAsNonRoot without a passwd
# lookup, and matches runAsUser in deploy/kubernetes/deployment.yaml.
RUN groupadd --system --gid 10001 keygate \
    && useradd --system --uid 10001 --gid keygate --home-dir /app \
        --no-create-home --shell /usr/sbin/nologin keygate

COPY --from=build /out/keygate /usr/local/bin/keygate

# The default layout of NPS deployments. docker-compose.yml and the
# Kubernetes manifests mount their own files over these folders.
WORKDIR /app
COPY config ./config
COPY certificates ./certificates
COPY cacerts ./cacerts

USER 10001:10001
# 20200: the gateway. 20201: /metrics, which the shipped config serves on
# 127.0.0.1 only, so a container config must set metrics.listen to
# 0.0.0.0:20201 for a scraper outside the container.
EXPOSE 20200 20201
# keygate stops accepting on SIGTERM and gives requests in flight up to
# 5 seconds, within docker stop's default 10 seconds.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/keygate"]
CMD ["--config", "/app/config/application.yml"]
