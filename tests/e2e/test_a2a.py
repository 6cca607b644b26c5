"""The A2A 1.0 endpoint driven by the official A2A Python SDK (a2a-sdk 1.x), as another agent
would call it: the card resolved by the SDK's own client factory, a read, a streamed read, a
destructive tool declined and then confirmed on the same task (exactly one reboot), GetTask after
completion and from a client that reconnects, a confirmed reboot followed with SubscribeToTask
from another connection, CancelTask before the confirmation, an unknown tool and a tool of a
disabled tier, and with bearer tokens configured a call without the token refused and one with it
accepted, and tasks bound to their caller."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
from a2a.client import (
    A2ACardResolver,
    A2AClientError,
    AuthInterceptor,
    Client,
    ClientConfig,
    ClientFactory,
    CredentialService,
)
from a2a.helpers.proto_helpers import get_data_parts, get_message_text, get_text_parts, new_data_part, new_text_part
from a2a.types import (
    AgentCard,
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    StreamResponse,
    SubscribeToTaskRequest,
    Task,
    TaskNotFoundError,
    TaskState,
)
from a2a.utils.errors import A2AError

import harness
from harness import CP1, W1, W2, ServerConfig

pytestmark = pytest.mark.anyio

ALICE = "alice:0123456789abcdef0123456789"
BOB = "bob:fedcba9876543210fedcba9876"
BOOT_ID = "/proc/sys/kernel/random/boot_id"
TERMINAL = {
    TaskState.TASK_STATE_COMPLETED,
    TaskState.TASK_STATE_FAILED,
    TaskState.TASK_STATE_CANCELED,
    TaskState.TASK_STATE_REJECTED,
}


# --- the deployments -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def a2a_sim():
    """A cluster of its own: these tests reboot nodes."""
    with harness.sim(harness.workdir("a2a-sim"), reboot_downtime_ms=800) as sim:
        yield sim


@pytest.fixture(scope="module")
def readonly(a2a_sim):
    """As installed: read-only, no tokens."""
    with harness.http_server(a2a_sim, ServerConfig(), harness.workdir("a2a-readonly")) as server:
        yield server


@pytest.fixture(scope="module")
def destructive(a2a_sim):
    """Destructive tools enabled, confirmed by the caller (the default confirmation mode)."""
    with harness.http_server(
        a2a_sim, ServerConfig(["--allow-destructive"]), harness.workdir("a2a-destructive")
    ) as server:
        yield server


@pytest.fixture(scope="module")
def with_tokens(a2a_sim):
    with harness.http_server(
        a2a_sim,
        ServerConfig(["--allow-destructive", "--http-tokens", f"{ALICE},{BOB}"]),
        harness.workdir("a2a-tokens"),
    ) as server:
        yield server


# --- the client side -------------------------------------------------------------------------


class Bearer(CredentialService):
    """Hands the SDK's AuthInterceptor one token for whatever bearer scheme the card names."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.asked: list[str] = []

    async def get_credentials(self, security_scheme_name, context):
        self.asked.append(security_scheme_name)
        return self.token


@contextlib.asynccontextmanager
async def connect(
    server: harness.HttpServer, *, streaming: bool = False, credentials: CredentialService | None = None
) -> AsyncIterator[Client]:
    """A client made by the SDK's factory from the card at `<base>/.well-known/agent-card.json`
    (on an HTTP client of ours: the SDK's own waits 5 s at most)."""
    async with httpx.AsyncClient(timeout=60) as http:
        factory = ClientFactory(ClientConfig(streaming=streaming, httpx_client=http))
        interceptors = [AuthInterceptor(credentials)] if credentials else None
        async with await factory.create_from_url(server.base, interceptors=interceptors) as client:
            yield client


def message(*parts: Part, task: Task | None = None) -> Message:
    return Message(
        message_id=str(uuid.uuid4()),
        role=Role.ROLE_USER,
        parts=list(parts),
        task_id=task.id if task else "",
        context_id=task.context_id if task else "",
    )


def tool(name: str, arguments: dict | None = None) -> Part:
    return new_data_part({"tool": name, "arguments": arguments or {}})


async def events(client: Client, msg: Message) -> list[StreamResponse]:
    return [event async for event in client.send_message(SendMessageRequest(message=msg))]


