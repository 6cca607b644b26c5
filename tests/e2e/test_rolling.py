"""Rolling cluster upgrades through the official SDK (a plain synchronous tools/call with the token
confirmation): 3 control planes and 2 workers upgraded in order; with an upgrade fault on the
second node the run stops there, says so, and leaves the later nodes untouched."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import harness
from harness import ALL_NODES, CP1, CP2, CP3, W1, W2, Deployment, ServerConfig, text_of

pytestmark = pytest.mark.anyio

OLD, NEW = "v1.11.5", "v1.12.0"
IMAGE = f"ghcr.io/siderolabs/installer:{NEW}"
FLAGS = ["--allow-destructive", "--confirm", "token"]


@contextlib.contextmanager
def faulty_sim(workdir: Path, faults: list[str]) -> Iterator[harness.Sim]:
    """A simulator of its own (these tests upgrade it) with `--fault NODE=KIND` for each fault."""
    workdir.mkdir(parents=True, exist_ok=True)
    talosconfig = workdir / "talosconfig"
    args = [harness.binary("talos-sim"), "--talosconfig", str(talosconfig), "--reboot-downtime-ms", "300"]
    for fault in faults:
        args += ["--fault", fault]
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = harness.StderrLog(process.stderr, workdir / "talos-sim.stderr")
    try:
        endpoint = log.wait_for(r"serving; press Ctrl-C to stop.*endpoint=(\S+)").group(1)
        yield harness.Sim(process, workdir, talosconfig, endpoint, log)
    finally:
        harness._stop(process)


async def versions(client) -> dict[str, str]:
    result = await client.call_tool("talos_version", {})
    return {n["node"]: n["result"]["tag"] for n in result.structured_content["nodes"]}


async def plan_and_run(client, args: dict):
    """The plan (nothing done), then the same call with its token."""
    plan = await client.call_tool("talos_cluster_upgrade", args)
    assert not plan.is_error, text_of(plan)
    sc = plan.structured_content
    assert sc["status"] == "confirmation_required", text_of(plan)
    assert sc["plan"]["steps"]["digest"] in text_of(plan), "the digest is shown with the plan"
    return sc, await client.call_tool("talos_cluster_upgrade", {**args, "confirmation_token": sc["confirmation_token"]})


async def test_a_rolling_upgrade_of_three_control_planes_and_two_workers_completes():
    with faulty_sim(harness.workdir("rolling-sim"), []) as sim:
        deployment = Deployment(sim, ServerConfig(FLAGS), "rolling")
        try:
            async with deployment.connect("http") as conn:
                client = conn.client
                assert set((await versions(client)).values()) == {OLD}
                plan, done = await plan_and_run(client, {"image": IMAGE})
                lines = plan["plan"]["steps"]["lines"]
                hosts = [harness.HOSTNAMES[n] for n in ALL_NODES]
                assert [h in line for h, line in zip(hosts, lines)] == [True] * 5, lines
                assert [line.split(":")[0] for line in lines] == [f"step {i}" for i in range(1, 6)]

                assert not done.is_error, text_of(done)
                out = done.structured_content
                assert out["status"] == "done" and out["outcome"]["result"] == "completed", text_of(done)
                assert [u["node"] for u in out["outcome"]["upgraded"]] == ALL_NODES
                assert out["outcome"]["untouched"] == []
                assert await versions(client) == {n: NEW for n in ALL_NODES}

                # The same call again: every node skipped, nothing to do or confirm.
                again = await client.call_tool("talos_cluster_upgrade", {"image": IMAGE})
                assert not again.is_error, text_of(again)
                assert again.structured_content["status"] == "done", text_of(again)
                assert again.structured_content["outcome"]["skipped"] == ALL_NODES
                assert "nothing to do" in text_of(again)
            started = [l for l in conn.audit() if l["tool"] == "talos_cluster_upgrade" and l["phase"] == "started"]
            assert started, "a started line before anything changed"
        finally:
            deployment.close()


async def test_a_failure_on_the_second_node_stops_the_run_there():
    with faulty_sim(harness.workdir("rolling-fault-sim"), [f"{CP2}=unhealthy"]) as sim:
        deployment = Deployment(sim, ServerConfig(FLAGS), "rolling-fault")
        try:
            async with deployment.connect("http") as conn:
                client = conn.client
                _, stopped = await plan_and_run(client, {"image": IMAGE, "health_timeout_seconds": 10})
                out = stopped.structured_content
                text = text_of(stopped)
                assert out["status"] == "stopped", text
                assert out["outcome"]["stopped"]["nodes"] == [CP2], text
                assert out["outcome"]["stopped"]["step"] == 2
                assert out["outcome"]["untouched"] == [CP3, W1, W2]
                assert "STOPPED at step 2" in text and CP2 in text and "untouched" in text
                now = await versions(client)
                assert now[CP1] == NEW
                assert [now[n] for n in (CP3, W1, W2)] == [OLD] * 3, now
            finished = conn.finished("talos_cluster_upgrade")
            assert finished[-1]["result"] == "partial", finished[-1]
        finally:
            deployment.close()
