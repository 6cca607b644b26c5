"""tools/list as an independent client sees it, and every read tool called through it.

The SDK validates each result's structured content against the tool's output schema (and raises
if it does not match), so every call here also checks the schema the server declares."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from harness import ALL_NODES, CP1, HOSTNAMES, W1, assert_no_secrets, binary, text_of

pytestmark = pytest.mark.anyio

def registered_tools() -> list[dict]:
    """Every tool the server's registry declares, as `talos-mcp tools --json` prints it."""
    out = subprocess.run([binary("talos-mcp"), "tools", "--json"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


# The read tier, from the registry: a new read tool fails `test_every_read_tool` until it has a case.
READ_TOOLS = {t["name"] for t in registered_tools() if t["tier"] == "read"}
# talos_operations is listed only beside a long-running tool (none is in the read tier); the
# tasks tests (test_tasks.py) call it.
LISTED_READ_TOOLS = READ_TOOLS - {"talos_operations"}


def dump(model) -> dict:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


async def test_tools_list_matches_the_committed_snapshot(readonly, snapshot, transport, era):
    """What a client receives is exactly what crates/talos-mcp/tests/snapshots/tools.json (and
    docs/tools.md) promise: the read tier only, same descriptions, schemas and annotations."""
    async with readonly.connect(transport, era) as conn:
        tools = (await conn.client.list_tools()).tools
    assert {t.name for t in tools} == LISTED_READ_TOOLS
    for tool in tools:
        expected = snapshot[tool.name]
        assert tool.description == expected["description"], tool.name
        assert tool.input_schema == expected["inputSchema"], tool.name
        assert tool.output_schema == expected["outputSchema"], tool.name
        assert dump(tool.annotations) == expected["annotations"], tool.name
        # Read-only, and no change hints: they mean nothing for a tool that changes nothing.
        assert tool.annotations.read_only_hint is True and tool.annotations.destructive_hint is None


def per_node(sc: dict, nodes=ALL_NODES) -> dict[str, dict]:
    """The per-node results of a fan-out tool, checking every node answered."""
    assert sc["context"] == "talos-sim"
    assert sc["failed_nodes"] == [], sc["failed_nodes"]
    got = {n["node"]: n for n in sc["nodes"]}
    assert sorted(got) == sorted(nodes)
    for node, n in got.items():
        assert n["ok"] is True and n["hostname"] == HOSTNAMES[node], n
    return {node: n["result"] for node, n in got.items()}


def check_version(text, sc):
    for r in per_node(sc).values():
        assert r["tag"] == "v1.11.5" and r["os_arch"] == "linux/amd64"
    assert "Talos v1.11.5" in text


def check_hostname(text, sc):
    for node, r in per_node(sc).items():
        assert r["hostname"] == HOSTNAMES[node]


def check_cpu(text, sc):
    for r in per_node(sc).values():
        assert r["count"] >= 1 and r["model"] and r["mhz"] > 0


def check_memory(text, sc):
    for r in per_node(sc).values():
        assert 0 < r["used"] < r["total"] and 0 <= r["used_percent"] <= 100


def check_system_stats(text, sc):
    for r in per_node(sc).values():
        assert r["uptime_seconds"] > 0 and r["cpus"] >= 1 and len(r["load"]) == 3


def check_disks(text, sc):
    for r in per_node(sc).values():
        assert any(d["system_disk"] for d in r) and all(d["size_bytes"] > 0 for d in r)


def check_disk_usage(text, sc):
    for r in per_node(sc).values():
        assert {e["path"] for e in r} >= {"/var", "/var/log"}


def check_mounts(text, sc):
    for r in per_node(sc).values():
        assert any(m["mounted_on"] == "/var" for m in r)


def check_network(text, sc):
    for node, r in per_node(sc).items():
        assert any(i["name"] == "lo" for i in r["interfaces"])
        assert any(a.get("address", "").startswith(node + "/") for a in r["addresses"]), r["addresses"]
        assert r["routes"]


def check_processes(text, sc):
    for r in per_node(sc).values():
        procs = r["processes"]
        assert procs and all(p["pid"] > 0 and p["command"] for p in procs)


def check_time(text, sc):
    for r in per_node(sc).values():
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r["local_time"])


def check_list_containers(text, sc):
    results = per_node(sc)
    assert {c["id"] for c in results[CP1]["containers"]} >= {"etcd", "kubelet", "apid"}
    assert "etcd" not in {c["id"] for c in results[W1]["containers"]}, "workers run no etcd"


def check_container_stats(text, sc):
    for r in per_node(sc).values():
        assert r and all(c["memory_bytes"] > 0 for c in r)


def check_services(text, sc):
    results = per_node(sc)
    cp = {s["id"]: s for s in results[CP1]}
    assert cp["etcd"]["state"] == "Running" and cp["etcd"]["health"] == "healthy"
    assert "etcd" not in {s["id"] for s in results[W1]}


def check_images(text, sc):
    for r in per_node(sc).values():
        assert any("kubelet" in i["name"] for i in r) and all(i["digest"].startswith("sha256:") for i in r)


def check_service_logs(text, sc):
    results = per_node(sc, [CP1])
    lines = results[CP1]["lines"]
    assert len(lines) == 3 and all("etcd[talos-cp-1]" in line for line in lines)


def check_dmesg(text, sc):
    lines = per_node(sc, [CP1])[CP1]["lines"]
    assert len(lines) == 5 and all(line.startswith("talos-cp-1: kern:") for line in lines)


def check_events(text, sc):
    for r in per_node(sc).values():
        assert r and any(e["kind"] == "machine.MachineStatusEvent" for e in r)


def check_etcd_members(text, sc):
    assert sorted(m["hostname"] for m in sc["members"]) == ["talos-cp-1", "talos-cp-2", "talos-cp-3"]


def check_etcd_status(text, sc):
    assert text.startswith("talos_etcd_status: healthy")
    assert sc["answered"] == 3 and len(sc["members"]) == 3


def check_health(text, sc):
    assert text.startswith("talos_health: healthy")
    assert sc["checks"] and all(c["ok"] for c in sc["checks"])


def check_get(text, sc):
    for r in per_node(sc).values():
        assert sorted(m["id"] for m in r) == sorted(HOSTNAMES.values())
        assert all(m["resource_type"] == "Members.cluster.talos.dev" for m in r)


def check_list_files(text, sc):
    for r in per_node(sc, [CP1]).values():
        assert {e["path"] for e in r} >= {"/var/log", "/var/log/audit"}


def check_read_file(text, sc):
    content = per_node(sc, [CP1])[CP1]
    assert "MemTotal:" in json.dumps(content)


def check_kubeconfig(text, sc):
    # Written to a private file; the content (cluster-admin credentials) is never returned.
    assert sc["context"] == "talos-sim" and sc["path"].endswith(".yaml") and sc["size_bytes"] > 0
    assert "client-key-data" not in text and "its content is not shown" in text


def check_compare(text, sc):
    # One cluster: every node against the first control plane.
    assert sc["reference"] == f"talos-sim/{CP1}"
    [ctx] = sc["contexts"]
    assert ctx["context"] == "talos-sim" and ctx["etcd"].startswith("healthy")
    assert sorted(n["node"] for n in ctx["nodes"]) == sorted(ALL_NODES)
    for n in ctx["nodes"]:
        assert n["reachable"] is True and n["talos_version"] == "v1.11.5" and n["kubernetes_version"] == "v1.34.1", n
    by_node = {n["node"]: n for n in ctx["nodes"]}
    assert by_node[CP1]["drift"] == []
    keys = [k for s in by_node[W1]["drift"] for k in s["keys"]]
    assert 'machine.type: "controlplane" → "worker"' in keys, keys


def check_snapshot_verify(text, sc):
    # Without `path`: the artifact directory's listing (the kubeconfig case ran just before).
    assert "artifact(s) in" in text
    kinds = {a["kind"] for a in sc["artifacts"]}
    assert "kubeconfig" in kinds and all(len(a["sha256"]) == 64 for a in sc["artifacts"]), sc


CASES = {
    "talos_version": ({}, check_version),
    "talos_hostname": ({}, check_hostname),
    "talos_cpu": ({}, check_cpu),
    "talos_memory": ({}, check_memory),
    "talos_system_stats": ({}, check_system_stats),
    "talos_disks": ({}, check_disks),
    "talos_disk_usage": ({"paths": ["/var"], "depth": 1}, check_disk_usage),
    "talos_mounts": ({}, check_mounts),
    "talos_network": ({"include": ["interfaces", "addresses", "routes"]}, check_network),
    "talos_processes": ({"limit": 5}, check_processes),
    "talos_time": ({}, check_time),
    "talos_list_containers": ({"namespace": "system"}, check_list_containers),
    "talos_container_stats": ({}, check_container_stats),
    "talos_services": ({}, check_services),
    "talos_images": ({}, check_images),
    "talos_service_logs": ({"service": "etcd", "tail": 3, "nodes": [CP1]}, check_service_logs),
    "talos_dmesg": ({"tail": 5, "nodes": [CP1]}, check_dmesg),
    "talos_events": ({"tail": 20}, check_events),
    "talos_etcd_members": ({}, check_etcd_members),
    "talos_etcd_status": ({}, check_etcd_status),
    "talos_health": ({}, check_health),
    "talos_get": ({"resource_type": "members"}, check_get),
    "talos_list_files": ({"path": "/var/log", "nodes": [CP1]}, check_list_files),
    "talos_read_file": ({"path": "/proc/meminfo", "nodes": [CP1]}, check_read_file),
    "talos_kubeconfig": ({}, check_kubeconfig),
    "talos_compare": ({}, check_compare),
    "talos_etcd_snapshot_verify": ({}, check_snapshot_verify),
}


def test_every_read_tool_has_a_case():
    assert set(CASES) == LISTED_READ_TOOLS


async def test_every_read_tool(readonly, transport, era):
    async with readonly.connect(transport, era) as conn:
        for name, (args, check) in CASES.items():
            result = await conn.client.call_tool(name, args)
            text = text_of(result)
            assert not result.is_error, f"{name}: {text}"
            assert result.structured_content is not None, name
            check(text, result.structured_content)
            assert_no_secrets(text, json.dumps(result.structured_content))
        assert_no_secrets(conn.stderr(), json.dumps(conn.audit()))
