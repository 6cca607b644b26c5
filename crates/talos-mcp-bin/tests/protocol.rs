//! Protocol negotiation over stdio with raw JSON-RPC, for every revision rmcp knows (the oldest,
//! 2024-11-05, to the newest, 2026-07-28): handshake revisions are echoed by `initialize`; the
//! stateless revision is offered by `server/discover` and carried by each request's `_meta`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use rmcp::model::ProtocolVersion;
use serde_json::{Value, json};
use talos_sim::{SimCluster, SimConfig};

const BIN: &str = env!("CARGO_BIN_EXE_talos-mcp");

/// Sends `messages` to a fresh `talos-mcp serve` over stdio and returns the answers to the
/// requests among them (by id), after closing stdin.
fn exchange(talosconfig: &str, messages: &[Value]) -> Vec<Value> {
    let mut child = Command::new(BIN)
        .args(["serve", "--talosconfig", talosconfig, "--audit-log", "off"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let expected = messages.iter().filter(|m| m.get("id").is_some()).count();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut answers = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
            if v.get("id").is_some() && v.get("method").is_none() {
                answers.push(v);
            }
            if answers.len() == expected {
                break;
            }
        }
        answers
    });
    let mut stdin = child.stdin.take().unwrap();
    for m in messages {
        writeln!(stdin, "{m}").unwrap();
    }
    stdin.flush().unwrap();
    let answers = reader.join().unwrap();
    drop(stdin);
    let _ = child.wait();
    answers
}

fn initialize(version: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}})
}

fn hostname_call(id: u64, meta: Option<Value>) -> Value {
    let mut params = json!({"name": "talos_hostname", "arguments": {"nodes": ["127.0.10.12"]}});
    if let Some(meta) = meta {
        params["_meta"] = meta;
    }
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params})
}

fn answered_hostname(answer: &Value) -> &Value {
    &answer["result"]["structuredContent"]["nodes"][0]["result"]["hostname"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_known_protocol_revision_negotiates() {
    let sim = SimCluster::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("talosconfig");
    std::fs::write(&path, sim.talosconfig("os:reader").unwrap()).unwrap();
    let tc = path.display().to_string();

    let known = ProtocolVersion::KNOWN_VERSIONS;
    assert_eq!(known.first(), Some(&ProtocolVersion::V_2024_11_05));
    assert_eq!(known.last(), Some(&ProtocolVersion::V_2026_07_28));
    let mut covered = Vec::new();
    for version in known {
        let v = version.as_str();
        if version.has_initialize() {
            let answers = exchange(
                &tc,
                &[
                    initialize(v),
                    json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
                    hostname_call(2, None),
                ],
            );
            assert_eq!(answers[0]["result"]["protocolVersion"], v, "{answers:?}");
            assert_eq!(answers[0]["result"]["serverInfo"]["name"], "talos-mcp");
            assert_eq!(
                answered_hostname(&answers[1]),
                "talos-cp-2",
                "{v}: {answers:?}"
            );
        } else {
            let meta = json!({
                "io.modelcontextprotocol/protocolVersion": v,
                "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
                "io.modelcontextprotocol/clientCapabilities": {},
            });
            let answers = exchange(
                &tc,
                &[
                    json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": meta}}),
                    hostname_call(2, Some(meta.clone())),
                ],
            );
            let supported: Vec<&str> = answers[0]["result"]["supportedVersions"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let all: Vec<&str> = known.iter().map(ProtocolVersion::as_str).collect();
            assert_eq!(supported, all, "{answers:?}");
            assert_eq!(
                answered_hostname(&answers[1]),
                "talos-cp-2",
                "{v}: {answers:?}"
            );
            assert_eq!(answers[1]["result"]["resultType"], "complete");
        }
        covered.push(v);
    }
    assert_eq!(covered.len(), known.len());

    // Offers the server cannot take are answered with its newest handshake revision.
    for offer in [
        "2023-01-01",
        "2099-12-31",
        ProtocolVersion::V_2026_07_28.as_str(),
    ] {
        let answers = exchange(&tc, &[initialize(offer)]);
        assert_eq!(
            answers[0]["result"]["protocolVersion"],
            ProtocolVersion::LATEST_WITH_INITIALIZE.as_str(),
            "offer {offer}: {answers:?}"
        );
    }
}
