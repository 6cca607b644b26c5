"""Processes of the end-to-end suite: a simulated Talos cluster (talos-sim) and talos-mcp itself,
over stdio or streamable HTTP. Everything listens on 127.0.0.1 only."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

ROOT = Path(__file__).resolve().parents[2]
E2E = Path(__file__).resolve().parent

# The simulated cluster: control planes 127.0.10.11-13, workers 127.0.10.14-15.
CP1, CP2, CP3, W1, W2 = (f"127.0.10.{i}" for i in range(11, 16))
ALL_NODES = [CP1, CP2, CP3, W1, W2]
TRANSPORTS = ["stdio", "http"]
# Python SDK connect modes: the initialize handshake, or server/discover (2026-07-28).
ERAS = {"legacy": "legacy", "modern": "auto"}
ERA_VERSIONS = {"legacy": "2025-11-25", "modern": "2026-07-28"}

# The simulator plants values starting with this in secrets (keys, tokens, kubeconfigs).
PLANTED = "SIM-SECRET"

HOSTNAMES = {
    CP1: "talos-cp-1",
    CP2: "talos-cp-2",
    CP3: "talos-cp-3",
    W1: "talos-worker-1",
    W2: "talos-worker-2",
}


def binary(name: str) -> str:
    """A binary of this workspace: $TALOS_MCP_BIN / $TALOS_SIM_BIN, else target/debug."""
    env = {"talos-mcp": "TALOS_MCP_BIN", "talos-sim": "TALOS_SIM_BIN"}[name]
    path = os.environ.get(env) or str(ROOT / "target" / "debug" / name)
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"{path} is missing: build it (cargo build -p talos-mcp-bin -p talos-sim) or set {env}")
    return path


ANSI = re.compile(r"\x1b\[[0-9;]*m")


class StderrLog:
    """Collects a child's stderr lines in a thread (the pipe never fills) and can wait for one."""

    def __init__(self, stream, path: Path) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._path = path
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream) -> None:
        with open(self._path, "a", encoding="utf-8") as out:
            for raw in stream:
                line = ANSI.sub("", raw.decode("utf-8", "replace").rstrip("\n"))
                out.write(line + "\n")
                out.flush()
                with self._cond:
                    self.lines.append(line)
                    self._cond.notify_all()
        with self._cond:
            self.lines.append("<eof>")
            self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    if m := regex.search(line):
                        return m
                    if line == "<eof>":
                        raise RuntimeError(f"process ended before printing {pattern!r}; stderr: {self._path}")
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {pattern!r} within {timeout} s; stderr: {self._path}")
                self._cond.wait(left)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Sim:
    """A running talos-sim and the talosconfig it wrote (client role os:admin unless told)."""

    process: subprocess.Popen
    dir: Path
    talosconfig: Path
    endpoint: str
    log: StderrLog


@contextlib.contextmanager
def sim(
    workdir: Path,
    *,
    log_lines: int | None = None,
    reboot_downtime_ms: int = 1000,
    role: str = "os:admin",
    name: str | None = None,
    extra: list[str] | None = None,
) -> Iterator[Sim]:
    """`name` names the cluster and its talosconfig context; `extra` are more talos-sim flags
    (--nodes, --workers, --talos-version, --node-version, --machine-config-patch)."""
    workdir.mkdir(parents=True, exist_ok=True)
    talosconfig = workdir / "talosconfig"
    args = [
        binary("talos-sim"),
        "--talosconfig",
        str(talosconfig),
        "--role",
        role,
        "--reboot-downtime-ms",
        str(reboot_downtime_ms),
    ]
    if log_lines is not None:
        args += ["--log-lines", str(log_lines)]
    if name is not None:
        args += ["--name", name]
    args += extra or []
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = StderrLog(process.stderr, workdir / "talos-sim.stderr")
    try:
        endpoint = log.wait_for(r"serving; press Ctrl-C to stop.*endpoint=(\S+)").group(1)
        yield Sim(process, workdir, talosconfig, endpoint, log)
    finally:
        _stop(process)


def merge_talosconfigs(paths: list[Path], out: Path) -> Path:
    """One talosconfig with the contexts of every file (as talos-sim writes them: `context:`,
    then `contexts:` and the entries), the first file's context current; written 0600."""
    first, *rest = (p.read_text() for p in paths)
    merged = first.rstrip("\n") + "\n"
    for text in rest:
        merged += text.split("contexts:\n", 1)[1].rstrip("\n") + "\n"
    out.touch(mode=0o600)
    out.write_text(merged)
    return out


@dataclass
class ServerConfig:
    """How to run talos-mcp: its flags (besides the talosconfig, audit log and artifacts)."""

    flags: list[str] = field(default_factory=list)
    # Another talosconfig than the one the simulator wrote.
    talosconfig: Path | None = None

    def args(self, sim: Sim, workdir: Path) -> list[str]:
        return [
            "--talosconfig",
            str(self.talosconfig or sim.talosconfig),
            "--audit-log",
            str(workdir / "audit.log"),
            "--artifact-dir",
            str(workdir / "artifacts"),
            *self.flags,
        ]


@dataclass
class HttpServer:
    """talos-mcp serving streamable HTTP on a free loopback port."""

    process: subprocess.Popen
    url: str
    base: str
    workdir: Path
    log: StderrLog

    @property
    def audit_path(self) -> Path:
        return self.workdir / "audit.log"


