"""Tool failures as a model sees them: `isError` results whose text leads with the error kind
and says what to do next, machine-readable details in `_meta`, and no structured content that
would contradict the tool's output schema."""

from __future__ import annotations

import socket

import pytest

import harness
from harness import CP1, Deployment, ServerConfig, text_of

pytestmark = pytest.mark.anyio

ERROR_META = "talos-mcp/error"


def assert_tool_error(result, kind: str, *phrases: str) -> str:
    text = text_of(result)
    assert result.is_error is True, text
    assert result.structured_content is None, "error results carry no structured content"
    assert text.startswith(f"{kind}:"), text
    assert result.meta[ERROR_META]["kind"] == kind
    assert result.meta[ERROR_META]["message"] == text
    for phrase in phrases:
        assert phrase in text, (phrase, text)
    return text


async def test_refusals_name_the_problem_and_the_way_out(readonly, transport, era):
    async with readonly.connect(transport, era) as conn:
        call = conn.client.call_tool
        assert_tool_error(
            await call("talos_version", {"nodes": ["10.99.0.1"]}),
            "NodeNotAllowed",
            "10.99.0.1",
            CP1,
            "--allow-node-cidr",
        )
        assert_tool_error(await call("talos_version", {"context": "prod"}), "InvalidConfig", "available contexts: talos-sim")
        assert_tool_error(
            await call("talos_read_file", {"path": "/etc/shadow", "nodes": [CP1]}), "PathNotAllowed", "/proc"
        )
        assert_tool_error(await call("talos_dmesg", {"tail": 0}), "InvalidArgument", "`tail`")
        assert_tool_error(
            await call("talos_get", {"resource_type": "machineconfig"}), "Refused", "never shows"
        )
        # Tools of a tier the operator has not enabled are not listed, and refused by name.
        assert "talos_reboot" not in {t.name for t in (await conn.client.list_tools()).tools}
        assert_tool_error(
            await call("talos_reboot", {"node": CP1}), "Refused", "destructive tier", "--allow-destructive"
        )
    finished = conn.finished()
    kinds = {line["tool"]: line["result"] for line in finished}
    assert kinds["talos_reboot"] == "refused" and kinds["talos_read_file"] == "PathNotAllowed"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def wrong_clusters(cluster):
    """talosconfigs that cannot work: one pointing at a closed port, one with this cluster's
    credentials against another cluster (whose CA signed neither side)."""
    workdir = harness.workdir("wrong-clusters")
    base = cluster.talosconfig.read_text()
    closed = workdir / "closed.talosconfig"
    closed.write_text(base.replace(cluster.endpoint, f"127.0.0.1:{free_port()}"))
    with harness.sim(workdir / "other-sim") as other:
        foreign = workdir / "foreign.talosconfig"
        foreign.write_text(base.replace(cluster.endpoint, other.endpoint))
        deployments = {
            "closed": Deployment(cluster, ServerConfig(talosconfig=closed), "closed"),
            "foreign": Deployment(cluster, ServerConfig(talosconfig=foreign), "foreign"),
        }
        yield deployments
        for d in deployments.values():
            d.close()


async def test_unreachable_and_untrusted_endpoints(wrong_clusters, transport):
    # A single-answer tool (no per-node list) fails as a whole with the error kind in front.
    async with wrong_clusters["closed"].connect(transport) as conn:
        result = await conn.client.call_tool("talos_etcd_status", {})
        text = text_of(result)
        assert result.is_error, text
        assert text.startswith("Connection:") and "127.0.0.1:" in text, text
        # Fan-out tools report every node's failure in a normal result.
        result = await conn.client.call_tool("talos_version", {"nodes": [CP1]})
        node = result.structured_content["nodes"][0]
        assert result.structured_content["failed_nodes"] == [CP1]
        assert node["ok"] is False and node["error"]["kind"] == "Connection", node
    async with wrong_clusters["foreign"].connect(transport) as conn:
        result = await conn.client.call_tool("talos_etcd_status", {})
        text = text_of(result)
        assert result.is_error, text
        assert text.startswith("Authentication:"), text
