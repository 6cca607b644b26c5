"""Lifecycle and protocol: initialize or discover, version negotiation on every revision, ping,
and the JSON-RPC errors a client gets for protocol mistakes."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import mcp_types
import pytest
from mcp.shared.exceptions import MCPError
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, KNOWN_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

from harness import ERA_VERSIONS

pytestmark = pytest.mark.anyio


@pytest.mark.filterwarnings("ignore:ping is removed")
async def test_connects_and_describes_itself(readonly, transport, era):
    async with readonly.connect(transport, era) as conn:
        session = conn.client.session
        assert session.protocol_version == ERA_VERSIONS[era]
        info = session.server_info
        assert info is not None and info.name == "talos-mcp" and info.version
        caps = session.server_capabilities
        assert caps.tools is not None and caps.prompts is not None and caps.resources is not None
        if era == "legacy":
            # Instructions come with the handshake; they tell the model where to start.
            assert "talos_version" in (session.instructions or "")
            await conn.client.send_ping()  # ping was removed in 2026-07-28


def post(url: str, body: dict, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    """One raw JSON-RPC POST to the streamable HTTP endpoint (no SDK in between)."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Accept": "application/json, text/event-stream", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read().decode()


def rpc(body: str) -> dict:
    """The JSON-RPC message of a response body (plain JSON or the data line of an SSE event)."""
    for line in body.splitlines():
        if line.startswith("data:") and line[5:].strip():
            return json.loads(line[5:])
    return json.loads(body)


def initialize(version: str, id: int = 1) -> dict:
    return {
        "jsonrpc": "2.0",
        "id": id,
        "method": "initialize",
        "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "e2e-raw", "version": "1"}},
    }


def test_every_protocol_revision_negotiates_over_http(readonly):
    """Every revision the independent SDK knows (2024-11-05 … 2026-07-28), oldest and newest
    included: handshake revisions are echoed by initialize and then usable with the
    MCP-Protocol-Version header; the stateless revision is offered by server/discover and used
    per request."""
    url = readonly.http().url
    assert KNOWN_PROTOCOL_VERSIONS[0] == "2024-11-05" and KNOWN_PROTOCOL_VERSIONS[-1] == "2026-07-28"
    for version in HANDSHAKE_PROTOCOL_VERSIONS:
        status, headers, body = post(url, initialize(version))
        assert status == 200, (version, body)
        assert rpc(body)["result"]["protocolVersion"] == version
        session = headers["mcp-session-id"]
        hdrs = {"Mcp-Session-Id": session, "MCP-Protocol-Version": version}
        status, _, _ = post(url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, hdrs)
        assert status == 202, version
        status, _, body = post(url, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, hdrs)
        assert status == 200, (version, body)
        names = {t["name"] for t in rpc(body)["result"]["tools"]}
        assert "talos_version" in names, version

    # A revision the server does not know: it answers with its newest handshake revision.
    status, _, body = post(url, initialize("2099-01-01"))
    assert status == 200, body
    assert rpc(body)["result"]["protocolVersion"] == HANDSHAKE_PROTOCOL_VERSIONS[-1]

    # The stateless revision: discovery lists every revision, then requests carry their own.
    modern = MODERN_PROTOCOL_VERSIONS[-1]
    meta = {
        "io.modelcontextprotocol/protocolVersion": modern,
        "io.modelcontextprotocol/clientInfo": {"name": "e2e-raw", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    hdrs = {"MCP-Protocol-Version": modern}
    status, _, body = post(
        url,
        {"jsonrpc": "2.0", "id": 3, "method": "server/discover", "params": {"_meta": meta}},
        {**hdrs, "Mcp-Method": "server/discover"},
    )
    assert status == 200, body
    supported = rpc(body)["result"]["supportedVersions"]
    assert set(KNOWN_PROTOCOL_VERSIONS) <= set(supported), supported
    call = {
        "jsonrpc": "2.0",
        "id": 4,
        "method": "tools/call",
        "params": {"name": "talos_hostname", "arguments": {"nodes": ["127.0.10.11"]}, "_meta": meta},
    }
    status, _, body = post(url, call, {**hdrs, "Mcp-Method": "tools/call", "Mcp-Name": "talos_hostname"})
    assert status == 200, body
    result = rpc(body)["result"]
    assert result["structuredContent"]["nodes"][0]["result"]["hostname"] == "talos-cp-1", result


async def test_protocol_mistakes_are_json_rpc_errors(readonly, transport, era):
    async with readonly.connect(transport, era) as conn:
        client = conn.client
        # An unknown tool, prompt or resource is a protocol error, not a tool result.
        with pytest.raises(MCPError) as unknown_tool:
            await client.call_tool("talos_no_such_tool", {})
        assert unknown_tool.value.error.code == mcp_types.INVALID_PARAMS
        with pytest.raises(MCPError) as unknown_prompt:
            await client.get_prompt("no_such_prompt", {})
        assert unknown_prompt.value.error.code == mcp_types.INVALID_PARAMS
        with pytest.raises(MCPError) as unknown_resource:
            await client.read_resource("talos://talos-sim/nodes/127.0.10.11/no-such-view")
        # -32002 until 2025-11-25; 2026-07-28 retired it for invalid params (SEP-2164).
        assert unknown_resource.value.error.code == (-32002 if era == "legacy" else mcp_types.INVALID_PARAMS)
        assert "templates" in unknown_resource.value.error.message
        assert unknown_resource.value.error.data == {"uri": "talos://talos-sim/nodes/127.0.10.11/no-such-view"}
        # Arguments that do not fit the schema are a tool error the model can correct (SEP-1303).
        bad_args = await client.call_tool("talos_version", {"nodes": "not-a-list"})
        assert bad_args.is_error and bad_args.structured_content is None
        assert "expected a sequence" in bad_args.content[0].text
        # The session survives all of that.
        result = await client.call_tool("talos_hostname", {"nodes": ["127.0.10.12"]})
        assert result.structured_content["nodes"][0]["result"]["hostname"] == "talos-cp-2"


def test_http_session_lifecycle_and_guards(readonly):
    """A session ends with DELETE (204); requests after that are refused; a foreign Origin is
    refused before MCP sees it."""
    server = readonly.http()
    status, headers, body = post(server.url, initialize("2025-11-25"))
    assert status == 200, body
    session = headers["mcp-session-id"]
    request = urllib.request.Request(
        server.url, method="DELETE", headers={"Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 204
    status, _, _ = post(
        server.url,
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {"Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"},
    )
    assert status == 404, "a deleted session is gone"
    status, _, _ = post(server.url, initialize("2025-11-25"), {"Origin": "http://evil.example"})
    assert status == 403
    with urllib.request.urlopen(server.base + "/healthz", timeout=10) as response:
        assert response.status == 200
