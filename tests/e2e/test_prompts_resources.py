"""Prompts and resources through the official SDK."""

from __future__ import annotations

import json

import pytest
from mcp.shared.exceptions import MCPError

from harness import ALL_NODES, CP1, W2, assert_no_secrets

pytestmark = pytest.mark.anyio

PROMPTS = {
    "apply_config_safely": {"node", "change"},
    "cluster_health_review": set(),
    "diagnose_node": {"node"},
    "etcd_troubleshooting": set(),
    "fleet_review": set(),
    "plan_upgrade": {"talos_version"},
}


async def test_prompts_list_and_get(readonly, transport, era):
    async with readonly.connect(transport, era) as conn:
        client = conn.client
        prompts = {p.name: p for p in (await client.list_prompts()).prompts}
        assert set(prompts) == set(PROMPTS)
        for name, required in PROMPTS.items():
            prompt = prompts[name]
            assert prompt.description, name
            assert {a.name for a in prompt.arguments or [] if a.required} == required, name

        diagnose = await client.get_prompt("diagnose_node", {"node": "talos-worker-2"})
        text = "\n".join(m.content.text for m in diagnose.messages)
        assert diagnose.messages[0].role == "user"
        assert "talos-worker-2" in text
        for tool in ("talos_services", "talos_service_logs", "talos_dmesg"):
            assert tool in text, f"the diagnosis walks through {tool}"

        upgrade = await client.get_prompt("plan_upgrade", {"talos_version": "v1.12.0"})
        upgrade_text = "\n".join(m.content.text for m in upgrade.messages)
        assert "v1.12.0" in upgrade_text and "talos_etcd_status" in upgrade_text

        # A required argument left out is a protocol error naming it.
        with pytest.raises(MCPError) as missing:
            await client.get_prompt("diagnose_node", {})
        assert "node" in missing.value.error.message


async def test_resources_list_read_and_templates(readonly, transport, era):
    async with readonly.connect(transport, era) as conn:
        client = conn.client
        listed = {r.uri: r for r in (await client.list_resources()).resources}
        assert "talos://contexts" in listed
        for node in ALL_NODES:
            assert f"talos://talos-sim/nodes/{node}/version" in listed

        contexts = await client.read_resource("talos://contexts")
        body = json.loads(contexts.contents[0].text)
        assert contexts.contents[0].mime_type == "application/json"
        ctx = {c["name"]: c for c in body["contexts"]}["talos-sim"]
        assert sorted(ctx["nodes"]) == sorted(ALL_NODES)
        assert_no_secrets(contexts.contents[0].text)
        assert "crt" not in ctx and "key" not in ctx, "no credentials in the contexts resource"

        templates = {t.uri_template: t for t in (await client.list_resource_templates()).resource_templates}
        assert set(templates) == {
            "talos://{context}/nodes/{node}/version",
            "talos://{context}/nodes/{node}/services",
            "talos://{context}/nodes/{node}/machineconfig",
            "talos://{context}/nodes/{node}/resources/{resource_type}",
        }

        version = json.loads((await client.read_resource(f"talos://talos-sim/nodes/{W2}/version")).contents[0].text)
        assert version["node"] == W2 and version["tag"] == "v1.11.5"

        # A template filled in with a hostname instead of an address: the name is pinned to the
        # address of the member that reported it, and the call goes there.
        services = json.loads((await client.read_resource("talos://talos-sim/nodes/talos-cp-1/services")).contents[0].text)
        assert services["node"] == CP1
        assert {s["id"] for s in services["services"]} >= {"etcd", "kubelet", "apid"}

        config = (await client.read_resource(f"talos://talos-sim/nodes/{CP1}/machineconfig")).contents[0]
        assert config.mime_type == "application/yaml"
        assert "machine:" in config.text and "token: '[redacted]'" in config.text
        assert_no_secrets(config.text)

        # COSI resources of a type, read like talos_get: specs redacted, secret types refused.
        members = json.loads((await client.read_resource(f"talos://talos-sim/nodes/{CP1}/resources/members")).contents[0].text)
        assert members["node"] == CP1 and members["resources"]
        assert {r["resource_type"] for r in members["resources"]} == {"Members.cluster.talos.dev"}
        with pytest.raises(MCPError) as secret:
            await client.read_resource(f"talos://talos-sim/nodes/{CP1}/resources/machineconfig")
        assert secret.value.error.message.startswith("Refused")
        assert_no_secrets(secret.value.error.message)

        # A node outside the context is refused before any call goes out.
        with pytest.raises(MCPError) as outside:
            await client.read_resource("talos://talos-sim/nodes/10.99.0.1/version")
        assert "NodeNotAllowed" in outside.value.error.message
