//! `completion/complete` and MCP logging end to end: rmcp client → TalosMcp → talos-sim.

#![allow(clippy::unwrap_used, clippy::expect_used, deprecated)]

mod common;

use std::collections::HashMap;

use common::with_sim;
use rmcp::model::{
    CallToolRequestParams, CompletionContext, LoggingLevel, LoggingMessageNotificationParam,
    SetLevelRequestParams,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::json;
use talos_config::TalosConfig;
use talos_mcp::mcp_log::{LogHub, McpLogLayer, QUEUE_CAPACITY};
use talos_mcp::{Clusters, TalosMcp};
use talos_sim::{SimCluster, SimConfig};
use tracing_subscriber::layer::SubscriberExt as _;

fn context(pairs: &[(&str, &str)]) -> Option<CompletionContext> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Some(CompletionContext::with_arguments(map))
}

#[tokio::test]
async fn completes_contexts_nodes_hostnames_and_services() {
    let h = with_sim(SimConfig::default(), |_| {}).await;
    let c = &h.client;

    let info = c
        .complete_prompt_argument("diagnose_node", "context", "TAL", None)
        .await
        .unwrap();
    assert_eq!(info.values, vec!["talos-sim"]);

    // Addresses by prefix; hostnames are learnt from the nodes on the way.
    let info = c
        .complete_prompt_argument("diagnose_node", "node", "127.0.10.1", None)
        .await
        .unwrap();
    assert!(info.values.contains(&"127.0.10.11".to_owned()), "{info:?}");
    assert!(info.values.iter().all(|v| v.starts_with("127.0.10.1")));
    assert_eq!(info.has_more, Some(false));
    let info = c
        .complete_prompt_argument("diagnose_node", "node", "TALOS-CP", None)
        .await
        .unwrap();
    assert_eq!(info.values, vec!["talos-cp-1", "talos-cp-2", "talos-cp-3"]);
    assert_eq!(info.total, Some(3));

    // Resource templates complete their parameters too, with the context taken from the request.
    let info = c
        .complete_resource_argument(
            "talos://{context}/nodes/{node}/services",
            "node",
            "talos-w",
            context(&[("context", "talos-sim")]),
        )
        .await
        .unwrap();
    assert_eq!(info.values, vec!["talos-worker-1", "talos-worker-2"]);

    // The resources template completes all three of its parameters: COSI types (never a secret
    // one), and context and node like the other templates.
    let resources = "talos://{context}/nodes/{node}/resources/{resource_type}";
    let info = c
        .complete_resource_argument(resources, "resource_type", "mem", None)
        .await
        .unwrap();
    assert_eq!(
        info.values,
        vec![
            "Members.cluster.talos.dev",
            "MemoryModules.hardware.talos.dev"
        ]
    );
    for prefix in ["os", "machineconfig", "secret"] {
        let info = c
            .complete_resource_argument(resources, "resource_type", prefix, None)
            .await
            .unwrap();
        assert!(info.values.is_empty(), "{prefix}: {info:?}");
    }
    let info = c
        .complete_resource_argument(resources, "context", "t", None)
        .await
        .unwrap();
    assert_eq!(info.values, vec!["talos-sim"]);
    let info = c
        .complete_resource_argument(
            resources,
            "node",
            "talos-cp",
            context(&[("context", "talos-sim")]),
        )
        .await
        .unwrap();
    assert_eq!(info.values, vec!["talos-cp-1", "talos-cp-2", "talos-cp-3"]);
    // The other templates have no resource type to complete.
    let info = c
        .complete_resource_argument(
            "talos://{context}/nodes/{node}/services",
            "resource_type",
            "mem",
            None,
        )
        .await
        .unwrap();
    assert!(info.values.is_empty(), "{info:?}");

    // Services of the node named in the context, asked of that node.
    let info = c
        .complete_prompt_argument(
            "diagnose_node",
            "service",
            "ET",
            context(&[("node", "talos-cp-1")]),
        )
        .await
        .unwrap();
    assert_eq!(info.values, vec!["etcd"]);
    let all = c
        .complete_prompt_argument(
            "diagnose_node",
            "service",
            "",
            context(&[("node", "127.0.10.11")]),
        )
        .await
        .unwrap();
    assert!(all.values.contains(&"kubelet".to_owned()) && all.values.contains(&"apid".to_owned()));
}

#[tokio::test]
async fn completion_refusals_are_empty_not_errors() {
    let h = with_sim(SimConfig::default(), |_| {}).await;
    let c = &h.client;
    let empty = |info: rmcp::model::CompletionInfo| {
        assert!(info.values.is_empty(), "{info:?}");
    };
    // Unknown prompt, unknown template, an argument the prompt does not have, a free-text one.
    empty(
        c.complete_prompt_argument("no_such_prompt", "node", "", None)
            .await
            .unwrap(),
    );
    empty(
        c.complete_resource_argument("talos://{context}/nodes/{node}/secrets", "node", "", None)
            .await
            .unwrap(),
    );
    empty(
        c.complete_prompt_argument("cluster_health_review", "node", "", None)
            .await
            .unwrap(),
    );
    empty(
        c.complete_prompt_argument("apply_config_safely", "change", "", None)
            .await
            .unwrap(),
    );
    // An over-long value, and a service list for a node outside the context: nothing is called.
    empty(
        c.complete_prompt_argument("diagnose_node", "node", "1".repeat(10_000), None)
            .await
            .unwrap(),
    );
    empty(
        c.complete_prompt_argument(
            "diagnose_node",
            "service",
            "",
            context(&[("node", "192.0.2.1")]),
        )
        .await
        .unwrap(),
    );
    // A context that is not served.
    empty(
        c.complete_prompt_argument(
            "diagnose_node",
            "node",
            "",
            context(&[("context", "other")]),
        )
        .await
        .unwrap(),
    );
}

