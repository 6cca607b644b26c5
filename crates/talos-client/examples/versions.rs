//! Uses talos-client on its own: reads the talosconfig the way talosctl does and prints the
//! Talos version of every node of the current context (or of the nodes given as arguments).
//!
//! ```sh
//! cargo run -p talos-sim -- --talosconfig /tmp/sim-talosconfig &   # or use a real cluster
//! TALOSCONFIG=/tmp/sim-talosconfig cargo run -p talos-client --example versions
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)] // an example talks to its user

use std::process::ExitCode;
use std::sync::Arc;

use talos_client::{CallOptions, GrpcTalosClient, NodeInfo, fan_out};
use talos_config::TalosConfig;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let context = match TalosConfig::load(None).and_then(|config| config.context(None)) {
        Ok(context) => context,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let client = match GrpcTalosClient::new(&context) {
        Ok(client) => Arc::new(client),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let nodes = if args.is_empty() {
        context.nodes().to_vec()
    } else {
        args
    };
    if nodes.is_empty() {
        eprintln!(
            "context `{}` has no nodes; pass node addresses as arguments",
            context.name()
        );
        return ExitCode::FAILURE;
    }
    let limit = client.settings().fan_out_limit;
    let results = fan_out(&nodes, limit, |node| {
        let client = client.clone();
        async move { client.version(&CallOptions::node(node)).await }
    })
    .await;
    let mut failed = false;
    for r in results {
        match r.result {
            Ok(v) => println!("{:<16} {} ({}/{})", r.node, v.tag, v.os, v.arch),
            Err(e) => {
                failed = true;
                println!("{:<16} error: {e}", r.node);
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
