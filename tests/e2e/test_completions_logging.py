"""Completions and MCP logging through the official SDK: argument suggestions for prompts and
resource templates, and the server's own warnings as log messages to a client that asked."""

from __future__ import annotations

import anyio
import mcp_types
import pytest
from mcp.shared.exceptions import MCPError

import harness
from harness import CP1, W1, Deployment, ServerConfig, text_of

pytestmark = [
    pytest.mark.anyio,
    # MCP logging is deprecated by 2026-07-28 (SEP-2577) but part of the handshake-era revisions.
    pytest.mark.filterwarnings("ignore:The logging capability is deprecated"),
]

PROMPT = mcp_types.PromptReference(name="diagnose_node")
SERVICES = mcp_types.ResourceTemplateReference(uri="talos://{context}/nodes/{node}/services")
RESOURCES = mcp_types.ResourceTemplateReference(uri="talos://{context}/nodes/{node}/resources/{resource_type}")


async def test_completions(readonly, transport, era):
    async with readonly.connect(transport, era) as conn:
        client = conn.client
        assert conn.client.server_capabilities.completions is not None

        contexts = (await client.complete(PROMPT, {"name": "context", "value": "Tal"})).completion
        assert contexts.values == ["talos-sim"]

        # Hostnames the nodes report, matched without regard to case.
        nodes = (await client.complete(PROMPT, {"name": "node", "value": "TALOS-CP"})).completion
        assert nodes.values == ["talos-cp-1", "talos-cp-2", "talos-cp-3"]
        assert nodes.total == 3 and nodes.has_more is False
        addresses = (await client.complete(SERVICES, {"name": "node", "value": "127.0.10.1"}, {"context": "talos-sim"})).completion
        assert CP1 in addresses.values and W1 in addresses.values

        # Services of the node already chosen, asked of that node.
        services = (await client.complete(PROMPT, {"name": "service", "value": "et"}, {"node": "talos-cp-1"})).completion
        assert services.values == ["etcd"]

        # COSI resource types for the resources template (never a secret one).
        types = (await client.complete(RESOURCES, {"name": "resource_type", "value": "mem"})).completion
        assert types.values == ["Members.cluster.talos.dev", "MemoryModules.hardware.talos.dev"]
        assert (await client.complete(RESOURCES, {"name": "resource_type", "value": "osroot"})).completion.values == []

        # What the server does not know completes to nothing, and is not an error.
        for ref, argument, context in [
            (mcp_types.PromptReference(name="no_such_prompt"), {"name": "node", "value": ""}, None),
            (PROMPT, {"name": "change", "value": ""}, None),
            (PROMPT, {"name": "node", "value": "x" * 5000}, None),
            (PROMPT, {"name": "service", "value": ""}, {"node": "192.0.2.1"}),
        ]:
            assert (await client.complete(ref, argument, context)).completion.values == []


@pytest.fixture(scope="module")
def unconfirmed_server():
    """Writes without confirmation: each change logs a warning (on a cluster of its own)."""
    with harness.sim(harness.workdir("logging-sim")) as sim:
        d = Deployment(sim, ServerConfig(["--allow-write", "--confirm-writes", "--confirm", "none"]), "logging")
        yield d
        d.close()


class Messages:
    def __init__(self) -> None:
        self.received: list[mcp_types.LoggingMessageNotificationParams] = []
        self.arrived = anyio.Event()

    async def __call__(self, params) -> None:
        self.received.append(params)
        self.arrived.set()


async def test_logging_after_set_level(unconfirmed_server, transport, era):
    messages = Messages()
    restart = {"node": W1, "service": "kubelet"}
    kwargs = {"logging_callback": messages}
    if era == "modern":
        kwargs["log_level"] = "debug"
    async with unconfirmed_server.connect(transport, era, **kwargs) as conn:
        client = conn.client
        assert client.server_capabilities.logging is not None
        # Before the client asks, nothing is sent.
        first = await client.call_tool("talos_service_restart", restart)
        assert not first.is_error, text_of(first)
        if era == "modern":
            # 2026-07-28 has no logging/setLevel; server-wide warnings are not request logs.
            with pytest.raises(MCPError):
                await client.set_logging_level("warning")
            await client.call_tool("talos_service_restart", restart)
            await client.list_tools()
            assert messages.received == []
            return
        await client.set_logging_level("warning")
        second = await client.call_tool("talos_service_restart", restart)
        assert not second.is_error, text_of(second)
        with anyio.fail_after(15):
            await messages.arrived.wait()
    [message] = messages.received
    assert message.level == "warning" and message.logger == "talos-mcp"
    assert message.data == {
        "message": "running without confirmation (--confirm=none)",
        "tool": "talos_service_restart",
    }, "the message and the tool name only: never the node or other arguments"
    harness.assert_no_secrets(str(message.data))
