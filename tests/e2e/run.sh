#!/usr/bin/env bash
# Runs the end-to-end suite: installs its tools (setup.sh), builds talos-mcp and talos-sim, then
# drives them with the official MCP Python SDK, the MCP Inspector CLI and the MCP conformance
# suite. Everything listens on 127.0.0.1. Extra arguments go to pytest (e.g. -k inspector).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

"$here/setup.sh"

# The debug build that `cargo test --workspace` already made (no extra compile after it).
(cd "$root" && cargo build --locked --quiet -p talos-mcp-bin -p talos-sim)
export TALOS_MCP_BIN="${TALOS_MCP_BIN:-$root/target/debug/talos-mcp}"
export TALOS_SIM_BIN="${TALOS_SIM_BIN:-$root/target/debug/talos-sim}"

# Results of this run only (the server logs and audit lines of each test, the conformance checks).
rm -rf "$here/.results"
cd "$here"
exec .venv/bin/python -m pytest "$@"
