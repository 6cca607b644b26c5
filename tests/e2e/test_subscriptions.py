"""Resource subscriptions through the official SDK (handshake era): subscribe to a node's machine
status, reboot the node, receive notifications/resources/updated for that URI; secret types are
refused like reads."""

from __future__ import annotations

import anyio
import mcp_types
import pytest
from mcp.shared.exceptions import MCPError

import harness
from harness import W2, Deployment, ServerConfig, text_of

pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore:resources/(un)?subscribe is removed")]


@pytest.fixture(scope="module")
def subs_sim():
    """A cluster of its own: a node is rebooted."""
    with harness.sim(harness.workdir("subs-sim"), reboot_downtime_ms=1000) as sim:
        yield sim


@pytest.fixture(scope="module")
def subs_server(subs_sim):
    flags = ["--allow-write", "--allow-destructive", "--confirm", "token"]
    d = Deployment(subs_sim, ServerConfig(flags), "subs")
    yield d
    d.close()


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_a_reboot_notifies_the_subscriber(subs_server, transport):
    updates: list[str] = []
    arrived = anyio.Event()

    async def on_message(message) -> None:
        if isinstance(message, mcp_types.ResourceUpdatedNotification):
            updates.append(message.params.uri)
            arrived.set()

    async with subs_server.connect(transport, "legacy", message_handler=on_message) as conn:
        client = conn.client
        assert client.server_capabilities.resources.subscribe is True
        uri = f"talos://talos-sim/nodes/{W2}/resources/machinestatus"
        await client.subscribe_resource(uri)
        assert updates == [], "subscribing alone notifies nothing"

        plan = await client.call_tool("talos_reboot", {"node": W2, "wait": False})
        token = plan.structured_content["confirmation_token"]
        done = await client.call_tool("talos_reboot", {"node": W2, "wait": False, "confirmation_token": token})
        assert not done.is_error, text_of(done)
        with anyio.fail_after(30):  # a hang guard, not a timing assertion
            await arrived.wait()
        assert set(updates) == {uri}

        # The node comes back: the resource reads as running again (reads fail while it is down).
        with anyio.fail_after(30):
            while True:
                try:
                    read = await client.read_resource(uri)
                except MCPError:
                    read = None
                if read is not None and '"stage":"running"' in read.contents[0].text.replace(" ", ""):
                    break
                await anyio.sleep(0.2)
        await client.unsubscribe_resource(uri)

        secret = f"talos://talos-sim/nodes/{W2}/resources/osrootsecret"
        with pytest.raises(MCPError) as refused:
            await client.subscribe_resource(secret)
        assert "secrets" in str(refused.value)
