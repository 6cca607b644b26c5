"""Fixtures: simulated clusters, talos-mcp deployments, and clients of the official Python SDK
connected over stdio or streamable HTTP, on the handshake era (initialize, 2025-11-25) or the
stateless one (server/discover, 2026-07-28)."""

from __future__ import annotations

import json

import pytest

import harness
from harness import ERAS, SNAPSHOT, TRANSPORTS, Deployment, ServerConfig


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def cluster():
    """The shared simulated cluster; tests using it never change its state."""
    with harness.sim(harness.workdir("sim")) as sim:
        yield sim


@pytest.fixture(scope="session")
def readonly(cluster):
    """talos-mcp as installed: read-only, defaults for everything else."""
    deployment = Deployment(cluster, ServerConfig(), "readonly")
    yield deployment
    deployment.close()


@pytest.fixture(params=TRANSPORTS)
def transport(request) -> str:
    return request.param


@pytest.fixture(params=list(ERAS))
def era(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def snapshot() -> dict[str, dict]:
    """The committed tools/list snapshot (every tool of every tier), by name."""
    return {tool["name"]: tool for tool in json.loads(SNAPSHOT.read_text())}
