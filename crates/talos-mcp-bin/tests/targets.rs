//! The binary's `--contexts` and `--max-nodes` flags reach the server and the commands.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use serde_json::Value;
use talos_sim::{SimCluster, SimConfig};

const BIN: &str = env!("CARGO_BIN_EXE_talos-mcp");

fn talos_mcp(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).env_remove("RUST_LOG");
    for (k, _) in std::env::vars() {
        if k.starts_with("TALOS_MCP_") {
            c.env_remove(k);
        }
    }
    c.env("TALOS_MCP_AUDIT_LOG", "off");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contexts_and_max_nodes_flags() {
    let sim = SimCluster::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("talosconfig");
    std::fs::write(&path, sim.talosconfig("os:admin").unwrap()).unwrap();
    let tc = path.display().to_string();
    let three = r#"{"nodes":["127.0.10.11","127.0.10.12","127.0.10.13"]}"#;

    let out = talos_mcp(&[
        "call",
        "talos_version",
        "--args",
        three,
        "--talosconfig",
        &tc,
    ])
    .args(["--max-nodes", "2"])
    .output()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success()
            && text.contains("more than 2 distinct nodes")
            && text.contains("--max-nodes"),
        "{text}"
    );
    let out = talos_mcp(&[
        "call",
        "talos_version",
        "--args",
        three,
        "--talosconfig",
        &tc,
    ])
    .args(["--max-nodes", "3", "--contexts", "talos-sim"])
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        result["structuredContent"]["nodes"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // A served context that does not exist, or a default outside the served ones, stops it.
    let out = talos_mcp(&[
        "call",
        "talos_version",
        "--talosconfig",
        &tc,
        "--contexts",
        "prod",
    ])
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("`prod` is not in the talosconfig"),
        "{err}"
    );
    let out = talos_mcp(&["call", "talos_version", "--talosconfig", &tc])
        .args(["--contexts", "talos-sim", "--context", "prod"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--context prod is not one of --contexts"),
        "{err}"
    );

    // The contexts command lists only served contexts.
    let out = talos_mcp(&["contexts", "--talosconfig", &tc, "--contexts", "talos-sim"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("talos-sim"));
    let out = talos_mcp(&["contexts", "--talosconfig", &tc, "--contexts", "other"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("talos-sim"));
}
