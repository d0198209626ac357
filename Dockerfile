# One `faro` binary for every service: the Deployment picks the subcommand
# (`faro edge`, `faro ingest`, …). Built with the locked dependencies; protoc
# is vendored by the proto crate, so the build stage needs no system packages.
#
#   docker build -t faro:dev .
#
# scripts/check-deploy lints this file (hadolint) and checks that the binary
# built the same way links only what the runtime image ships.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin faro \
    && cp target/release/faro /faro

# glibc, libgcc and CA certificates; no shell, no package manager. The
# `nonroot` tag runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /faro /usr/local/bin/faro
USER 65532:65532
EXPOSE 8080 7101 7102 7103
ENTRYPOINT ["/usr/local/bin/faro"]
CMD ["--help"]
