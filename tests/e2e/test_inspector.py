"""The same checks through the MCP Inspector's CLI (`@modelcontextprotocol/inspector --cli`),
a client written in TypeScript on the official TypeScript SDK: every read tool with the same
content checks, tools/list against the snapshot and the Inspector's strict schema check,
prompts, resources, templates, the token confirmation flow, error results and protocol errors.
Elicitation, progress and cancellation need a live session, which a one-shot CLI call is not;
the Python SDK suite covers them."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess

import pytest

import harness
from harness import CP1, W1, ServerConfig
from test_tools import CASES

pytestmark = pytest.mark.node

INSPECTOR = harness.NODE_MODULES / "@modelcontextprotocol" / "inspector" / "clients" / "launcher" / "build" / "index.js"


@pytest.fixture(scope="module")
def inspector_target(readonly):
    """How the Inspector reaches talos-mcp: a URL (streamable HTTP) or a command (stdio)."""
    workdir = harness.workdir("inspector")
    stdio = ["--", harness.binary("talos-mcp"), "serve", *ServerConfig().args(readonly.sim, workdir)]
    return {"http": [readonly.http().url], "stdio": stdio, "workdir": workdir}


def inspect(target: list[str], workdir, *args: str, era: str = "legacy") -> tuple[int, dict | None, str]:
    """Runs one Inspector CLI call; returns its exit code, the JSON result and stderr."""
    # --cli comes first; the server command goes last, after `--`.
    cmd = harness.node_command(INSPECTOR, "--cli", "-q", "--format", "json", "--protocol-era", era, *args)
    if target[0] == "--":
        cmd += target
    else:
        cmd[3:3] = [target[0]]
    env = harness.node_env(harness.server_env(), MCP_STORAGE_DIR=str(workdir / "inspector-storage"))
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    out = done.stdout.strip()
    return done.returncode, (json.loads(out.splitlines()[-1]) if out else None), done.stderr


@pytest.mark.parametrize("era", ["legacy", "modern"])
@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_inspector_cli(inspector_target, snapshot, transport, era):
    target, wd = inspector_target[transport], inspector_target["workdir"]

    # tools/list passes the Inspector's strict schema-portability check.
    rc, out, err = inspect(target, wd, "--strict", "--method", "tools/list", era=era)
    assert rc == 0, err
    tools = {t["name"]: t for t in out["result"]["tools"]}
    assert "talos_version" in tools and "talos_reboot" not in tools
    for name, tool in tools.items():
        assert tool["inputSchema"] == snapshot[name]["inputSchema"], name
        assert tool.get("outputSchema") == snapshot[name]["outputSchema"], name

    rc, out, err = inspect(target, wd, "--method", "tools/call", "--tool-name", "talos_version", era=era)
    assert rc == 0, err
    result = out["result"]
    assert result["isError"] is False
    assert [n["result"]["tag"] for n in result["structuredContent"]["nodes"]] == ["v1.11.5"] * 5

    # Typed arguments: an array and an integer.
    rc, out, err = inspect(
        target,
        wd,
        "--method",
        "tools/call",
        "--tool-name",
        "talos_dmesg",
        "--tool-arg",
        f'nodes=["{CP1}"]',
        "tail=2",
        era=era,
    )
    assert rc == 0, err
    [only] = out["result"]["structuredContent"]["nodes"]
    assert only["node"] == CP1 and len(only["result"]["lines"]) == 2

    # A tool error is reported as such, with the server's own words.
    rc, out, err = inspect(
        target, wd, "--method", "tools/call", "--tool-name", "talos_version", "--tool-arg", 'nodes=["10.99.0.1"]', era=era
    )
    assert rc == 5, (rc, out, err)
    assert out["result"]["isError"] is True
    assert out["result"]["content"][0]["text"].startswith("NodeNotAllowed:")

    rc, out, err = inspect(target, wd, "--method", "prompts/list", era=era)
    assert rc == 0, err
    assert {p["name"] for p in out["result"]["prompts"]} >= {"diagnose_node", "etcd_troubleshooting"}
    rc, out, err = inspect(
        target, wd, "--method", "prompts/get", "--prompt-name", "diagnose_node", "--prompt-args", "node=talos-cp-1", era=era
    )
    assert rc == 0, err
    assert "talos-cp-1" in out["result"]["messages"][0]["content"]["text"]

    rc, out, err = inspect(target, wd, "--method", "resources/list", era=era)
    assert rc == 0, err
    assert "talos://contexts" in {r["uri"] for r in out["result"]["resources"]}
    rc, out, err = inspect(target, wd, "--method", "resources/read", "--uri", "talos://contexts", era=era)
    assert rc == 0, err
    assert json.loads(out["result"]["contents"][0]["text"])["contexts"][0]["name"] == "talos-sim"
    rc, out, err = inspect(target, wd, "--method", "resources/templates/list", era=era)
    assert rc == 0, err
    assert len(out["result"]["resourceTemplates"]) == 4

    # A protocol error (unknown prompt) fails the call with the server's message.
    rc, out, err = inspect(target, wd, "--method", "prompts/get", "--prompt-name", "no_such_prompt", era=era)
    assert rc == 1 and out is None, (rc, out)
    assert "no_such_prompt" in err and "not found" in err


@pytest.mark.parametrize(("transport", "era"), [("http", "legacy"), ("stdio", "modern")])
def test_inspector_calls_every_read_tool(inspector_target, transport, era):
    target, wd = inspector_target[transport], inspector_target["workdir"]
    for name, (args, check) in CASES.items():
        rc, out, err = inspect(
            target, wd, "--method", "tools/call", "--tool-name", name, "--tool-args-json", json.dumps(args), era=era
        )
        assert rc == 0, (name, err)
        result = out["result"]
        assert result["isError"] is False, name
        text = "\n".join(c["text"] for c in result["content"] if c["type"] == "text")
        check(text, result["structuredContent"])


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_inspector_token_confirmation(transport):
    """Plan, then run with the token. Over stdio each Inspector call starts a new server process:
    the processes share the token secret (--confirm-secret-file), as replicas would. Over HTTP
    each Inspector call is a new MCP session, and a token is bound to the session that asked for
    it: another session cannot redeem it."""
    workdir = harness.workdir(f"inspector-token-{transport}")
    secret = workdir / "confirm.secret"
    secret.write_bytes(os.urandom(32))
    secret.chmod(0o600)
    flags = ["--allow-write", "--confirm-writes", "--confirm", "token", "--confirm-secret-file", str(secret)]
    with harness.sim(workdir / "sim") as sim:
        config = ServerConfig(flags)
        with contextlib.ExitStack() as stack:
            if transport == "http":
                target = [stack.enter_context(harness.http_server(sim, config, workdir / "server")).url]
            else:
                target = ["--", harness.binary("talos-mcp"), "serve", *config.args(sim, workdir / "server")]
            call = ["--method", "tools/call", "--tool-name", "talos_service_restart"]
            args = {"node": W1, "service": "apid"}
            rc, out, err = inspect(target, workdir, *call, "--tool-args-json", json.dumps(args))
            assert rc == 0, err
            plan = out["result"]["structuredContent"]
            assert plan["status"] == "confirmation_required", plan
            args["confirmation_token"] = plan["confirmation_token"]
            rc, out, err = inspect(target, workdir, *call, "--tool-args-json", json.dumps(args))
            if transport == "http":
                assert rc == 5 and "does not match" in out["result"]["content"][0]["text"], (rc, out, err)
            else:
                assert rc == 0, err
                assert out["result"]["structuredContent"]["confirmation"] == "token: redeemed"
