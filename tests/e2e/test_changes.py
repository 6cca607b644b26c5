"""Write and destructive tools through the official SDK: the token confirmation flow, the human's
answer through elicitation (accept and decline; as a server request on the handshake era and as
an input_required round trip on 2026-07-28), and progress notifications while a reboot is
followed."""

from __future__ import annotations

import mcp_types
import pytest

import harness
from harness import W1, W2, Deployment, ServerConfig, text_of

pytestmark = pytest.mark.anyio

CHANGES = ["--allow-write", "--allow-destructive", "--confirm-writes"]


@pytest.fixture(scope="module")
def changes_sim():
    """A cluster of its own: these tests restart services and reboot a node."""
    with harness.sim(harness.workdir("changes-sim"), reboot_downtime_ms=1000) as sim:
        yield sim


@pytest.fixture(scope="module")
def token_server(changes_sim):
    d = Deployment(changes_sim, ServerConfig([*CHANGES, "--confirm", "token"]), "token")
    yield d
    d.close()


@pytest.fixture(scope="module")
def elicit_server(changes_sim):
    d = Deployment(changes_sim, ServerConfig([*CHANGES, "--confirm", "elicit"]), "elicit")
    yield d
    d.close()


async def restarts(client, node: str, service: str) -> int:
    """How often the service was restarted, from its recent events (a read tool)."""
    result = await client.call_tool("talos_services", {"nodes": [node], "service": service, "events": 20})
    [svc] = result.structured_content["nodes"][0]["result"]
    return sum("Service restarted" in e for e in svc["recent_events"])


async def test_token_confirmation_plans_then_runs_once(token_server, transport, era):
    async with token_server.connect(transport, era) as conn:
        client = conn.client
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"talos_service_restart", "talos_reboot", "talos_apply_config"} <= names, "the enabled tiers are listed"
        args = {"node": W1, "service": "kubelet"}
        before = await restarts(client, W1, "kubelet")

        plan = await client.call_tool("talos_service_restart", args)
        assert not plan.is_error, text_of(plan)
        sc = plan.structured_content
        assert sc["status"] == "confirmation_required" and sc["confirmation"] == "token: issued"
        assert sc["plan"]["tool"] == "talos_service_restart" and sc["plan"]["hostname"] == "talos-worker-1"
        assert "nothing was done yet" in text_of(plan) and "confirmation_token=" in text_of(plan)
        token = sc["confirmation_token"]
        assert await restarts(client, W1, "kubelet") == before, "the plan changes nothing"

        # The token is bound to the call: other arguments are refused.
        other = await client.call_tool("talos_service_restart", {**args, "service": "apid", "confirmation_token": token})
        assert other.is_error and text_of(other).startswith("NotConfirmed:")
        assert "does not match this call" in text_of(other)

        done = await client.call_tool("talos_service_restart", {**args, "confirmation_token": token})
        assert not done.is_error, text_of(done)
        assert done.structured_content["status"] == "done"
        assert done.structured_content["confirmation"] == "token: redeemed"
        assert await restarts(client, W1, "kubelet") == before + 1

        replay = await client.call_tool("talos_service_restart", {**args, "confirmation_token": token})
        assert replay.is_error and "already used" in text_of(replay)
        assert await restarts(client, W1, "kubelet") == before + 1

    finished = conn.finished("talos_service_restart")
    assert [line["confirmation"] for line in finished[-4:]] == [
        "token: issued",
        "token: refused",
        "token: redeemed",
        "token: refused",
    ]
    if transport == "http":
        assert all(line["caller"] == "anonymous" for line in finished)
    assert token not in conn.audit_path.read_text(), "tokens are redacted in the audit log"


class Human:
    """The person behind the client: answers the confirmation form and remembers what was asked."""

    def __init__(self, action: str) -> None:
        self.action = action
        self.asked: list[mcp_types.ElicitRequestParams] = []

    async def __call__(self, context, params):
        self.asked.append(params)
        if self.action == "accept":
            return mcp_types.ElicitResult(action="accept", content={"confirm": True})
        return mcp_types.ElicitResult(action=self.action)


@pytest.mark.parametrize("answer", ["accept", "decline"])
async def test_elicitation_asks_the_human(elicit_server, transport, era, answer):
    human = Human(answer)
    async with elicit_server.connect(transport, era, elicitation_callback=human) as conn:
        client = conn.client
        before = await restarts(client, W2, "kubelet")
        result = await client.call_tool("talos_service_restart", {"node": W2, "service": "kubelet"})
        assert len(human.asked) == 1, "one question per call"
        asked = human.asked[0]
        for part in ("talos_service_restart", "talos-worker-2", W2, "talos-sim"):
            assert part in asked.message, asked.message
        assert asked.requested_schema["properties"]["confirm"]["type"] == "boolean"
        if answer == "accept":
            assert not result.is_error, text_of(result)
            assert result.structured_content["status"] == "done"
            assert result.structured_content["confirmation"] == "elicitation: accepted"
            assert await restarts(client, W2, "kubelet") == before + 1
        else:
            assert result.is_error and text_of(result).startswith("NotConfirmed: the human declined")
            assert result.meta["talos-mcp/error"]["confirmation"] == "elicitation: declined"
            assert await restarts(client, W2, "kubelet") == before
    finished = conn.finished("talos_service_restart")
    if era == "modern":
        # The round trip is two requests: the form, then the retry with the answer.
        assert finished[-2]["result"] == "confirmation_required"
    assert finished[-1]["confirmation"] == ("elicitation: accepted" if answer == "accept" else "elicitation: declined")


async def test_reboot_wait_reports_progress(elicit_server, transport, era):
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(value, total, message):
        progress.append((value, total, message))

    async with elicit_server.connect(transport, era, elicitation_callback=Human("accept")) as conn:
        boot = await conn.client.call_tool("talos_read_file", {"nodes": [W1], "path": "/proc/sys/kernel/random/boot_id"})
        assert not boot.is_error, text_of(boot)
        result = await conn.client.call_tool(
            "talos_reboot",
            {"node": W1, "wait": True, "wait_timeout_seconds": 60},
            progress_callback=on_progress,
        )
        assert not result.is_error, text_of(result)
        outcome = result.structured_content["outcome"]
        assert outcome["waited"] and outcome["back"], outcome
        assert outcome["boot_id_before"] != outcome["boot_id_after"]
        assert "rebooted and back" in text_of(result)
    values = [p[0] for p in progress]
    assert len(progress) >= 3, progress
    assert values == sorted(values), "progress only goes forward"
    assert all(p[2] for p in progress), "every step says what happened"
    messages = " | ".join(p[2] or "" for p in progress)
    assert "waiting for the node to go down" in messages and "back with a new boot id" in messages
