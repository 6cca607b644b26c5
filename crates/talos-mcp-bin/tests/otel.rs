//! OpenTelemetry traces end to end: the real binary against the simulated cluster exports to an
//! OTLP/gRPC receiver started here. The client's trace context (the HTTP `traceparent` header,
//! `params._meta.traceparent`) parents the spans; the tree is request → tool call → Talos RPC;
//! audit lines name the trace; a failing node's RPC span carries its gRPC code, retries and error
//! kind; no attribute carries an argument value or a planted secret.

#![cfg(feature = "otel")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use serde_json::{Value, json};
use talos_sim::{SimCluster, SimConfig};

const BIN: &str = env!("CARGO_BIN_EXE_talos-mcp");

/// What the receiver got.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Starts the receiver on a loopback port.
async fn receiver() -> (Receiver, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got = Receiver::default();
    let service = TraceServiceServer::new(got.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (got, addr)
}

/// One exported span, flattened.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace: String,
    id: String,
    parent: String,
    attributes: HashMap<String, String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

fn spans(got: &Receiver) -> Vec<Span> {
    let mut out = Vec::new();
    for request in got.0.lock().unwrap().iter() {
        for rs in &request.resource_spans {
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    out.push(Span {
                        name: s.name.clone(),
                        trace: hex(&s.trace_id),
                        id: hex(&s.span_id),
                        parent: hex(&s.parent_span_id),
                        attributes: attributes(&s.attributes),
                    });
                }
            }
        }
    }
    out
}

/// Every text the receiver got, attribute values and event fields included.
fn everything(got: &Receiver) -> String {
    format!("{:?}", got.0.lock().unwrap())
}

/// One HTTP exchange with `/mcp`: status, lower-cased headers, body.
fn post(
    addr: SocketAddr,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let mut all = vec![("Accept", "application/json, text/event-stream")];
    all.extend_from_slice(headers);
    common::http(addr, "POST", "/mcp", &all, body)
}

/// The JSON-RPC answer in a JSON or SSE body.
fn answer(body: &str) -> Value {
    if let Ok(v) = serde_json::from_str(body) {
        return v;
    }
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|v| v.get("id").is_some() && v.get("method").is_none())
        .unwrap_or(Value::Null)
}

