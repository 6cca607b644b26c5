//! Tool-argument decoding and validation: any JSON object as the arguments of any tool (all
//! tiers enabled), through an in-process MCP session. Every call must end in a result or a
//! protocol error; nothing reaches a node (the Talos client factory refuses), nothing panics.
#![no_main]

use std::cell::RefCell;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::{RoleClient, ServiceExt};
use talos_config::TalosConfig;
use talos_mcp::safety::{ConfirmMode, SafetySettings};
use talos_mcp::{ApiFactory, Clusters, ServerSettings, TalosMcp};

struct Session {
    rt: tokio::runtime::Runtime,
    client: RunningService<RoleClient, ()>,
    tools: Vec<String>,
    _dir: tempfile::TempDir,
}

fn session() -> Session {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ca = talos_sim::pki::CertificateAuthority::generate("fuzz").unwrap();
    let cert = ca
        .client_cert("os:admin", talos_sim::pki::Validity::Current)
        .unwrap();
    let yaml = talos_sim::pki::render_talosconfig(
        "fuzz",
        &[talos_sim::pki::TalosconfigContext {
            name: "fuzz",
            endpoints: vec!["10.5.0.2".into()],
            nodes: vec!["10.5.0.2".into(), "10.5.0.3".into()],
            ca_pem: ca.cert_pem(),
            client: &cert,
        }],
    );
    let ctx = TalosConfig::from_yaml(&yaml, "<fuzz>")
        .unwrap()
        .context(None)
        .unwrap();
    let factory: ApiFactory = Arc::new(|_| {
        Err(talos_client::TalosError::Local {
            message: "the fuzz target has no cluster".into(),
        })
    });
    let dir = tempfile::tempdir().unwrap();
    let settings = ServerSettings {
        artifact_dir: dir.path().join("artifacts"),
        safety: Arc::new(SafetySettings {
            allow_write: true,
            allow_destructive: true,
            confirm: ConfirmMode::Token,
            ..SafetySettings::default()
        }),
        ..ServerSettings::default()
    };
    let server = TalosMcp::new(Clusters::from_context(ctx, factory), settings).unwrap();
    let (client, tools) = rt.block_on(async move {
        let (server_io, client_io) = tokio::io::duplex(1 << 20);
        tokio::spawn(async move {
            if let Ok(running) = server.serve(server_io).await {
                let _ = running.waiting().await;
            }
        });
        let client = ().serve(client_io).await.unwrap();
        let tools = client
            .list_all_tools()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.name.to_string())
            .collect::<Vec<_>>();
        (client, tools)
    });
    Session {
        rt,
        client,
        tools,
        _dir: dir,
    }
}

thread_local! {
    static SESSION: RefCell<Option<Session>> = const { RefCell::new(None) };
}

fuzz_target!(|data: &[u8]| {
    let Some((pick, json)) = data.split_first() else {
        return;
    };
    let Ok(serde_json::Value::Object(args)) = serde_json::from_slice::<serde_json::Value>(json)
    else {
        return;
    };
    SESSION.with(|cell| {
        let mut slot = cell.borrow_mut();
        let s = slot.get_or_insert_with(session);
        let tool = s.tools[usize::from(*pick) % s.tools.len()].clone();
        let params = CallToolRequestParams::new(tool).with_arguments(args);
        let outcome = s.rt.block_on(s.client.call_tool(params));
        match outcome {
            // A tool result (success or isError) must carry text.
            Ok(result) => assert!(!result.content.is_empty(), "a result without content"),
            // Invalid params are a JSON-RPC error; a closed session would mean the server died.
            Err(rmcp::ServiceError::McpError(_)) => {}
            Err(e) => panic!("the session broke: {e}"),
        }
    });
});
