# Every Vigil binary in one image, the image the Helm chart
# (deploy/helm/vigil) runs: vigil (vigil up, vigil ping, vigil check-config),
# vigil-agent, vigil-cluster-agent, vigil-ingest, vigil-query,
# vigil-alerting, vigil-ui-gateway and vigil-heartbeat. Build from the
# repository root:
#   docker build -f deploy/container/vigil.Dockerfile \
#     -t ghcr.io/vigil-observability/vigil:0.1.0 .
# This recipe is not built by the tests (no container engine on the build
# machines); scripts/helm-check.sh only renders and validates the chart.
FROM rust:1.95-bookworm AS build
# clang and libbpf headers: the agent's eBPF programs are built by
# services/agent/build.rs (without them the agent builds with eBPF off).
RUN apt-get update \
    && apt-get install -y --no-install-recommends clang libbpf-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
        -p vigil-cli -p vigil-agent -p vigil-ingest -p vigil-query \
        -p vigil-alerting -p vigil-ui-gateway -p vigil-heartbeat \
    && mkdir -p /out \
    && for b in vigil vigil-agent vigil-cluster-agent vigil-ingest vigil-query \
                vigil-alerting vigil-ui-gateway vigil-heartbeat; do \
         cp "target/release/$b" /out/; \
       done

FROM debian:bookworm-slim
# ca-certificates: notifications, OIDC and ClickHouse over TLS.
# systemd (journalctl only is used): the agent reads the nodes' journal
# with `journalctl -D /var/log/journal`. mount (util-linux, in the base
# image): the agent mounts tracefs when a node has none mounted.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates systemd \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/vigil vigil \
    && install -d -o vigil -g vigil -m 0750 /var/lib/vigil
COPY --from=build /out/ /usr/local/bin/
# Every service but the node agent runs as this user (the chart also sets
# it); the agent's pod runs as root, privileged.
USER 10001:10001
ENV VIGIL_DATA_DIR=/var/lib/vigil
# 4317/4318 ingest, 7410/7411 query, 7420/7421 alerting, 7480 UI,
# 7490/7491 heartbeat, 7400 agent, 7401 cluster agent.
EXPOSE 4317 4318 7410 7411 7420 7421 7480 7490 7491 7400 7401
CMD ["vigil", "--help"]
