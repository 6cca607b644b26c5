//! `talos-mcp demo`: a simulated cluster, and the server driven by a real MCP client.

// The demo's walk-through is its output.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use serde_json::json;
use talos_config::TalosConfig;
use talos_mcp::{Clusters, TalosMcp};
use talos_sim::{SimCluster, SimConfig};

use crate::cli::{DemoArgs, Global, ServerOpts};
use crate::{serve_stdio_or_http, wiring};

/// The simulated cluster and a talosconfig for it in a private temporary directory.
struct Sim {
    cluster: SimCluster,
    dir: tempfile::TempDir,
    talosconfig: std::path::PathBuf,
}

async fn start_sim(args: &DemoArgs) -> Result<Sim> {
    let cluster = SimCluster::start(SimConfig {
        control_planes: args.control_planes,
        workers: args.workers,
        ..SimConfig::default()
    })
    .await?;
    let dir = tempfile::Builder::new()
        .prefix("talos-mcp-demo")
        .tempdir()?;
    let talosconfig = dir.path().join("talosconfig");
    std::fs::write(&talosconfig, cluster.talosconfig("os:admin")?)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&talosconfig, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(Sim {
        cluster,
        dir,
        talosconfig,
    })
}

fn server_for(sim: &Sim, opts: &ServerOpts, transport: &str) -> Result<TalosMcp> {
    let mut opts = opts.clone();
    // Keep the demo's audit log and artifacts in its own directory unless told otherwise.
    opts.audit_log
        .get_or_insert_with(|| sim.dir.path().join("audit.log").display().to_string());
    opts.artifact_dir
        .get_or_insert_with(|| sim.dir.path().join("artifacts"));
    let config = TalosConfig::from_file(&sim.talosconfig)?;
    let metrics = std::sync::Arc::new(talos_mcp::metrics::Metrics::default());
    let clusters = Clusters::from_talosconfig(
        config,
        None,
        talos_mcp::grpc_factory(wiring::client_settings(&metrics)),
    );
    wiring::build_from_clusters(&opts, clusters, transport, metrics)
}

pub(crate) async fn run(global: &Global, args: &DemoArgs) -> Result<ExitCode> {
    let sim = start_sim(args)
        .await
        .context("starting the simulated cluster")?;
    if args.serve {
        eprintln!(
            "simulated cluster on {} ({} control planes, {} workers); talosconfig: {}",
            sim.cluster.endpoint(),
            args.control_planes,
            args.workers,
            sim.talosconfig.display()
        );
        let transport = if args.http.http.is_some() {
            "http"
        } else {
            "stdio"
        };
        let server = server_for(&sim, &args.server, transport)?;
        let _ = global;
        return serve_stdio_or_http(server, &args.http)
            .await
            .map(|()| ExitCode::SUCCESS);
    }
    walkthrough(&sim, &args.server).await
}

