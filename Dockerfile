# syntax=docker/dockerfile:1
#
# One image with both nodemedic binaries, statically linked:
#   /usr/local/bin/nodemedic-agent     (DaemonSet; the chart runs it as uid 0
#                                       with three added capabilities)
#   /usr/local/bin/nodemedic-operator  (Deployment; uid 65532)
#
#   docker build -t ghcr.io/nodemedic/nodemedic:0.1.0 .
#
# The build stage is Alpine, whose Rust target is musl: the binaries come out
# statically linked (no libc in the runtime image). TLS is rustls, so no
# OpenSSL is needed; `ring` needs a C compiler and musl headers.

ARG RUST_VERSION=1.89

FROM docker.io/library/rust:${RUST_VERSION}-alpine AS build
RUN apk add --no-cache gcc musl-dev
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin nodemedic-agent --bin nodemedic-operator \
 && mkdir -p /out \
 && cp target/release/nodemedic-agent target/release/nodemedic-operator /out/

# distroless/static: CA certificates, /etc/passwd with nonroot (65532), no shell.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/nodemedic-agent /out/nodemedic-operator /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/nodemedic-operator"]
CMD ["run"]
