//! Long-running calls of a client without the Tasks extension (the in-process rmcp client)
//! are recorded as operations in the store the operator's settings name: steps, commit, the
//! result, and the operation id in the result.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use talos_mcp::operations::{InMemoryStore, OperationState, OperationStore};
use talos_mcp::safety::{ConfirmMode, SafetySettings};
use talos_sim::SimConfig;

const W1: &str = "127.0.10.14";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synchronous_reboot_is_recorded_in_the_configured_store() {
    let store = Arc::new(InMemoryStore::new(Duration::from_secs(60), 16));
    let shared: Arc<dyn OperationStore> = store.clone();
    let h = common::with_sim(
        SimConfig {
            reboot_downtime: Duration::from_millis(500),
            ..SimConfig::default()
        },
        |s| {
            s.safety = Arc::new(SafetySettings {
                allow_destructive: true,
                confirm: ConfirmMode::None,
                ..SafetySettings::default()
            });
            s.operation_store = Some(shared);
        },
    )
    .await;
    let r = h
        .call(
            "talos_reboot",
            json!({"node": W1, "wait": true, "wait_timeout_seconds": 30}),
        )
        .await;
    assert_ne!(r.is_error, Some(true), "{}", common::text(&r));
    let id = r.meta.as_ref().unwrap().0["talos-mcp/operation"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(common::text(&r).contains(&id));

    let records = store.list(None, 10).await.unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
    let op = &records[0];
    assert_eq!(op.id, id);
    assert_eq!(op.tool, "talos_reboot");
    assert_eq!(op.state, OperationState::Completed);
    assert!(op.committed && !op.task && op.finished_at.is_some());
    assert!(
        op.steps
            .iter()
            .any(|s| s.message.contains("back with a new boot id")),
        "{:?}",
        op.steps
    );
    assert_eq!(
        op.result.as_ref().unwrap()["structuredContent"],
        r.structured_content.clone().unwrap()
    );
}

/// `talos_operations` is listed only when a long-running tool is: the read-only list does not
/// grow.
#[test]
fn the_operations_tool_is_listed_only_with_a_long_running_tool() {
    let listed = |allow_destructive: bool| {
        let dir = tempfile::tempdir().unwrap();
        let settings = talos_mcp::ServerSettings {
            safety: Arc::new(SafetySettings {
                allow_destructive,
                ..SafetySettings::default()
            }),
            ..common::settings(&dir)
        };
        let api = Arc::new(talos_client::MockTalosApi::new());
        talos_mcp::TalosMcp::new(common::mock_clusters(api, &["10.5.0.2"]), settings)
            .unwrap()
            .tools()
            .iter()
            .map(|t| t.name.to_string())
            .collect::<Vec<_>>()
    };
    let read_only = listed(false);
    assert!(!read_only.iter().any(|t| t == "talos_operations"));
    let all = listed(true);
    assert!(all.iter().any(|t| t == "talos_reboot"));
    assert!(all.iter().any(|t| t == "talos_operations"));
}
