//! The stdio transport with a message over the line limit: answered, not dropped, and the
//! server goes on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use talos_sim::{SimCluster, SimConfig};

const BIN: &str = env!("CARGO_BIN_EXE_talos-mcp");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_long_stdio_line_is_answered_and_serving_goes_on() {
    let sim = SimCluster::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tc = dir.path().join("talosconfig");
    std::fs::write(&tc, sim.talosconfig("os:admin").unwrap()).unwrap();
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg("--talosconfig")
        .arg(&tc)
        .env_remove("RUST_LOG")
        .env("TALOS_MCP_AUDIT_LOG", "off")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut answers = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
            let done = v["id"] == 4;
            answers.push(v);
            if done {
                break;
            }
        }
        answers
    });
    let mut stdin = child.stdin.take().unwrap();
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}});
    writeln!(stdin, "{init}").unwrap();
    writeln!(
        stdin,
        "{}",
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
    )
    .unwrap();
    // 17 MiB of arguments, over the 16 MiB line limit, with the id at the start.
    let pad = "x".repeat(17 * 1024 * 1024);
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "talos_version", "arguments": {"pad": pad}}});
    writeln!(stdin, "{call}").unwrap();
    // An over-long line whose id cannot be read.
    let mut junk = vec![b'['; 17 * 1024 * 1024];
    junk.push(b'\n');
    stdin.write_all(&junk).unwrap();
    writeln!(
        stdin,
        "{}",
        json!({"jsonrpc": "2.0", "id": 4, "method": "tools/list"})
    )
    .unwrap();
    stdin.flush().unwrap();
    let answers = reader.join().unwrap();
    drop(stdin);
    let _ = child.wait();

    let errors: Vec<&Value> = answers
        .iter()
        .filter(|a| a.get("error").is_some())
        .collect();
    assert_eq!(errors.len(), 2, "{answers:#?}");
    assert_eq!(
        errors[0]["id"], 2,
        "the id at the start of the line is answered"
    );
    assert_eq!(errors[0]["error"]["code"], -32600);
    assert!(
        errors[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("longer than"),
        "{answers:#?}"
    );
    assert!(errors[1]["id"].is_null(), "{answers:#?}");
    let last = answers.last().unwrap();
    assert!(
        last["result"]["tools"].as_array().unwrap().len() > 20,
        "still serving"
    );
}
