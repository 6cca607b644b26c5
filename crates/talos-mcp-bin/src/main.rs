//! The `talos-mcp` binary: CLI, transports (stdio, streamable HTTP), logging and wiring.
//! Everything else lives in the library crates.

// Start-up failures and the HTTP listen address are reported on stderr; stdout belongs to MCP.
#![allow(clippy::print_stderr)]

mod cli;
mod commands;
#[cfg(feature = "demo")]
mod demo;
mod http;
mod redis_state;
mod stdio;
#[cfg(feature = "otel")]
mod telemetry;
mod wiring;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use rmcp::ServiceExt;
use talos_mcp::TalosMcp;

use crate::cli::{Cli, Command, HttpOpts};

#[tokio::main]
async fn main() -> ExitCode {
    let args =
        match cli::args_with_config_file(std::env::args_os().collect(), |k| std::env::var_os(k)) {
            Ok(args) => args,
            Err(e) => {
                eprintln!("talos-mcp: {e}");
                return ExitCode::from(2);
            }
        };
    #[cfg_attr(not(feature = "demo"), allow(unused_mut))]
    let mut cli = Cli::parse_from(args);
    // The scripted demo prints to the terminal: keep library chatter out of it unless asked.
    #[cfg(feature = "demo")]
    if matches!(&cli.command, Command::Demo(d) if !d.serve) && cli.global.log_level == "info" {
        cli.global.log_level = "warn".into();
    }
    let telemetry = match wiring::init_logging(&cli.global) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("talos-mcp: {e:#}");
            return ExitCode::from(2);
        }
    };
    let code = match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("talos-mcp: {e:#}");
            ExitCode::FAILURE
        }
    };
    // Spans still buffered are sent before the process ends.
    if let Some(telemetry) = telemetry {
        telemetry.shutdown().await;
    }
    code
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match &cli.command {
        Command::Serve(args) => {
            let config = wiring::load_config(&cli.global)?;
            let transport = if args.http.http.is_some() {
                "http"
            } else {
                "stdio"
            };
            let server = wiring::build_server(&cli.global, &args.server, config, transport)?;
            wiring::check_shared_state(&server).await?;
            serve_stdio_or_http(server, &args.http).await?;
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "demo")]
        Command::Demo(args) => demo::run(&cli.global, args).await,
        Command::Tools { json } => commands::tools(*json),
        Command::Call(args) => commands::call(&cli.global, args).await,
        Command::Contexts => commands::contexts(&cli.global),
        Command::Check => commands::check(&cli.global).await,
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}

/// How long in-flight tool calls may take to finish after a shutdown signal.
pub(crate) const GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves over HTTP when an address is given, else over stdio until EOF or a signal.
pub(crate) async fn serve_stdio_or_http(server: TalosMcp, http: &HttpOpts) -> Result<()> {
    if let Some(addr) = http.http {
        let draining = server.clone();
        let result = http::serve(addr, server, http, shutdown_signal()).await;
        // Operations that changed nothing stop now; the others get the grace period.
        draining.cancel_operations().await;
        if draining.drain(GRACE).await {
            tracing::warn!("tool calls were still running after the grace period");
        }
        return result;
    }
    tracing::info!("serving MCP over stdio");
    let running = talos_mcp::Traced(server.clone())
        .serve(stdio::transport())
        .await?;
    let cancel = running.cancellation_token();
    tokio::select! {
        quit = running.waiting() => {
            tracing::info!(reason = ?quit, "stdio session ended");
            // Reads stopped with the session, and so do operations that changed nothing; a
            // change that had started gets the grace period to finish and be audited.
            server.cancel_operations().await;
            if server.drain(GRACE).await {
                tracing::warn!("tool calls were still running after the grace period");
            }
        }
        () = shutdown_signal() => {
            // In-flight calls get a grace period to finish before the session is cancelled.
            server.cancel_operations().await;
            if server.drain(GRACE).await {
                tracing::warn!("tool calls were still running after the grace period");
            }
            cancel.cancel();
        }
    }
    Ok(())
}
