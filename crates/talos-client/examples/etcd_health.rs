//! Checks etcd on the control-plane nodes of the current talosconfig context (or the nodes given
//! as arguments): every member answers, all agree on one leader, none reports errors, and no
//! alarm is raised. Exits non-zero otherwise.
//!
//! ```sh
//! cargo run -p talos-sim -- --talosconfig /tmp/sim-talosconfig &   # or use a real cluster
//! TALOSCONFIG=/tmp/sim-talosconfig cargo run -p talos-client --example etcd_health -- talos-cp-1 talos-cp-2 talos-cp-3
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)] // an example talks to its user

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::sync::Arc;

use talos_client::{CallOptions, Etcd as _, EtcdAlarmKind, GrpcTalosClient, fan_out};
use talos_config::TalosConfig;

#[tokio::main]
async fn main() -> ExitCode {
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
    let args: Vec<String> = std::env::args().skip(1).collect();
    let nodes = if args.is_empty() {
        context.nodes().to_vec()
    } else {
        args
    };
    if nodes.is_empty() {
        eprintln!("no nodes: pass the control-plane nodes as arguments");
        return ExitCode::FAILURE;
    }

    let mut healthy = true;
    let mut leaders = BTreeSet::new();
    let statuses = fan_out(&nodes, client.settings().fan_out_limit, |node| {
        let client = client.clone();
        async move { client.etcd_status(&CallOptions::node(node)).await }
    })
    .await;
    println!(
        "{:<16} {:>18} {:>18} {:>10}  ERRORS",
        "NODE", "MEMBER", "LEADER", "DB MiB"
    );
    for r in &statuses {
        match &r.result {
            Ok(s) => {
                leaders.insert(s.leader);
                healthy &= s.errors.is_empty();
                println!(
                    "{:<16} {:>18x} {:>18x} {:>10.1}  {}",
                    r.node,
                    s.member_id,
                    s.leader,
                    s.db_size as f64 / (1024.0 * 1024.0),
                    s.errors.join("; ")
                );
            }
            Err(e) => {
                healthy = false;
                println!("{:<16} error: {e}", r.node);
            }
        }
    }
    if leaders.len() > 1 || leaders.contains(&0) {
        healthy = false;
        println!("members disagree about the leader (or have none): {leaders:x?}");
    }

    // Membership and alarms are cluster-wide: ask the first node that answered.
    if let Some(first) = statuses.iter().find(|r| r.result.is_ok()) {
        let opts = CallOptions::node(first.node.clone());
        match client.etcd_members(&opts).await {
            Ok(members) => {
                println!("\n{} members:", members.len());
                for m in members {
                    let learner = if m.is_learner { " (learner)" } else { "" };
                    println!(
                        "  {:x} {}{learner} {}",
                        m.id,
                        m.hostname,
                        m.peer_urls.join(",")
                    );
                }
            }
            Err(e) => {
                healthy = false;
                println!("members: error: {e}");
            }
        }
        match client.etcd_alarms(&opts).await {
            Ok(alarms) => {
                for a in alarms.iter().filter(|a| a.alarm != EtcdAlarmKind::None) {
                    healthy = false;
                    println!("alarm on member {:x}: {:?}", a.member_id, a.alarm);
                }
            }
            Err(e) => {
                healthy = false;
                println!("alarms: error: {e}");
            }
        }
    }

    println!(
        "\netcd is {}",
        if healthy { "healthy" } else { "NOT healthy" }
    );
    if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
