//! One-shot commands: tools, call, contexts, check.

// These commands print their answer to stdout: it is their output, not a transport.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use talos_client::{CallOptions, GrpcTalosClient, NodeInfo as _};
use talos_config::Context;
use talos_mcp::TalosMcp;

use crate::cli::{CallArgs, Global};
use crate::wiring;

pub(crate) fn tools(json: bool) -> Result<ExitCode> {
    let all = talos_mcp::Registry::get().all();
    if json {
        let list: Vec<serde_json::Value> = all
            .iter()
            .map(|def| {
                let mut v = serde_json::to_value(&def.listing).unwrap_or_default();
                if let serde_json::Value::Object(map) = &mut v {
                    map.insert("tier".into(), serde_json::json!(def.tier.as_str()));
                    map.insert("toolset".into(), serde_json::json!(def.toolset.as_str()));
                    map.insert(
                        "tierDependsOnArguments".into(),
                        serde_json::json!(def.tier_depends_on_arguments),
                    );
                }
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        println!(
            "{:<32} {:<12} {:<11} DESCRIPTION",
            "TOOL", "TOOLSET", "TIER"
        );
        for def in all {
            let desc = def.listing.description.as_deref().unwrap_or_default();
            let first = desc.split(". ").next().unwrap_or(desc);
            println!(
                "{:<32} {:<12} {:<11} {first}",
                def.name,
                def.toolset.as_str(),
                def.tier.as_str()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs one tool through an in-process MCP session, exactly as a client would.
pub(crate) async fn call(global: &Global, args: &CallArgs) -> Result<ExitCode> {
    let arguments: serde_json::Value =
        serde_json::from_str(&args.args).context("--args must be a JSON object")?;
    let arguments = arguments
        .as_object()
        .cloned()
        .context("--args must be a JSON object")?;
    let config = wiring::load_config(global)?;
    let server = wiring::build_server(global, &args.server, config, "cli")?;
    let result = call_in_process(server, &args.tool, arguments).await?;
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(if result.is_error == Some(true) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Serves `server` to an in-process client and calls one tool.
pub(crate) async fn call_in_process(
    server: TalosMcp,
    tool: &str,
    arguments: serde_json::Map<String, serde_json::Value>,
) -> Result<rmcp::model::CallToolResult> {
    let (server_io, client_io) = tokio::io::duplex(1 << 20);
    tokio::spawn(async move {
        if let Ok(running) = server.serve(server_io).await {
            let _ = running.waiting().await;
        }
    });
    let client = ().serve(client_io).await?;
    let result = client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments))
        .await
        .with_context(|| format!("calling {tool}"))?;
    let _ = client.cancel().await;
    Ok(result)
}

pub(crate) fn contexts(global: &Global) -> Result<ExitCode> {
    let config = wiring::load_config(global)?;
    println!("talosconfig: {}", config.path().display());
    println!(
        "{:<3}{:<24} {:<12} {:<40} NODES",
        "", "CONTEXT", "AUTH", "ENDPOINTS"
    );
    let served =
        |name: &str| global.contexts.is_empty() || global.contexts.iter().any(|c| c == name);
    for s in config.summaries().into_iter().filter(|s| served(&s.name)) {
        println!(
            "{:<3}{:<24} {:<12} {:<40} {}",
            if s.current { "*" } else { "" },
            s.name,
            s.auth,
            s.endpoints.join(","),
            s.nodes.join(",")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Resolves every context and asks every endpoint for its version.
pub(crate) async fn check(global: &Global) -> Result<ExitCode> {
    let config = wiring::load_config(global)?;
    println!("talosconfig: {}", config.path().display());
    println!(
        "{:<24} {:<28} {:<8} DETAIL",
        "CONTEXT", "ENDPOINT", "STATUS"
    );
    let mut failed = false;
    for name in config
        .context_names()
        .into_iter()
        .filter(|n| global.contexts.is_empty() || global.contexts.contains(n))
    {
        let ctx = match config.context(Some(&name)) {
            Ok(c) => c,
            Err(e) => {
                failed = true;
                println!("{name:<24} {:<28} {:<8} {e}", "-", "INVALID");
                continue;
            }
        };
        for endpoint in ctx.endpoints() {
            // The endpoint alone, reached the way the context reaches it (its proxy included).
            let mut single = Context::builder(name.clone(), ctx.credentials().clone())
                .endpoint(endpoint.to_string());
            if let Some(proxy) = ctx.proxy() {
                single = single.proxy(proxy.clone());
            }
            let single = single.build()?;
            let outcome = match GrpcTalosClient::new(&single) {
                Ok(client) => client
                    .version(
                        &CallOptions::endpoint().with_timeout(std::time::Duration::from_secs(10)),
                    )
                    .await
                    .map(|v| format!("Talos {} ({}/{})", v.tag, v.os, v.arch))
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match outcome {
                Ok(detail) => println!(
                    "{name:<24} {:<28} {:<8} {detail}",
                    endpoint.to_string(),
                    "OK"
                ),
                Err(e) => {
                    failed = true;
                    println!(
                        "{name:<24} {:<28} {:<8} {e}",
                        endpoint.to_string(),
                        "FAILED"
                    );
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