@contextlib.contextmanager
def http_server(sim: Sim, config: ServerConfig, workdir: Path) -> Iterator[HttpServer]:
    workdir.mkdir(parents=True, exist_ok=True)
    args = [binary("talos-mcp"), "serve", "--http", "127.0.0.1:0", *config.args(sim, workdir)]
    process = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=server_env(),
    )
    log = StderrLog(process.stderr, workdir / "talos-mcp.stderr")
    try:
        url = log.wait_for(r"listening on (http://\S+/mcp)").group(1)
        yield HttpServer(process, url, url.removesuffix("/mcp"), workdir, log)
    finally:
        _stop(process)


def server_env() -> dict[str, str]:
    """The server's environment: no TALOSCONFIG or TALOS_MCP_* leaking in from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TALOS_MCP_", "TALOSCONFIG", "RUST_LOG"))}
    env["TALOS_MCP_LOG_LEVEL"] = "info"
    return env


@contextlib.asynccontextmanager
async def stdio_transport(sim: Sim, config: ServerConfig, workdir: Path):
    """talos-mcp over stdio as the Python SDK spawns it; its stderr goes to a file."""
    workdir.mkdir(parents=True, exist_ok=True)
    params = StdioServerParameters(
        command=binary("talos-mcp"),
        args=["serve", *config.args(sim, workdir)],
        env={"TALOS_MCP_LOG_LEVEL": "info"},
    )
    with open(workdir / "talos-mcp.stderr", "a", encoding="utf-8") as errlog:
        async with stdio_client(params, errlog=errlog) as streams:
            yield streams


NODE_MODULES = E2E / "node_modules"


def node_command(script: Path, *args: str) -> list[str]:
    """A command running `script` on the Node 22 that setup.sh installed here."""
    node = NODE_MODULES / ".bin" / "node"
    if not node.exists():
        raise RuntimeError("Node 22 is not installed here: run tests/e2e/setup.sh")
    return [str(node), str(script), *args]


def node_env(base: dict[str, str], **extra: str) -> dict[str, str]:
    """`base` with that Node first on PATH (for the tools' own child processes) and no colours."""
    return {**base, "PATH": f"{NODE_MODULES / '.bin'}:{base.get('PATH', '')}", "NO_COLOR": "1", **extra}


def audit_lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def workdir(prefix: str) -> Path:
    """A fresh directory under tests/e2e/.results (kept for inspection after a failure)."""
    base = E2E / ".results"
    base.mkdir(exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix + "-", dir=base))


@dataclass
class Connected:
    """A connected SDK client and where its server writes."""

    client: Client
    transport: str
    era: str
    audit_path: Path
    stderr_path: Path
    http: HttpServer | None = None

    def audit(self) -> list[dict]:
        return audit_lines(self.audit_path)

    def finished(self, tool: str | None = None) -> list[dict]:
        """The audit lines of finished calls (of `tool`, when named), oldest first."""
        return [l for l in self.audit() if l["phase"] == "finished" and (tool is None or l["tool"] == tool)]

    def stderr(self) -> str:
        return self.stderr_path.read_text() if self.stderr_path.exists() else ""


class Deployment:
    """talos-mcp with one configuration against one simulated cluster: one shared HTTP server
    (started on first use), or a fresh stdio process per client, as MCP hosts run them."""

    def __init__(self, sim: Sim, config: ServerConfig, name: str) -> None:
        self.sim = sim
        self.config = config
        self.name = name
        self._stack = contextlib.ExitStack()
        self._http: HttpServer | None = None

    def http(self) -> HttpServer:
        if self._http is None:
            self._http = self._stack.enter_context(
                http_server(self.sim, self.config, workdir(f"{self.name}-http"))
            )
        return self._http

    @contextlib.asynccontextmanager
    async def connect(self, transport: str, era: str = "legacy", **client_args) -> AsyncIterator[Connected]:
        # The SDK runs the session in task groups: a failing assertion in the test comes out
        # wrapped in exception groups. Unwrap a lone error so pytest shows it plainly.
        try:
            async with self._connect(transport, era, **client_args) as connected:
                yield connected
        except BaseExceptionGroup as group:
            leaves = _leaves(group)
            if len(leaves) == 1:
                raise leaves[0] from None
            raise

    @contextlib.asynccontextmanager
    async def _connect(self, transport: str, era: str, **client_args) -> AsyncIterator[Connected]:
        mode = ERAS[era]
        if transport == "http":
            server = self.http()
            async with Client(server.url, mode=mode, **client_args) as client:
                yield Connected(client, transport, era, server.audit_path, server.workdir / "talos-mcp.stderr", server)
        else:
            wd = workdir(f"{self.name}-stdio")
            async with Client(stdio_transport(self.sim, self.config, wd), mode=mode, **client_args) as client:
                yield Connected(client, transport, era, wd / "audit.log", wd / "talos-mcp.stderr")

    def close(self) -> None:
        self._stack.close()


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for e in group.exceptions:
        out.extend(_leaves(e) if isinstance(e, BaseExceptionGroup) else [e])
    return out


def text_of(result) -> str:
    """The text content of a tool result or prompt message list."""
    return "\n".join(c.text for c in result.content if getattr(c, "type", None) == "text")


def assert_no_secrets(*texts: str) -> None:
    for t in texts:
        assert PLANTED not in t, f"a planted secret leaked: …{t[max(0, t.find(PLANTED) - 80):t.find(PLANTED) + 40]}…"


SNAPSHOT = ROOT / "crates" / "talos-mcp" / "tests" / "snapshots" / "tools.json"