def folded(stream: list[StreamResponse]) -> Task:
    """The task a stream of events describes: its last snapshot, later status updates and
    artifacts applied in order."""
    task: Task | None = None
    for event in stream:
        if event.HasField("task"):
            task = Task()
            task.CopyFrom(event.task)
        elif event.HasField("status_update"):
            update = event.status_update
            if task is None:
                task = Task(id=update.task_id, context_id=update.context_id)
            assert update.task_id == task.id, "every event belongs to the one task"
            task.status.CopyFrom(update.status)
        elif event.HasField("artifact_update"):
            update = event.artifact_update
            assert task is not None and update.task_id == task.id
            same = [a for a in task.artifacts if a.artifact_id == update.artifact.artifact_id]
            if same and update.append:
                same[0].parts.extend(update.artifact.parts)
            else:
                task.artifacts.append(update.artifact)
        else:
            raise AssertionError(f"a tool call answers with a task, not {event}")
    assert task is not None, "no event"
    return task


async def send(client: Client, *parts: Part, task: Task | None = None) -> Task:
    return folded(await events(client, message(*parts, task=task)))


def state(task: Task) -> str:
    return TaskState.Name(task.status.state)


def status_text(task: Task) -> str:
    return get_message_text(task.status.message)


def artifact_parts(task: Task) -> list[Part]:
    return [part for artifact in task.artifacts for part in artifact.parts]


def result_of(task: Task) -> tuple[dict, str]:
    """A finished tool call's structured result and text summary, from its artifact."""
    assert state(task) == "TASK_STATE_COMPLETED", (state(task), status_text(task))
    parts = artifact_parts(task)
    [data] = get_data_parts(parts)
    texts = get_text_parts(parts)
    assert texts and all(texts), "the text summary comes with the data"
    return data, "\n".join(texts)


async def boot_id(client: Client, node: str) -> str:
    data, _ = result_of(await send(client, tool("talos_read_file", {"nodes": [node], "path": BOOT_ID})))
    return data["nodes"][0]["result"]["content"].strip()


def audit(server: harness.HttpServer, tool_name: str) -> list[dict]:
    return [
        line
        for line in harness.audit_lines(server.audit_path)
        if line["phase"] == "finished" and line["tool"] == tool_name
    ]


# --- the card --------------------------------------------------------------------------------


def skill_text(card: AgentCard) -> str:
    return "\n".join(f"{s.id} {s.name} {s.description}" for s in card.skills)


async def test_the_sdk_factory_resolves_the_card(readonly, destructive):
    async with httpx.AsyncClient(timeout=30) as http:
        card = await A2ACardResolver(http, readonly.base).get_agent_card()
        raw = (await http.get(readonly.base + "/.well-known/agent-card.json")).json()
    assert "url" not in raw, "1.0 cards list their endpoints in supportedInterfaces"
    [interface] = card.supported_interfaces
    assert interface.url == readonly.base + "/a2a", "the listener's real address, not the port 0 it was given"
    assert interface.protocol_binding == "JSONRPC" and interface.protocol_version == "1.0"
    assert card.name and card.description and card.version
    assert card.capabilities.streaming and not card.capabilities.push_notifications
    assert card.default_input_modes and card.default_output_modes
    assert not card.security_schemes and not card.security_requirements, "no tokens, no scheme"
    skills = skill_text(card)
    assert "talos_version" in skills and "talos_read_file" in skills
    assert "talos_reboot" not in skills, "only tools the operator enabled are shown"

    async with httpx.AsyncClient(timeout=30) as http:
        card = await A2ACardResolver(http, destructive.base).get_agent_card()
    assert "talos_reboot" in skill_text(card) and "destructive" in skill_text(card)

    # The factory picks the JSON-RPC 1.0 interface and the client works against it.
    async with connect(readonly) as client:
        data, _ = result_of(await send(client, tool("talos_hostname", {"nodes": [CP1]})))
    assert data["nodes"][0]["result"]["hostname"] == "talos-cp-1"


async def test_public_url_names_the_endpoint(a2a_sim):
    # Behind a proxy the listener address is not what clients reach.
    config = ServerConfig(["--public-url", "https://talos-agent.example.com:8443/"])
    with harness.http_server(a2a_sim, config, harness.workdir("a2a-public-url")) as server:
        async with httpx.AsyncClient(timeout=30) as http:
            card = await A2ACardResolver(http, server.base).get_agent_card()
    assert [i.url for i in card.supported_interfaces] == ["https://talos-agent.example.com:8443/a2a"]


# --- reads -----------------------------------------------------------------------------------


