"""The official MCP conformance suite (`@modelcontextprotocol/conformance`, server scenarios)
against `talos-mcp serve --http` on the simulated cluster.

Every scenario of the active suite runs. The ones listed in conformance-expected-failures.yml
fail for the reason written there; the suite itself fails the run when one of them starts
passing (the list is stale) or when any other scenario fails."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

import harness
from harness import Deployment, ServerConfig

pytestmark = pytest.mark.node

CONFORMANCE = harness.NODE_MODULES / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
EXPECTED = harness.E2E / "conformance-expected-failures.yml"

# Scenarios a server passes without the suite's own fixtures; they must pass, not only be absent
# from the expected failures.
MUST_PASS = {
    "server-initialize",
    "ping",
    "tools-list",
    "prompts-list",
    "resources-list",
    "server-sse-multiple-streams",
    "dns-rebinding-protection",
}


def expected_failures() -> list[str]:
    """The scenario names under `server:` in the YAML list (a list of plain scalars)."""
    names, in_server = [], False
    for line in EXPECTED.read_text().splitlines():
        if re.match(r"^server:\s*$", line):
            in_server = True
        elif re.match(r"^\S", line) and not line.startswith("#"):
            in_server = False
        elif in_server and (m := re.match(r"^\s+-\s+([\w-]+)\s*(#.*)?$", line)):
            names.append(m.group(1))
    return names


def test_expected_failures_are_justified():
    """Every entry carries its reason: a comment block right above it."""
    lines = EXPECTED.read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^\s+-\s+[\w-]+", line):
            above = [entry for entry in lines[:i] if entry.strip()]
            assert above and (above[-1].strip().startswith("#") or re.match(r"^\s+-\s", above[-1])), line


def test_conformance_suite(cluster):
    # The suite opens many sessions quickly; the per-caller rate limit is for models, not for it.
    deployment = Deployment(cluster, ServerConfig(["--rate-limit", "1000"]), "conformance")
    try:
        server = deployment.http()
        results = harness.workdir("conformance-results")
        done = subprocess.run(
            harness.node_command(
                CONFORMANCE,
                "server",
                "--url",
                server.url,
                "--expected-failures",
                str(EXPECTED),
                "--output-dir",
                str(results),
            ),
            capture_output=True,
            text=True,
            timeout=600,
            env=harness.node_env(dict(os.environ)),
            cwd=results,
        )
        (results / "conformance.log").write_text(done.stdout + done.stderr)
        summary = done.stdout[done.stdout.find("=== SUMMARY ===") :]
        assert done.returncode == 0, f"conformance suite failed (log: {results / 'conformance.log'}):\n{summary}"
        outcomes = scenario_outcomes(results)
        for name in MUST_PASS:
            assert outcomes.get(name) is True, (name, summary)
        assert {n for n, ok in outcomes.items() if not ok} == set(expected_failures()), summary
    finally:
        deployment.close()


def scenario_outcomes(results) -> dict[str, bool]:
    """Scenario name -> whether every check passed, from the suite's checks.json files."""
    outcomes: dict[str, bool] = {}
    for checks in results.glob("server-*/checks.json"):
        name = re.sub(r"^server-|-\d{4}-\d\d-\d\dT.*$", "", checks.parent.name)
        ok = all(c["status"] not in ("FAILURE",) for c in json.loads(checks.read_text()))
        outcomes[name] = outcomes.get(name, True) and ok
    return outcomes