/// The W3C example trace context, and a second one for `_meta`.
const HEADER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const HEADER_PARENT: &str = "b7ad6b7169203331";
const META_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const META_PARENT: &str = "00f067aa0ba902b7";
/// Values the model sets that must never reach a trace.
const PLANTED_PATH: &str = "/var/log/otel-canary-path-5c1d";
const PLANTED_SECRET: &str = "otel-canary-secret-9e27b4";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_follow_the_client_trace_and_carry_no_argument_values() {
    let sim = SimCluster::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tc = dir.path().join("talosconfig");
    std::fs::write(&tc, sim.talosconfig("os:admin").unwrap()).unwrap();
    let audit = dir.path().join("audit.jsonl");
    let node = sim.nodes()[0].address.clone();
    let (got, otlp) = receiver().await;

    let mut c = Command::new(BIN);
    c.env_remove("RUST_LOG");
    for (k, _) in std::env::vars() {
        if k.starts_with("TALOS_MCP_") || k.starts_with("OTEL_") {
            c.env_remove(k);
        }
    }
    let mut child: Child = c
        .args(["serve", "--talosconfig", &tc.display().to_string()])
        .args([
            "--http",
            "127.0.0.1:0",
            "--allow-write",
            "--log-level",
            "warn",
        ])
        .args(["--audit-log", &audit.display().to_string()])
        .args(["--otlp-endpoint", &format!("http://{otlp}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let addr: SocketAddr = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "server exited");
        if let Some(rest) = line.trim().strip_prefix("listening on http://") {
            break rest.trim_end_matches("/mcp").parse().unwrap();
        }
    };
    let log = Arc::new(Mutex::new(String::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            sink.lock().unwrap().push_str(&line);
            sink.lock().unwrap().push('\n');
        }
    });

    let requests = tokio::task::spawn_blocking(move || {
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "otel-test", "version": "1"}}});
        let (status, headers, body) = post(addr, &[], &init.to_string());
        assert_eq!(status, 200, "{body}");
        let session = headers
            .iter()
            .find(|(k, _)| k == "mcp-session-id")
            .map(|(_, v)| v.clone())
            .unwrap();
        let traceparent = format!("00-{HEADER_TRACE}-{HEADER_PARENT}-01");
        let with_session = [("Mcp-Session-Id", session.as_str())];
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        post(addr, &with_session, &note.to_string());
        let call = |id: u64, params: Value, traced: bool| {
            let body =
                json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params});
            let mut headers = with_session.to_vec();
            if traced {
                headers.push(("traceparent", traceparent.as_str()));
            }
            let (status, _, text) = post(addr, &headers, &body.to_string());
            assert_eq!(status, 200, "{text}");
            answer(&text)
        };
        // The HTTP header's trace context.
        let version = call(1, json!({"name": "talos_version", "arguments": {}}), true);
        assert_eq!(version["result"]["isError"], false, "{version}");
        // `_meta.traceparent` wins over the header.
        let read = call(
            2,
            json!({"name": "talos_read_file", "arguments": {"path": PLANTED_PATH, "nodes": [node]},
                   "_meta": {"traceparent": format!("00-{META_TRACE}-{META_PARENT}-01")}}),
            true,
        );
        assert!(read["result"].is_object(), "{read}");
        // A dry run with a secret in the config: planned, not applied.
        let config =
            format!("version: v1alpha1\nmachine:\n  type: worker\n  token: {PLANTED_SECRET}\n");
        let apply = call(
            3,
            json!({"name": "talos_apply_config", "arguments": {"node": node, "config": config, "dry_run": true}}),
            false,
        );
        assert!(apply["result"].is_object(), "{apply}");
        session
    });
    let session = requests.await.unwrap();
    // A node that answers Unavailable: the read is retried, and the RPC span says so.
    let down = sim.nodes()[1].address.clone();
    sim.set_fault(&down, talos_sim::Fault::Unavailable);
    let target = down.clone();
    let failing = tokio::task::spawn_blocking(move || {
        let body = json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {
            "name": "talos_hostname", "arguments": {"nodes": [target]}}});
        let (status, _, text) = post(addr, &[("Mcp-Session-Id", &session)], &body.to_string());
        assert_eq!(status, 200, "{text}");
        answer(&text)
    });
    let failed = failing.await.unwrap();
    assert!(failed["result"].is_object(), "{failed}");

    // SIGTERM: the server flushes its spans before it exits.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server did not stop: {}", log.lock().unwrap());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let spans = spans(&got);
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    // The header's trace: HTTP request span → tool call → Talos RPC.
    let tool = |name: &str| {
        spans
            .iter()
            .find(|s| s.attributes.get("gen_ai.tool.name").map(String::as_str) == Some(name))
            .unwrap_or_else(|| panic!("no tools/call span for {name}: {names:?}"))
            .clone()
    };
    let version = tool("talos_version");
    assert_eq!(version.name, "tools/call");
    assert_eq!(version.trace, HEADER_TRACE, "{version:?}");
    let request = spans
        .iter()
        .find(|s| s.id == version.parent)
        .unwrap_or_else(|| panic!("the tool call's parent was not exported: {spans:#?}"));
    assert_eq!(request.name, "POST /mcp");
    assert_eq!(request.parent, HEADER_PARENT, "{request:?}");
    assert_eq!(request.attributes["http.response.status_code"], "200");
    assert_eq!(version.attributes["talos.tier"], "read");
    assert_eq!(version.attributes["talos.outcome"], "ok");
    assert_eq!(version.attributes["mcp.transport"], "http");
    let nodes: usize = version.attributes["talos.nodes"].parse().unwrap();
    assert!(nodes > 0, "{version:?}");
    let rpcs: Vec<&Span> = spans
        .iter()
        .filter(|s| s.parent == version.id && s.name == "machine.MachineService/version")
        .collect();
    assert_eq!(rpcs.len(), nodes, "one Talos RPC per node: {spans:#?}");
    for rpc in &rpcs {
        assert_eq!(rpc.trace, HEADER_TRACE);
        assert_eq!(rpc.attributes["rpc.grpc.status_code"], "0", "{rpc:?}");
        assert_eq!(rpc.attributes["rpc.system"], "grpc");
        assert_eq!(rpc.attributes["talos.retries"], "0");
        assert!(rpc.attributes.contains_key("talos.node"), "{rpc:?}");
        assert!(
            rpc.attributes["server.address"].contains("127.0.0.1"),
            "{rpc:?}"
        );
    }
    // The failing node's RPC: its gRPC code (14, Unavailable), its retries, its error kind.
    let hostname = tool("talos_hostname");
    assert_ne!(hostname.attributes["talos.outcome"], "ok", "{hostname:?}");
    let rpc = spans
        .iter()
        .find(|s| s.parent == hostname.id && s.name == "machine.MachineService/hostname")
        .unwrap_or_else(|| panic!("no hostname RPC span: {spans:#?}"));
    assert_eq!(rpc.attributes["talos.node"], down, "{rpc:?}");
    assert_eq!(rpc.attributes["rpc.grpc.status_code"], "14", "{rpc:?}");
    assert_ne!(rpc.attributes["talos.retries"], "0", "{rpc:?}");
    assert!(!rpc.attributes["error.kind"].is_empty(), "{rpc:?}");
    // `_meta.traceparent` parents the read's tool call span.
    let read = tool("talos_read_file");
    assert_eq!(read.trace, META_TRACE, "{read:?}");
    assert_eq!(read.parent, META_PARENT, "{read:?}");
    // Without any trace context the call starts a trace of its own.
    let apply = tool("talos_apply_config");
    assert_ne!(apply.trace, HEADER_TRACE);
    assert_ne!(apply.trace, META_TRACE);

    // Each audit line names its call's trace.
    let lines: Vec<Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let trace_of = |tool: &str| {
        lines
            .iter()
            .filter(|l| l["tool"] == tool && l["phase"] == "finished")
            .map(|l| l["trace_id"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(trace_of("talos_version"), [HEADER_TRACE]);
    assert_eq!(trace_of("talos_read_file"), [META_TRACE]);
    assert_eq!(trace_of("talos_apply_config"), [apply.trace.as_str()]);

    // No argument value or secret anywhere in what was exported.
    let all = everything(&got);
    assert!(!all.contains(PLANTED_PATH), "the file path reached a trace");
    assert!(
        !all.contains("otel-canary-path"),
        "the file path reached a trace"
    );
    assert!(!all.contains(PLANTED_SECRET), "the secret reached a trace");
    assert!(
        !all.contains("otel-canary-secret"),
        "the secret reached a trace"
    );
    drop(sim);
}

/// Over stdio every MCP request gets a span named by its method, parented by its
/// `_meta.traceparent`; a tool call's Talos RPCs are its children; an unknown method's name is
/// never recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_requests_get_spans_parented_by_their_meta() {
    let sim = SimCluster::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tc = dir.path().join("talosconfig");
    std::fs::write(&tc, sim.talosconfig("os:admin").unwrap()).unwrap();
    let (got, otlp) = receiver().await;
    let mut c = Command::new(BIN);
    c.env_remove("RUST_LOG");
    for (k, _) in std::env::vars() {
        if k.starts_with("TALOS_MCP_") || k.starts_with("OTEL_") {
            c.env_remove(k);
        }
    }
    let mut child: Child = c
        .args(["serve", "--talosconfig", &tc.display().to_string()])
        .args(["--audit-log", "off", "--log-level", "warn"])
        .args(["--otlp-endpoint", &format!("http://{otlp}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let talk = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let mut send = |v: Value, answered: bool| {
            writeln!(stdin, "{v}").unwrap();
            if answered {
                let line = lines.next().unwrap().unwrap();
                serde_json::from_str::<Value>(&line).unwrap()
            } else {
                Value::Null
            }
        };
        send(
            json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "otel-stdio", "version": "1"}}}),
            true,
        );
        send(
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            false,
        );
        let meta = json!({"traceparent": format!("00-{META_TRACE}-{META_PARENT}-01")});
        let list = send(
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": meta}}),
            true,
        );
        assert!(list["result"]["tools"].is_array(), "{list}");
        let version = send(
            json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
                "name": "talos_version", "arguments": {}, "_meta": meta}}),
            true,
        );
        assert_eq!(version["result"]["isError"], false, "{version}");
        let unknown = send(
            json!({"jsonrpc": "2.0", "id": 3, "method": "x/method-canary-71c2", "params": {"_meta": meta}}),
            true,
        );
        assert!(unknown["error"].is_object(), "{unknown}");
        // EOF ends the session; the server flushes its spans and exits.
        drop(stdin);
    });
    talk.await.unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server did not stop after EOF");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let spans = spans(&got);
    let list = spans
        .iter()
        .find(|s| s.name == "tools/list")
        .unwrap_or_else(|| panic!("no tools/list span: {spans:#?}"));
    assert_eq!(list.trace, META_TRACE);
    assert_eq!(list.parent, META_PARENT);
    assert_eq!(list.attributes["mcp.transport"], "stdio");
    let call = spans
        .iter()
        .find(|s| s.name == "tools/call")
        .unwrap_or_else(|| panic!("no tools/call span: {spans:#?}"));
    assert_eq!(call.trace, META_TRACE);
    assert_eq!(call.parent, META_PARENT);
    assert_eq!(call.attributes["gen_ai.tool.name"], "talos_version");
    assert!(
        spans
            .iter()
            .any(|s| s.parent == call.id && s.name == "machine.MachineService/version"),
        "{spans:#?}"
    );
    assert!(!everything(&got).contains("method-canary"), "{spans:#?}");
    drop(sim);
}