async def test_a_read_completes_with_data_and_text(readonly):
    async with connect(readonly) as client:
        stream = await events(client, message(tool("talos_version", {"nodes": [CP1, W1]})))
        assert len(stream) == 1 and stream[0].HasField("task"), "SendMessage answers with the task"
        task = folded(stream)
        data, text = result_of(task)
    assert [n["node"] for n in data["nodes"]] == [CP1, W1]
    assert all(n["ok"] and n["result"]["tag"] == "v1.11.5" for n in data["nodes"]), data
    assert "Talos v1.11.5" in text
    [line] = [l for l in audit(readonly, "talos_version") if l["nodes"] == [CP1, W1]]
    assert line["transport"] == "a2a" and line["result"] == "ok", line
    harness.assert_no_secrets(str(task))


async def test_a_streamed_read(readonly):
    async with connect(readonly, streaming=True) as client:
        stream = await events(client, message(tool("talos_version", {"nodes": [W2]})))
        task = folded(stream)
        data, text = result_of(task)
        assert data["nodes"][0]["result"]["tag"] == "v1.11.5" and "Talos v1.11.5" in text
        # The last event carries the final state; nothing follows a terminal state.
        last = stream[-1]
        final = last.task.status.state if last.HasField("task") else last.status_update.status.state
        assert final == TaskState.TASK_STATE_COMPLETED, stream
        # GetTask reads the same record.
        got = await client.get_task(GetTaskRequest(id=task.id))
    assert got.id == task.id and state(got) == "TASK_STATE_COMPLETED"
    assert result_of(got)[0] == data


async def test_whole_numbers_from_the_sdk_are_integer_arguments(readonly):
    # The SDK carries a data part as a protobuf Value, whose numbers are doubles: `3` goes on the
    # wire as `3.0`. Integer arguments must still be accepted.
    async with connect(readonly) as client:
        task = await send(client, tool("talos_dmesg", {"nodes": [CP1], "tail": 3}))
        data, _ = result_of(task)
    assert data["nodes"][0]["ok"], data


async def test_get_task_after_completion_also_from_a_new_client(readonly):
    async with connect(readonly) as client:
        task = await send(client, tool("talos_hostname", {"nodes": [W1]}))
        data, _ = result_of(task)
    # Another connection of the same caller (anonymous here) reads the finished task.
    async with connect(readonly) as again:
        got = await again.get_task(GetTaskRequest(id=task.id))
        assert state(got) == "TASK_STATE_COMPLETED" and got.context_id == task.context_id
        assert result_of(got)[0] == data
        listed = await again.list_tasks(ListTasksRequest())
        assert task.id in {t.id for t in listed.tasks}
        with pytest.raises(TaskNotFoundError):
            await again.get_task(GetTaskRequest(id=str(uuid.uuid4())))


async def test_a_text_message_gets_usage_not_a_task(readonly):
    async with connect(readonly) as client:
        [reply] = await events(client, message(new_text_part("please reboot the cluster")))
    assert reply.HasField("message"), "no language model: a short usage reply, no task"
    text = get_message_text(reply.message)
    assert '"tool"' in text and '"arguments"' in text and "talos_version" in text, text


# --- errors ----------------------------------------------------------------------------------


async def test_an_unknown_tool_and_a_disabled_tier(readonly):
    async with connect(readonly) as client:
        unknown = await send(client, tool("talos_no_such_tool"))
        refused = await send(client, tool("talos_reboot", {"node": CP1}))
        bad = await send(client, tool("talos_version", {"nodes": "not-a-list"}))
    for task in (unknown, refused, bad):
        assert state(task) in ("TASK_STATE_FAILED", "TASK_STATE_REJECTED"), (state(task), status_text(task))
        assert not task.artifacts, "a refused call has no result"
    assert "talos_no_such_tool" in status_text(unknown), status_text(unknown)
    # The same words MCP gives (see test_errors.py).
    assert "destructive tier" in status_text(refused) and "--allow-destructive" in status_text(refused)
    assert "nodes" in status_text(bad), status_text(bad)
    assert [l["result"] for l in audit(readonly, "talos_reboot")] == ["refused"]


# --- a destructive tool: declined, then confirmed ----------------------------------------------


