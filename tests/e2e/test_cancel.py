"""Cancelling a long call: the client gives up on a log scan, and the server stops it."""

from __future__ import annotations

import time
import urllib.request

import anyio
import pytest

import harness
from harness import CP1, Deployment, ServerConfig

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def long_logs():
    """Logs of 50 million lines: scanning one for text that is not there takes far longer than
    any test may."""
    with harness.sim(harness.workdir("long-logs-sim"), log_lines=50_000_000) as sim:
        d = Deployment(sim, ServerConfig(), "long-logs")
        yield d
        d.close()


def cancelled_scans(conn) -> list[dict]:
    """The audit lines of log scans that ended cancelled."""
    return [line for line in conn.finished("talos_service_logs") if line["result"] == "cancelled"]


async def test_cancelling_a_long_log_call_stops_it(long_logs, transport, era):
    async with long_logs.connect(transport, era) as conn:
        before = len(cancelled_scans(conn))
        started = time.monotonic()
        with anyio.move_on_after(1.0) as scope:
            await conn.client.call_tool(
                "talos_service_logs", {"service": "etcd", "grep": "no-such-text", "nodes": [CP1]}
            )
        assert scope.cancelled_caught, "the scan ended before the client gave up"

        # The server records the cancellation as soon as it stops the call.
        deadline = time.monotonic() + 10
        while len(cancelled_scans(conn)) == before:
            assert time.monotonic() < deadline, f"the server did not stop the call: {conn.audit()[-3:]}"
            await anyio.sleep(0.05)
        assert time.monotonic() - started < 10
        [line] = cancelled_scans(conn)[before:]
        assert line["duration_ms"] < 8000, line

        # The session goes on.
        result = await conn.client.call_tool("talos_hostname", {"nodes": [CP1]})
        assert result.structured_content["nodes"][0]["result"]["hostname"] == "talos-cp-1"

        if transport == "http":
            with urllib.request.urlopen(conn.http.base + "/metrics", timeout=10) as response:
                metrics = response.read().decode()
            assert 'talos_mcp_tool_calls_total{tool="talos_service_logs",outcome="cancelled"}' in metrics