/// A client that hands every log message to the test.
#[derive(Clone)]
struct Logs(tokio::sync::mpsc::UnboundedSender<LoggingMessageNotificationParam>);

impl ClientHandler for Logs {
    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let _ = self.0.send(params);
    }
}

async fn sim_server() -> (TalosMcp, SimCluster, tempfile::TempDir) {
    let sim = SimCluster::start(SimConfig::default()).await.unwrap();
    let config = TalosConfig::from_yaml(&sim.talosconfig("os:admin").unwrap(), "<sim>").unwrap();
    let clusters = Clusters::from_talosconfig(
        config,
        None,
        talos_mcp::grpc_factory(talos_client::ClientSettings::default()),
    );
    let dir = tempfile::tempdir().unwrap();
    let server = TalosMcp::new(clusters, common::settings(&dir)).unwrap();
    (server, sim, dir)
}

async fn log_client(
    server: &TalosMcp,
) -> (
    RunningService<RoleClient, Logs>,
    tokio::sync::mpsc::UnboundedReceiver<LoggingMessageNotificationParam>,
) {
    let (server_io, client_io) = tokio::io::duplex(1 << 20);
    let server = server.for_session();
    tokio::spawn(async move {
        if let Ok(running) = server.serve(server_io).await {
            let _ = running.waiting().await;
        }
    });
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    (Logs(tx).serve(client_io).await.unwrap(), rx)
}

/// One test owns the process-wide hub: nothing else in this binary calls `logging/setLevel`.
#[tokio::test]
async fn logging_follows_the_level_and_never_sends_other_fields() {
    let hub = LogHub::global();
    let subscriber = tracing_subscriber::registry().with(McpLogLayer::new(hub.clone()).filtered());
    let _guard = tracing::subscriber::set_default(subscriber);
    let (server, _sim, _dir) = sim_server().await;
    let (client, mut rx) = log_client(&server).await;

    // Before setLevel nothing is sent.
    tracing::warn!(target: "talos_mcp::test", tool = "talos_version", "before setLevel");
    client
        .set_level(SetLevelRequestParams::new(LoggingLevel::Warning))
        .await
        .unwrap();
    assert_eq!(hub.listening(), 1);
    tracing::info!(target: "talos_mcp::test", "below the level");
    tracing::warn!(target: "other_crate", "not ours");
    tracing::warn!(
        target: "talos_mcp::test",
        tool = "talos_read_file",
        node = "10.9.9.9",
        path = "/var/secret-path",
        token = "SECRET-TOKEN",
        "first after setLevel"
    );
    let first = rx.recv().await.unwrap();
    assert_eq!(first.level, LoggingLevel::Warning);
    assert_eq!(first.logger.as_deref(), Some("talos-mcp"));
    assert_eq!(
        first.data,
        json!({"message": "first after setLevel", "tool": "talos_read_file"})
    );

    // Raising the level to error filters warnings out for this session.
    client
        .set_level(SetLevelRequestParams::new(LoggingLevel::Error))
        .await
        .unwrap();
    assert_eq!(hub.listening(), 1, "a second setLevel updates, not adds");
    tracing::warn!(target: "talos_mcp::test", "a warning now filtered");
    tracing::error!(target: "talos_mcp::test", "an error {}", "x".repeat(2000));
    let second = rx.recv().await.unwrap();
    assert_eq!(second.level, LoggingLevel::Error);
    let message = second.data["message"].as_str().unwrap();
    assert!(
        message.starts_with("an error xxx") && message.len() < 600,
        "clipped"
    );

    // A flood is dropped past the queue, counted, and does not block tool calls.
    let dropped = hub.dropped();
    for i in 0..(QUEUE_CAPACITY * 4) {
        tracing::error!(target: "talos_mcp::test", "flood {i}");
    }
    assert!(hub.dropped() >= dropped + (QUEUE_CAPACITY * 3) as u64);
    let version = client
        .call_tool(
            CallToolRequestParams::new("talos_version").with_arguments(
                json!({"nodes": ["127.0.10.11"]})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        )
        .await
        .unwrap();
    assert_ne!(version.is_error, Some(true));

    // A closed session leaves the hub.
    client.cancel().await.unwrap();
    for _ in 0..1000 {
        if hub.listening() == 0 {
            break;
        }
        tracing::error!(target: "talos_mcp::test", "after close");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(hub.listening(), 0);
}