async def test_a_reboot_declined_then_confirmed_runs_once(destructive):
    async with connect(destructive) as client:
        before = await boot_id(client, W1)

        # The plan: nothing reaches the node before the answer.
        asked = await send(client, tool("talos_reboot", {"node": W1}))
        assert state(asked) == "TASK_STATE_INPUT_REQUIRED", (state(asked), status_text(asked))
        plan = status_text(asked)
        for part in ("talos_reboot", "talos-worker-1", W1):
            assert part in plan, plan
        assert get_data_parts(asked.status.message.parts), "the plan also as a data part"
        assert await boot_id(client, W1) == before

        declined = await send(client, new_data_part({"confirm": False}), task=asked)
        assert declined.id == asked.id
        assert state(declined) == "TASK_STATE_CANCELED", (state(declined), status_text(declined))
        assert await boot_id(client, W1) == before, "declined: nothing happened"
        # A late yes to the declined task changes nothing.
        await answer_finished(client, declined)
        assert await boot_id(client, W1) == before

    # Confirmed, on a streaming client: the steps arrive as WORKING status updates.
    async with connect(destructive, streaming=True) as client:
        asked = await send(client, tool("talos_reboot", {"node": W1, "wait": True}))
        assert state(asked) == "TASK_STATE_INPUT_REQUIRED", (state(asked), status_text(asked))
        stream = await events(client, message(new_data_part({"confirm": True}), task=asked))
        done = folded(stream)
        assert done.id == asked.id
        data, text = result_of(done)
        outcome = data["outcome"]
        assert outcome["back"] and outcome["boot_id_before"] == before != outcome["boot_id_after"], outcome
        steps = [
            get_message_text(e.status_update.status.message)
            for e in stream
            if e.HasField("status_update") and e.status_update.status.state == TaskState.TASK_STATE_WORKING
        ]
        assert any("waiting for the node to go down" in s for s in steps), steps
        after = await boot_id(client, W1)
        assert after == outcome["boot_id_after"]

        # Answering the finished task again does not reboot again.
        await answer_finished(client, done)
        got = await client.get_task(GetTaskRequest(id=done.id))
        assert state(got) == "TASK_STATE_COMPLETED"
        assert await boot_id(client, W1) == after, "exactly one reboot"

    finished = audit(destructive, "talos_reboot")
    assert [l["result"] for l in finished].count("ok") == 1, finished
    assert all(l["transport"] == "a2a" and l["caller"] == "anonymous" for l in finished)
    w1 = [l for l in finished if l["nodes"] == [W1]]
    assert [(l["result"], l["confirmation"].rsplit(" ", 1)[-1]) for l in w1] == [
        ("NotConfirmed", "declined"),
        ("ok", "confirmed"),
    ], w1


async def answer_finished(client: Client, task: Task) -> None:
    """Sends `{"confirm": true}` to a task that has ended: an error, or the task unchanged."""
    try:
        again = await send(client, new_data_part({"confirm": True}), task=task)
    except (A2AError, A2AClientError):
        return
    assert again.id == task.id and again.status.state == task.status.state, (state(again), status_text(again))


async def test_cancel_before_the_answer_changes_nothing(destructive):
    async with connect(destructive) as client:
        before = await boot_id(client, W2)
        asked = await send(client, tool("talos_reboot", {"node": W2}))
        assert state(asked) == "TASK_STATE_INPUT_REQUIRED"
        canceled = await client.cancel_task(CancelTaskRequest(id=asked.id))
        assert canceled.id == asked.id and state(canceled) == "TASK_STATE_CANCELED"
        await answer_finished(client, canceled)
        got = await client.get_task(GetTaskRequest(id=asked.id))
        assert state(got) == "TASK_STATE_CANCELED"
        assert await boot_id(client, W2) == before
    [line] = [l for l in audit(destructive, "talos_reboot") if l["nodes"] == [W2]]
    assert line["result"] == "cancelled", line


@pytest.fixture(scope="module")
def slow_reboots():
    """Nodes that stay down for 3 s, so that a reboot is still running when a client comes back."""
    with harness.sim(harness.workdir("a2a-slow-sim"), reboot_downtime_ms=3000) as sim:
        with harness.http_server(sim, ServerConfig(["--allow-destructive"]), harness.workdir("a2a-slow")) as server:
            yield server


