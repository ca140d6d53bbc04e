# binlog-tail in a small runtime image, running as a non-root user.
#   docker build -t binlog-tail .
#   docker run --rm binlog-tail check --url mysql://repl@db:3306
# Not built on the project's machines (no Docker there); see docs/operating.md.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends pkg-config libssl-dev cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked && strip target/release/binlog-tail

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/binlog-tail --create-home binlog-tail
COPY --from=build /src/target/release/binlog-tail /usr/local/bin/binlog-tail
USER binlog-tail
WORKDIR /var/lib/binlog-tail
VOLUME /var/lib/binlog-tail
EXPOSE 9187
ENTRYPOINT ["/usr/local/bin/binlog-tail"]
CMD ["--help"]
