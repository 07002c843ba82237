# syntax=docker/dockerfile:1
# One image for every `ais` command (serve, ingest, stream, query, migrate, loadgen):
#   docker build -t infra-ai-streaming:0.1.0 .
#   docker run --rm infra-ai-streaming:0.1.0 ingest --kafka … --listen 0.0.0.0:8080
# The binary is built by scripts/build-release.sh, the same command CI runs.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
# cmake builds the bundled librdkafka; npm installs the dashboard's packages, which the
# build bundles into the binary. Debian's packages of the pinned release, not pinned
# one by one.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake nodejs npm \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the build between image builds; the binary is
# copied out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    scripts/build-release.sh release /out

# glibc and libgcc of the build image's Debian release, nothing else; user 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ais /usr/local/bin/ais
USER 65532:65532
# HTTP (ingest, query, serve), OTLP/gRPC (ingest, serve), metrics and health (stream).
EXPOSE 8080 4317 9090
ENTRYPOINT ["/usr/local/bin/ais"]
CMD ["--help"]
