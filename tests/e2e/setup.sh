#!/usr/bin/env bash
# Installs what the end-to-end suite needs, inside tests/e2e only (idempotent, quick when done):
#   .venv/          Python virtualenv with the pinned MCP and A2A Python SDKs and pytest (requirements.txt)
#   node_modules/   Node 22, the MCP Inspector and the MCP conformance suite (package-lock.json)
# Needs python3 (3.10 or newer) with venv, and npm (any Node works to run npm; the suite runs on
# the Node 22 it installs). When they are missing and this runs as root, they come from apt.
set -euo pipefail
cd "$(dirname "$0")"

say() { printf 'e2e setup: %s\n' "$*" >&2; }

apt_install() {
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        say "missing: $* (install them, or run this as root on Debian/Ubuntu)"
        exit 1
    fi
    say "installing $* with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

python=${PYTHON:-python3}
command -v "$python" >/dev/null || apt_install python3 python3-venv
"$python" - <<'PY' || { say "Python 3.10 or newer is needed (found $("$python" --version 2>&1))"; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 10) else 1)
PY
"$python" -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
command -v npm >/dev/null || apt_install npm

# Python: recreated when requirements.txt changes.
if ! cmp -s requirements.txt .venv/.requirements 2>/dev/null; then
    say "creating .venv"
    rm -rf .venv
    "$python" -m venv .venv
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-input -r requirements.txt
    cp requirements.txt .venv/.requirements
fi

# Node: reinstalled when package-lock.json changes.
if ! cmp -s package-lock.json node_modules/.package-lock.installed 2>/dev/null; then
    say "installing node_modules"
    npm ci --no-audit --no-fund --loglevel=error
    cp package-lock.json node_modules/.package-lock.installed
fi
node_modules/.bin/node --version >/dev/null
