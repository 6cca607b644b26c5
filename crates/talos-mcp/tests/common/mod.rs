//! Test harness: a TalosMcp server and an rmcp client connected in-process.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::{RoleClient, ServiceExt};
use serde_json::Value;
use talos_client::TalosApi;
use talos_config::TalosConfig;
use talos_mcp::{ApiFactory, Clusters, ServerSettings, TalosMcp};
use talos_sim::{SimCluster, SimConfig};

pub(crate) struct Harness {
    pub(crate) client: RunningService<RoleClient, ()>,
    pub(crate) sim: Option<SimCluster>,
    pub(crate) dir: tempfile::TempDir,
}

impl Harness {
    pub(crate) async fn call(&self, tool: &str, args: Value) -> CallToolResult {
        let params = CallToolRequestParams::new(tool.to_owned())
            .with_arguments(args.as_object().cloned().unwrap_or_default());
        self.client.call_tool(params).await.unwrap()
    }

    /// Calls a tool that must succeed and returns its structured content.
    pub(crate) async fn ok(&self, tool: &str, args: Value) -> Value {
        let r = self.call(tool, args).await;
        assert_ne!(r.is_error, Some(true), "{tool} failed: {}", text(&r));
        r.structured_content.clone().unwrap_or(Value::Null)
    }

    /// Calls a tool that must fail and returns its text.
    pub(crate) async fn err(&self, tool: &str, args: Value) -> String {
        let r = self.call(tool, args).await;
        assert_eq!(r.is_error, Some(true), "{tool} should fail: {}", text(&r));
        text(&r)
    }
}

pub(crate) fn text(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Serves `server` to an in-process client.
pub(crate) async fn connect(
    server: TalosMcp,
    sim: Option<SimCluster>,
    dir: tempfile::TempDir,
) -> Harness {
    let (server_io, client_io) = tokio::io::duplex(1 << 20);
    tokio::spawn(async move {
        if let Ok(running) = server.serve(server_io).await {
            let _ = running.waiting().await;
        }
    });
    let client = ().serve(client_io).await.unwrap();
    Harness { client, sim, dir }
}

pub(crate) fn settings(dir: &tempfile::TempDir) -> ServerSettings {
    ServerSettings {
        artifact_dir: dir.path().join("artifacts"),
        ..ServerSettings::default()
    }
}

/// A server against a fresh simulated cluster (3 control planes, 2 workers).
pub(crate) async fn with_sim(
    config: SimConfig,
    tweak: impl FnOnce(&mut ServerSettings),
) -> Harness {
    let sim = SimCluster::start(config).await.unwrap();
    let yaml = sim.talosconfig("os:admin").unwrap();
    let config = TalosConfig::from_yaml(&yaml, "<sim>").unwrap();
    let client_settings = talos_client::ClientSettings {
        timeout: std::time::Duration::from_secs(5),
        stream_idle_timeout: std::time::Duration::from_secs(5),
        backoff_base: std::time::Duration::from_millis(10),
        ..Default::default()
    };
    let clusters =
        Clusters::from_talosconfig(config, None, talos_mcp::grpc_factory(client_settings));
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(&dir);
    tweak(&mut s);
    let server = TalosMcp::new(clusters, s).unwrap();
    connect(server, Some(sim), dir).await
}

/// A resolved context with real (generated) credentials but mock behaviour.
pub(crate) fn mock_clusters(api: Arc<dyn TalosApi>, nodes: &[&str]) -> Clusters {
    let ca = talos_sim::pki::CertificateAuthority::generate("mock").unwrap();
    let client = ca
        .client_cert("os:admin", talos_sim::pki::Validity::Current)
        .unwrap();
    let yaml = talos_sim::pki::render_talosconfig(
        "mock",
        &[talos_sim::pki::TalosconfigContext {
            name: "mock",
            endpoints: vec!["10.5.0.2".into()],
            nodes: nodes.iter().map(|n| (*n).to_owned()).collect(),
            ca_pem: ca.cert_pem(),
            client: &client,
        }],
    );
    let ctx = TalosConfig::from_yaml(&yaml, "<mock>")
        .unwrap()
        .context(None)
        .unwrap();
    let factory: ApiFactory = Arc::new(move |_| Ok(api.clone()));
    Clusters::from_context(ctx, factory)
}

/// A server over a mock API.
pub(crate) async fn with_mock(
    api: Arc<dyn TalosApi>,
    nodes: &[&str],
    tweak: impl FnOnce(&mut ServerSettings),
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(&dir);
    tweak(&mut s);
    let server = TalosMcp::new(mock_clusters(api, nodes), s).unwrap();
    connect(server, None, dir).await
}