async def test_a_client_that_comes_back_follows_the_task(slow_reboots):
    async with connect(slow_reboots) as client:
        before = await boot_id(client, W2)
        asked = await send(client, tool("talos_reboot", {"node": W2, "wait": True}))
        assert state(asked) == "TASK_STATE_INPUT_REQUIRED", (state(asked), status_text(asked))
        # The yes, answered at once: the client goes away while the reboot runs.
        request = SendMessageRequest(
            message=message(new_data_part({"confirm": True}), task=asked),
            configuration=SendMessageConfiguration(return_immediately=True),
        )
        [answered] = [event async for event in client.send_message(request)]
        assert answered.task.id == asked.id and answered.task.status.state not in TERMINAL, answered

    # Another connection subscribes and sees the rest of the steps and the end. A subscription
    # that starts while the task still reads INPUT_REQUIRED (the answer not yet taken up) ends at
    # once; subscribe again. One to a task that has ended is refused; GetTask reads it.
    steps: list[str] = []
    async with connect(slow_reboots, streaming=True) as again:
        with anyio.fail_after(60):
            while True:
                try:
                    stream = [e async for e in again.subscribe(SubscribeToTaskRequest(id=asked.id))]
                except A2AError:
                    break
                steps += [
                    get_message_text(e.status_update.status.message)
                    for e in stream
                    if e.HasField("status_update") and e.status_update.status.state == TaskState.TASK_STATE_WORKING
                ]
                if folded(stream).status.state in TERMINAL:
                    break
                await anyio.sleep(0.1)
        done = await again.get_task(GetTaskRequest(id=asked.id))
        data, _ = result_of(done)
        assert data["outcome"]["back"] and data["outcome"]["boot_id_before"] == before
        assert await boot_id(again, W2) == data["outcome"]["boot_id_after"] != before
    assert "node is back with a new boot id" in steps, steps


# --- bearer tokens ---------------------------------------------------------------------------


def secret(token: str) -> str:
    """The secret half of a `name:secret` token."""
    return token.split(":", 1)[1]


async def test_tokens_a_call_without_one_is_refused(with_tokens):
    # The card is public and says how to authenticate.
    async with connect(with_tokens) as anonymous:
        with pytest.raises(A2AClientError) as refused:
            await send(anonymous, tool("talos_version", {"nodes": [CP1]}))
    cause = refused.value.__cause__
    assert isinstance(cause, httpx.HTTPStatusError) and cause.response.status_code == 401, refused.value

    async with httpx.AsyncClient(timeout=30) as http:
        card = await A2ACardResolver(http, with_tokens.base).get_agent_card()
    [scheme_name] = card.security_schemes
    assert card.security_schemes[scheme_name].http_auth_security_scheme.scheme.lower() == "bearer"
    assert [list(r.schemes) for r in card.security_requirements] == [[scheme_name]]

    key = secret(ALICE)
    bearer = Bearer(key)
    async with connect(with_tokens, credentials=bearer) as client:
        data, _ = result_of(await send(client, tool("talos_version", {"nodes": [CP1]})))
    assert bearer.asked, "the card's security scheme led the SDK to the token"
    assert data["nodes"][0]["ok"]
    [line] = audit(with_tokens, "talos_version")
    assert line["transport"] == "a2a" and line["caller"] == "alice", line
    assert key not in with_tokens.audit_path.read_text()
    assert key not in (with_tokens.workdir / "talos-mcp.stderr").read_text()


async def test_tasks_belong_to_their_caller(with_tokens):
    """Another caller can neither read, answer nor cancel a task: its id is not found. The answer
    cannot change what was planned."""
    alice_key, bob_key = Bearer(secret(ALICE)), Bearer(secret(BOB))
    async with connect(with_tokens, credentials=alice_key) as alice, connect(with_tokens, credentials=bob_key) as bob:
        before = {node: await boot_id(alice, node) for node in (W1, W2)}
        asked = await send(alice, tool("talos_reboot", {"node": W1, "wait": True}))
        assert state(asked) == "TASK_STATE_INPUT_REQUIRED", (state(asked), status_text(asked))

        with pytest.raises(TaskNotFoundError):
            await bob.get_task(GetTaskRequest(id=asked.id))
        with pytest.raises(TaskNotFoundError):
            await send(bob, new_data_part({"confirm": True}), task=asked)
        with pytest.raises(TaskNotFoundError):
            await bob.cancel_task(CancelTaskRequest(id=asked.id))
        assert asked.id not in {t.id for t in (await bob.list_tasks(ListTasksRequest())).tasks}
        assert state(await alice.get_task(GetTaskRequest(id=asked.id))) == "TASK_STATE_INPUT_REQUIRED"
        assert {node: await boot_id(alice, node) for node in (W1, W2)} == before, "bob's yes did nothing"

        # Alice's yes carries other arguments: the planned call runs, on W1 only.
        done = await send(
            alice, new_data_part({"confirm": True, "tool": "talos_reboot", "arguments": {"node": W2}}), task=asked
        )
        data, _ = result_of(done)
        assert data["node"] == W1, data
        assert await boot_id(alice, W1) != before[W1]
        assert await boot_id(alice, W2) == before[W2], "the answer cannot retarget the plan"
    reboots = audit(with_tokens, "talos_reboot")
    assert [(l["caller"], l["nodes"], l["result"]) for l in reboots] == [("alice", [W1], "ok")], reboots