fn section(title: &str) {
    println!("\n\u{2192} {title}");
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn walkthrough(sim: &Sim, opts: &ServerOpts) -> Result<ExitCode> {
    let nodes = sim.cluster.nodes();
    println!(
        "talos-mcp demo: a simulated Talos cluster ({} nodes) serving the Talos API over mTLS on {}",
        nodes.len(),
        sim.cluster.endpoint()
    );
    println!(
        "talosconfig: {} (context talos-sim)",
        sim.talosconfig.display()
    );
    let server = server_for(sim, opts, "in-process")?;
    let (server_io, client_io) = tokio::io::duplex(1 << 20);
    tokio::spawn(async move {
        if let Ok(running) = server.serve(server_io).await {
            let _ = running.waiting().await;
        }
    });
    let client = ().serve(client_io).await?;

    section("initialize");
    if let Some(info) = client.peer_info() {
        let (name, version) = info
            .server_info
            .as_ref()
            .map_or(("?", "?"), |s| (s.name.as_str(), s.version.as_str()));
        println!(
            "  server {name} {version} (protocol {})",
            info.protocol_version
        );
    }

    section("tools/list");
    let tools = client.list_all_tools().await?;
    println!(
        "  {} tools (read-only tier; write and destructive tiers are off):",
        tools.len()
    );
    for chunk in tools.chunks(5) {
        println!(
            "  {}",
            chunk
                .iter()
                .map(|t| t.name.as_ref())
                .collect::<Vec<&str>>()
                .join(", ")
        );
    }

    let cp = nodes.first().map(|n| n.address.clone()).unwrap_or_default();
    let steps = [
        ("talos_version", json!({})),
        ("talos_etcd_status", json!({})),
        (
            "talos_service_logs",
            json!({"service": "etcd", "grep": "error", "tail": 3, "nodes": [cp.clone()]}),
        ),
        ("talos_reboot", json!({"node": cp})),
    ];
    let mut refused = false;
    for (tool, args) in steps {
        section(&format!("tools/call {tool} {args}"));
        let result = client
            .call_tool(
                CallToolRequestParams::new(tool)
                    .with_arguments(args.as_object().cloned().unwrap_or_default()),
            )
            .await?;
        let text: Vec<String> = result
            .content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.clone()))
            .collect();
        if result.is_error == Some(true) {
            println!("  isError: true");
            refused |= tool == "talos_reboot";
        }
        println!("{}", indent(&text.join("\n")));
    }
    let _ = client.cancel().await;
    println!(
        "\nThe reboot was {}. Enable tiers with --allow-write / --allow-destructive; see docs/security.md.",
        if refused {
            "refused because the destructive tier is off"
        } else {
            "NOT refused (unexpected)"
        }
    );
    let upgraded = upgrade_act(sim, opts).await?;
    println!("Connect your own MCP client: talos-mcp demo --serve            (stdio)");
    println!(
        "                             talos-mcp demo --serve --http 127.0.0.1:8080   (streamable HTTP on /mcp)"
    );
    sim.cluster.clone().shutdown().await;
    Ok(if refused && upgraded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The second act: with the destructive tier on, an upgrade of one worker is planned, confirmed
/// with its single-use token, run as an operation, and read back step by step.
async fn upgrade_act(sim: &Sim, opts: &ServerOpts) -> Result<bool> {
    let Some(worker) = sim
        .cluster
        .nodes()
        .into_iter()
        .find(|n| n.role == talos_sim::NodeRole::Worker)
    else {
        return Ok(true);
    };
    let mut opts = opts.clone();
    opts.allow_destructive = true;
    opts.confirm = "token".into();
    let server = server_for(sim, &opts, "in-process")?;
    let (server_io, client_io) = tokio::io::duplex(1 << 20);
    tokio::spawn(async move {
        if let Ok(running) = server.serve(server_io).await {
            let _ = running.waiting().await;
        }
    });
    let client = ().serve(client_io).await?;
    let call = |args: serde_json::Value| {
        CallToolRequestParams::new("talos_upgrade")
            .with_arguments(args.as_object().cloned().unwrap_or_default())
    };
    let args = json!({
        "node": worker.address,
        "image": "ghcr.io/siderolabs/installer:v1.12.0",
        "wait_timeout_seconds": 60,
    });
    println!(
        "\nNow with --allow-destructive (and --confirm token): upgrade {} to v1.12.0.",
        worker.hostname
    );
    section(&format!("tools/call talos_upgrade {args}"));
    let plan = client.call_tool(call(args.clone())).await?;
    println!("{}", indent(&text_of(&plan)));
    let token = plan
        .structured_content
        .as_ref()
        .and_then(|s| s.get("confirmation_token"))
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned);
    let Some(token) = token else {
        println!("  (no confirmation token in the plan; stopping here)");
        let _ = client.cancel().await;
        return Ok(false);
    };
    let mut confirmed = args;
    confirmed["confirmation_token"] = json!(token);
    section("tools/call talos_upgrade {…, \"confirmation_token\": \"…\"}");
    let done = client.call_tool(call(confirmed)).await?;
    println!("{}", indent(&text_of(&done)));
    let operation = done
        .meta
        .as_ref()
        .and_then(|m| m.0.get("talos-mcp/operation"))
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned);
    if let Some(id) = operation {
        section(&format!("tools/call talos_operations {{\"id\": \"{id}\"}}"));
        let read = client
            .call_tool(
                CallToolRequestParams::new("talos_operations")
                    .with_arguments(json!({"id": id}).as_object().cloned().unwrap_or_default()),
            )
            .await?;
        let steps = read
            .structured_content
            .as_ref()
            .and_then(|s| s.pointer("/operations/0/steps"))
            .and_then(serde_json::Value::as_array)
            .cloned()
            .unwrap_or_default();
        for step in steps {
            let at = step
                .get("at")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("");
            let message = step
                .get("message")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("");
            println!("  {at}  {message}");
        }
    }
    let _ = client.cancel().await;
    let on_target = done
        .structured_content
        .as_ref()
        .and_then(|s| s.pointer("/outcome/on_target"))
        .and_then(serde_json::Value::as_bool)
        == Some(true);
    println!(
        "\nThe upgrade {}. MCP clients with the Tasks extension get it as a task; see docs/operations.md.",
        if on_target {
            "ran as an operation and the node is back on v1.12.0"
        } else {
            "did NOT reach v1.12.0 (unexpected)"
        }
    );
    Ok(on_target)
}

/// The text blocks of a tool result.
fn text_of(result: &rmcp::model::CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}
