"""Backup and disaster recovery through the official SDK: snapshot → verify → a simulated quorum
loss (SIGUSR1 to the simulator) → recovery on one control plane → etcd healthy again at the
snapshot's revision; a corrupted snapshot is refused before any upload, and recovery on a healthy
cluster is refused."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

import harness
from harness import CP1, Deployment, ServerConfig, text_of

pytestmark = pytest.mark.anyio

FLAGS = ["--allow-destructive", "--confirm", "token", "--snapshot-retention", "3"]


async def confirmed(client, tool: str, args: dict):
    """The plan (nothing done), then the same call with its token: (plan text, outcome)."""
    plan = await client.call_tool(tool, args)
    assert not plan.is_error, text_of(plan)
    assert plan.structured_content["status"] == "confirmation_required", text_of(plan)
    done = await client.call_tool(tool, {**args, "confirmation_token": plan.structured_content["confirmation_token"]})
    assert not done.is_error, text_of(done)
    assert done.structured_content["status"] == "done", text_of(done)
    return text_of(plan), done.structured_content["outcome"]


async def test_snapshot_quorum_loss_and_recovery():
    workdir = harness.workdir("recovery-sim")
    with harness.sim(workdir) as sim:
        deployment = Deployment(sim, ServerConfig(FLAGS), "recovery")
        try:
            async with deployment.connect("http") as conn:
                client = conn.client
                _, snap = await confirmed(client, "talos_etcd_snapshot", {"node": CP1})
                revision = snap["revision"]
                assert isinstance(revision, int) and revision > 0, snap
                path = Path(snap["path"])
                assert path.stat().st_mode & 0o777 == 0o600
                assert path.parent.stat().st_mode & 0o777 == 0o700

                verified = await client.call_tool("talos_etcd_snapshot_verify", {"path": path.name})
                assert not verified.is_error, text_of(verified)
                assert verified.structured_content["artifacts"][0]["revision"] == revision
                listing = await client.call_tool("talos_etcd_snapshot_verify", {})
                names = [a["name"] for a in listing.structured_content["artifacts"]]
                assert path.name in names, names

                healthy = await client.call_tool("talos_etcd_recover", {"node": CP1, "path": path.name})
                assert healthy.is_error and "etcd is running" in text_of(healthy), text_of(healthy)

                # Disaster: every control plane's etcd stops.
                sim.process.send_signal(signal.SIGUSR1)
                sim.log.wait_for(r"etcd quorum lost")
                status = await client.call_tool("talos_etcd_status", {})
                assert status.is_error or status.structured_content["verdict"] == "quorum_lost", text_of(status)

                broken = path.parent / "broken.snapshot"
                data = bytearray(path.read_bytes())
                data[len(data) // 2] ^= 0x01
                broken.write_bytes(bytes(data))
                refused = await client.call_tool("talos_etcd_recover", {"node": CP1, "path": broken.name})
                assert refused.is_error and "failed verification" in text_of(refused), text_of(refused)

                plan, out = await confirmed(client, "talos_etcd_recover", {"node": CP1, "path": path.name})
                assert f"revision {revision}" in plan and snap["sha256"] in plan, plan
                assert len(out["members"]) == 3, out

                status = await client.call_tool("talos_etcd_status", {})
                assert not status.is_error and status.structured_content["verdict"] == "healthy", text_of(status)
                _, again = await confirmed(client, "talos_etcd_snapshot", {"node": CP1})
                assert again["revision"] == revision, again
            recovers = [l for l in conn.audit() if l["tool"] == "talos_etcd_recover"]
            assert any(l["phase"] == "started" for l in recovers), recovers
        finally:
            deployment.close()
