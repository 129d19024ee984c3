# syntax=docker/dockerfile:1
# hookrelay: build in a full Rust image, run in a distroless one (no shell, no package
# manager, glibc and CA certificates only) as a non-root user.
#   docker build -t hookrelay .
#   docker run --rm -p 8080:8080 -e HOOKRELAY_LISTEN=0.0.0.0:8080 ... hookrelay serve

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep the registry and target/ between builds; the binary is copied out of
# target/ because a cache mount is gone once the step ends.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p hookrelay \
    && cp target/release/hookrelay /hookrelay

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /hookrelay /usr/local/bin/hookrelay
COPY deploy/hookrelay.example.toml /etc/hookrelay/hookrelay.example.toml
# distroless' nonroot user (65532); the Kubernetes manifests run as the same id.
USER 65532:65532
ENV HOOKRELAY_LISTEN=0.0.0.0:8080 \
    HOOKRELAY_LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/hookrelay"]
CMD ["serve"]
