# syntax=docker/dockerfile:1
# One Dockerfile, two images, one Rust build stage (plus a Node stage for the web console):
#   docker build --target beehive  -t beehive:dev .            # every component: beehive serve <component>
#   docker build --target operator -t beehive-operator:dev .   # the Kubernetes operator
# Both run as the distroless `nonroot` user (65532) on a read-only root filesystem.

ARG RUST_VERSION=1.95
ARG NODE_VERSION=22

# The web console (console/ -> dist/), served by the gateway at `/`. Only this stage
# needs Node; the Rust build does not.
FROM docker.io/library/node:${NODE_VERSION}-bookworm-slim AS console
WORKDIR /console
COPY console/package.json console/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY console/ ./
RUN npm run build

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# Caches keep the registry and target dir between builds on the same machine.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p beehive -p beehive-operator \
 && mkdir -p /out \
 && cp target/release/beehive target/release/beehive-operator /out/ \
 && strip /out/beehive /out/beehive-operator

# glibc + libgcc, no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot AS beehive
LABEL org.opencontainers.image.title="beehive" \
      org.opencontainers.image.description="Beehive instant-messaging backend: beehive serve <component>|all, beehive migrate" \
      org.opencontainers.image.source="https://github.com/beehive-im/beehive" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/beehive /usr/local/bin/beehive
COPY --from=console /console/dist /usr/share/beehive/console
ENV BEEHIVE_CONSOLE_DIR=/usr/share/beehive/console
USER 65532:65532
# gateway HTTP/WebSocket, admin (/healthz, /readyz, /metrics), gRPC of the other components
EXPOSE 8080 9090 50050-50056
ENTRYPOINT ["/usr/local/bin/beehive"]
CMD ["serve", "all"]

FROM gcr.io/distroless/cc-debian12:nonroot AS operator
LABEL org.opencontainers.image.title="beehive-operator" \
      org.opencontainers.image.description="Kubernetes operator for Beehive installations (BeehiveCluster)" \
      org.opencontainers.image.source="https://github.com/beehive-im/beehive" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/beehive-operator /usr/local/bin/beehive-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/beehive-operator"]
CMD ["run"]
