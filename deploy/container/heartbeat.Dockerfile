# The heartbeat monitor in a container, for a host outside the cluster it
# watches. Build from the repository root:
#   docker build -f deploy/container/heartbeat.Dockerfile -t vigil-heartbeat .
# Run (the config must listen on 0.0.0.0 to be reachable from outside):
#   docker run -d --restart=always -p 7490:7490 \
#     -v $PWD/heartbeat.toml:/etc/vigil/heartbeat.toml:ro \
#     -v vigil-heartbeat:/var/lib/vigil vigil-heartbeat
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p vigil-heartbeat

FROM debian:bookworm-slim
# The binary carries its time zone database and the web's root
# certificates (for probes); the system's CA bundle is for notifications.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/vigil vigil \
    && install -d -o vigil -g vigil -m 0750 /var/lib/vigil
COPY --from=build /src/target/release/vigil-heartbeat /usr/local/bin/vigil-heartbeat
USER vigil
ENV VIGIL_DATA_DIR=/var/lib/vigil
VOLUME /var/lib/vigil
EXPOSE 7490 7491
ENTRYPOINT ["/usr/local/bin/vigil-heartbeat"]
CMD ["--config", "/etc/vigil/heartbeat.toml"]
