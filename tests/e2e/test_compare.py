"""talos_compare through the official SDK across two simulated clusters: `talos-sim` and `prod`
(another Talos version on one node, another CNI, secrets of its own), one talosconfig holding
both contexts. The comparison shows the version and config differences and no secret value."""

from __future__ import annotations

import json

import pytest

import harness
from harness import CP1, Deployment, ServerConfig, assert_no_secrets, text_of

pytestmark = pytest.mark.anyio

PATCH = "cluster:\n  network:\n    cni:\n      name: none\n"


@pytest.fixture(scope="module")
def fleet():
    base = harness.workdir("fleet")
    patch = base / "patch.yaml"
    patch.write_text(PATCH)
    with (
        harness.sim(base / "dev", extra=["--nodes", "1", "--workers", "1"]) as dev,
        harness.sim(
            base / "prod",
            name="prod",
            extra=["--nodes", "1", "--workers", "1", "--node-version", "talos-worker-1=v1.10.7",
                   "--machine-config-patch", str(patch)],
        ) as prod,
    ):
        talosconfig = harness.merge_talosconfigs([dev.talosconfig, prod.talosconfig], base / "talosconfig")
        deployment = Deployment(dev, ServerConfig(talosconfig=talosconfig), "fleet")
        yield deployment
        deployment.close()


def nodes_of(sc: dict, context: str) -> dict[str, dict]:
    [ctx] = [c for c in sc["contexts"] if c["context"] == context]
    assert ctx["etcd"].startswith("healthy"), ctx
    return {n["hostname"]: n for n in ctx["nodes"]}


def keys_of(node: dict) -> list[str]:
    return [k for section in node["drift"] for k in section["keys"]]


async def test_two_clusters_differ_in_versions_and_config_without_secrets(fleet, transport):
    async with fleet.connect(transport) as conn:
        result = await conn.client.call_tool("talos_compare", {})
        text = text_of(result)
        assert not result.is_error, text
        sc = result.structured_content
        assert text.startswith("talos_compare: 2 contexts, 4/4 nodes reachable"), text
        assert sc["reference"] == f"talos-sim/{CP1}"

        dev = nodes_of(sc, "talos-sim")
        assert dev["talos-cp-1"]["drift"] == []
        prod = nodes_of(sc, "prod")
        assert prod["talos-worker-1"]["talos_version"] == "v1.10.7"
        assert prod["talos-cp-1"]["talos_version"] == "v1.11.5"
        keys = keys_of(prod["talos-cp-1"])
        for expected in (
            'cluster.clusterName: "talos-sim" → "prod"',
            "cluster.network.cni.name: not on the reference",
            "machine.token: differs (secret)",
            "cluster.secret: differs (secret)",
        ):
            assert expected in keys, (expected, keys)

        # A reference in the other cluster, and a context asked twice.
        result = await conn.client.call_tool(
            "talos_compare",
            {"contexts": ["prod", "talos-sim", "prod"], "context": "prod", "node": "talos-cp-1"},
        )
        assert not result.is_error, text_of(result)
        sc2 = result.structured_content
        assert [c["context"] for c in sc2["contexts"]] == ["prod", "talos-sim"]
        assert sc2["reference"] == f"prod/{CP1}"
        assert nodes_of(sc2, "prod")["talos-cp-1"]["drift"] == []

        # An unknown context is a tool error that names the ones there are.
        result = await conn.client.call_tool("talos_compare", {"contexts": ["staging"]})
        assert result.is_error
        assert "staging" in text_of(result) and "prod" in text_of(result)

        assert_no_secrets(text, json.dumps(sc), json.dumps(sc2), conn.stderr(), json.dumps(conn.audit()))


async def test_the_fleet_review_prompt_names_the_comparison(fleet):
    async with fleet.connect("stdio") as conn:
        prompt = await conn.client.get_prompt(
            "fleet_review", {"contexts": "prod, talos-sim", "reference": "prod/talos-cp-1"}
        )
        text = prompt.messages[0].content.text
        assert 'talos_compare with contexts=["prod", "talos-sim"], context="prod", node="talos-cp-1"' in text
