# talos-mcp container image: the MCP server over streamable HTTP on port 8080.
#
#   docker build -t talos-mcp:0.1.0 .
#   docker run --rm -p 127.0.0.1:8080:8080 \
#     -v ~/.talos/config:/var/run/secrets/talos.dev/config:ro \
#     -v ./tokens:/etc/talos-mcp/tokens:ro talos-mcp:0.1.0
#
# The talosconfig is read from /var/run/secrets/talos.dev/config (where Talos itself mounts one
# for pods whose ServiceAccount has Talos API access); bearer tokens from /etc/talos-mcp/tokens.
# /mcp answers to loopback Host names (http://127.0.0.1:8080/mcp above); when clients use another
# name, list it: -e TALOS_MCP_ALLOWED_HOSTS=mcp.example.com,mcp.example.com:8443

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# Without the default `demo` feature: no simulator in the production binary.
RUN cargo build --release --locked -p talos-mcp-bin --no-default-features --features otel \
 && install -D -m 0755 target/release/talos-mcp /out/talos-mcp

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/talos-mcp --create-home talos-mcp
COPY --from=build /out/talos-mcp /usr/local/bin/talos-mcp
USER 10001:10001
ENV XDG_STATE_HOME=/var/lib/talos-mcp \
    TALOS_MCP_AUDIT_LOG=- \
    TALOS_MCP_HTTP_TOKENS_FILE=/etc/talos-mcp/tokens
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/talos-mcp"]
CMD ["serve", "--http", "0.0.0.0:8080"]
