"""Long-running tools as MCP tasks (the io.modelcontextprotocol/tasks extension), over streamable
HTTP with raw JSON-RPC (the Python SDK has no client side for tasks): a reboot polled to
completion, a cancel before confirmation that changes nothing, and a client that drops its
session and reads the finished result from a new one."""

from __future__ import annotations

import json
import time

import httpx2 as httpx
import pytest

import harness
from harness import W1, W2, ServerConfig

TASKS = "io.modelcontextprotocol/tasks"
ALICE = "alice:0123456789abcdef0123456789"
BOB = "bob:fedcba9876543210fedcba9876"
ENDED = ("completed", "failed", "cancelled")


@pytest.fixture(scope="module")
def tasks_sim():
    """A cluster of its own: these tests reboot nodes."""
    with harness.sim(harness.workdir("tasks-sim"), reboot_downtime_ms=800) as sim:
        yield sim


def serve(sim, name: str, *flags: str):
    return harness.http_server(
        sim,
        ServerConfig(flags=["--allow-destructive", "--http-tokens", f"{ALICE},{BOB}", *flags]),
        harness.workdir(name),
    )


class Session:
    """One MCP session over HTTP, declaring the Tasks extension and form elicitation."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.http = httpx.Client(timeout=30)
        self.auth = {"Authorization": "Bearer " + token.split(":", 1)[1]}
        self.next = 0
        response = self.http.post(
            url,
            headers=self.headers(),
            json={
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {"extensions": {TASKS: {}}, "elicitation": {"form": {}}},
                    "clientInfo": {"name": "e2e-tasks", "version": "1"},
                },
            },
        )
        response.raise_for_status()
        assert TASKS in self.answer(response)["result"]["capabilities"]["extensions"]
        self.session = response.headers["mcp-session-id"]
        self.http.post(url, headers=self.headers(), json={"jsonrpc": "2.0", "method": "notifications/initialized"})

    def headers(self) -> dict[str, str]:
        h = {**self.auth, "Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        if getattr(self, "session", None):
            h["Mcp-Session-Id"] = self.session
            h["Mcp-Protocol-Version"] = "2025-11-25"
        return h

    @staticmethod
    def answer(response: httpx.Response) -> dict:
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        for line in response.text.splitlines():
            if line.startswith("data:"):
                message = json.loads(line[5:].strip() or "null")
                if isinstance(message, dict) and "id" in message and "method" not in message:
                    return message
        raise AssertionError(f"no answer in {response.text!r}")

    def rpc(self, method: str, params: dict) -> dict:
        self.next += 1
        response = self.http.post(
            self.url, headers=self.headers(), json={"jsonrpc": "2.0", "id": self.next, "method": method, "params": params}
        )
        assert response.status_code == 200, response.text
        return self.answer(response)

    def start(self, tool: str, arguments: dict) -> str:
        created = self.rpc("tools/call", {"name": tool, "arguments": arguments})["result"]
        assert created["resultType"] == "task", created
        assert created["status"] == "working", created
        return created["taskId"]

    def poll(self, task: str, until=ENDED, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            got = self.rpc("tasks/get", {"taskId": task})["result"]
            if got["status"] in until:
                return got
            assert time.monotonic() < deadline, got
            time.sleep(0.1)

    def boot_id(self, node: str) -> str:
        result = self.rpc(
            "tools/call",
            {"name": "talos_read_file", "arguments": {"nodes": [node], "path": "/proc/sys/kernel/random/boot_id"}},
        )["result"]
        return result["structuredContent"]["nodes"][0]["result"]["content"]

    def close(self) -> None:
        self.http.delete(self.url, headers=self.headers())
        self.http.close()


def test_a_reboot_runs_as_a_task_polled_to_completion(tasks_sim):
    with serve(tasks_sim, "tasks-confirm-token", "--confirm", "token") as server:
        alice = Session(server.url, ALICE)
        before = alice.boot_id(W1)
        args = {"node": W1, "wait": True, "wait_timeout_seconds": 30}
        planned = alice.poll(alice.start("talos_reboot", args))
        assert planned["status"] == "completed", planned
        token = planned["result"]["structuredContent"]["confirmation_token"]
        assert alice.boot_id(W1) == before, "a plan changes nothing"

        task = alice.start("talos_reboot", {**args, "confirmation_token": token})
        done = alice.poll(task)
        assert done["status"] == "completed", done
        assert done["result"]["isError"] is False, done
        assert done["result"]["structuredContent"]["outcome"]["back"] is True, done
        assert done["result"]["_meta"]["talos-mcp/operation"] == task
        assert alice.boot_id(W1) != before

        finished = [
            line
            for line in harness.audit_lines(server.audit_path)
            if line["phase"] == "finished" and line["tool"] == "talos_reboot"
        ]
        assert [line["result"] for line in finished] == ["confirmation_required", "ok"], finished
        alice.close()


def test_cancelling_a_task_before_confirmation_changes_nothing(tasks_sim):
    with serve(tasks_sim, "tasks-cancel") as server:
        alice = Session(server.url, ALICE)
        before = alice.boot_id(W2)
        task = alice.start("talos_reboot", {"node": W2})
        asking = alice.poll(task, until=("input_required", *ENDED))
        assert asking["status"] == "input_required", asking
        assert asking["inputRequests"]["confirm"]["method"] == "elicitation/create"
        assert "error" not in alice.rpc("tasks/cancel", {"taskId": task})
        ended = alice.poll(task)
        assert ended["status"] == "cancelled", ended
        time.sleep(1.5)  # longer than a reboot's downtime: a reboot would show a new boot id
        assert alice.boot_id(W2) == before, "nothing was done"
        finished = [
            line
            for line in harness.audit_lines(server.audit_path)
            if line["phase"] == "finished" and line["tool"] == "talos_reboot"
        ]
        assert [line["result"] for line in finished] == ["cancelled"], finished
        alice.close()


def test_a_client_that_drops_reads_the_finished_result_from_a_new_session(tasks_sim):
    with serve(tasks_sim, "tasks-reconnect", "--confirm", "none") as server:
        first = Session(server.url, ALICE)
        task = first.start("talos_reboot", {"node": W1, "wait": True, "wait_timeout_seconds": 30})
        first.close()

        again = Session(server.url, ALICE)
        assert again.session != first.session
        done = again.poll(task)
        assert done["status"] == "completed", done
        assert done["result"]["structuredContent"]["outcome"]["back"] is True, done
        listed = again.rpc("tools/call", {"name": "talos_operations", "arguments": {}})["result"]
        assert listed["structuredContent"]["operations"][0]["id"] == task, listed

        bob = Session(server.url, BOB)
        refused = bob.rpc("tasks/get", {"taskId": task})
        assert refused["error"]["code"] == -32602, refused
        again.close()
        bob.close()


# Upgrades as tasks: the same three paths, on a cluster of their own (every node starts on the
# simulator's default version, v1.11.5; v1.12.0 is the next minor release).
INSTALLER = "ghcr.io/siderolabs/installer:v1.12.0"


@pytest.fixture(scope="module")
def upgrade_sim():
    with harness.sim(harness.workdir("tasks-upgrade-sim"), reboot_downtime_ms=800) as sim:
        yield sim


def talos_version(session: Session, node: str) -> str:
    result = session.rpc("tools/call", {"name": "talos_version", "arguments": {"nodes": [node]}})["result"]
    return result["structuredContent"]["nodes"][0]["result"]["tag"]


def test_an_upgrade_runs_as_a_task_polled_to_completion(upgrade_sim):
    with serve(upgrade_sim, "tasks-upgrade", "--confirm", "token") as server:
        alice = Session(server.url, ALICE)
        assert talos_version(alice, W1) == "v1.11.5"
        args = {"node": W1, "image": INSTALLER, "wait_timeout_seconds": 60}
        planned = alice.poll(alice.start("talos_upgrade", args))
        assert planned["status"] == "completed", planned
        plan = planned["result"]["structuredContent"]
        assert "v1.11.5" in json.dumps(plan["plan"]) and "v1.12.0" in json.dumps(plan["plan"]), plan
        assert talos_version(alice, W1) == "v1.11.5", "a plan changes nothing"

        task = alice.start("talos_upgrade", {**args, "confirmation_token": plan["confirmation_token"]})
        done = alice.poll(task, timeout=90)
        assert done["status"] == "completed", done
        assert done["result"]["isError"] is False, done
        outcome = done["result"]["structuredContent"]["outcome"]
        assert outcome["on_target"] is True and outcome["to_version"] == "v1.12.0", outcome
        assert talos_version(alice, W1) == "v1.12.0"
        steps = alice.rpc("tools/call", {"name": "talos_operations", "arguments": {"id": task}})["result"]
        messages = " | ".join(s["message"] for s in steps["structuredContent"]["operations"][0]["steps"])
        assert "back with a new boot id" in messages and "v1.12.0" in messages, messages
        alice.close()


def test_cancelling_an_upgrade_before_confirmation_changes_nothing(upgrade_sim):
    with serve(upgrade_sim, "tasks-upgrade-cancel") as server:
        alice = Session(server.url, ALICE)
        task = alice.start("talos_upgrade", {"node": W2, "image": INSTALLER})
        asking = alice.poll(task, until=("input_required", *ENDED))
        assert asking["status"] == "input_required", asking
        assert "error" not in alice.rpc("tasks/cancel", {"taskId": task})
        assert alice.poll(task)["status"] == "cancelled"
        time.sleep(1.5)  # longer than a reboot's downtime
        assert talos_version(alice, W2) == "v1.11.5", "nothing was done"
        finished = [
            line
            for line in harness.audit_lines(server.audit_path)
            if line["phase"] == "finished" and line["tool"] == "talos_upgrade"
        ]
        assert [line["result"] for line in finished] == ["cancelled"], finished
        alice.close()


def test_a_client_that_drops_reads_the_finished_upgrade_from_a_new_session(upgrade_sim):
    with serve(upgrade_sim, "tasks-upgrade-reconnect", "--confirm", "none") as server:
        first = Session(server.url, ALICE)
        task = first.start("talos_upgrade", {"node": W2, "image": INSTALLER, "wait_timeout_seconds": 60})
        first.close()

        again = Session(server.url, ALICE)
        done = again.poll(task, timeout=90)
        assert done["status"] == "completed", done
        assert done["result"]["structuredContent"]["outcome"]["on_target"] is True, done
        assert talos_version(again, W2) == "v1.12.0"
        again.close()
