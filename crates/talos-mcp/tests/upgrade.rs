//! talos_upgrade and talos_rollback end to end against talos-sim over mTLS: both upgrade APIs and
//! the per-node fallback, staging, the version path and force, preflight refusals, each injected
//! upgrade fault, confirmations bound to the versions, progress steps and audit lines.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ProgressNotificationParam, ProgressToken,
    RequestMetaObject,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};
use talos_client::prelude::*;
use talos_client::{CallOptions, UpgradeRequest};
use talos_config::TalosConfig;
use talos_mcp::audit::AuditSink;
use talos_mcp::safety::{ConfirmMode, SafetySettings, TokenIssuer};
use talos_mcp::{Clusters, ServerSettings, TalosMcp};
use talos_sim::{SimCluster, SimConfig, UpgradeFault};

const CP1: &str = "127.0.10.11";
const W1: &str = "127.0.10.14";
const W2: &str = "127.0.10.15";
const V12: &str = "ghcr.io/siderolabs/installer:v1.12.0";

/// Records progress messages.
#[derive(Clone, Default)]
struct Recorder {
    progress: Arc<Mutex<Vec<String>>>,
}

impl ClientHandler for Recorder {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _: NotificationContext<RoleClient>,
    ) {
        self.progress
            .lock()
            .unwrap()
            .push(params.message.unwrap_or_default());
    }
}

struct Setup {
    sim: SimCluster,
    client: RunningService<RoleClient, Recorder>,
    recorder: Recorder,
    audit: Arc<AuditSink>,
    yaml: String,
    _dir: tempfile::TempDir,
}

async fn setup(confirm: ConfirmMode) -> Setup {
    let sim = SimCluster::start(SimConfig {
        reboot_downtime: Duration::from_millis(500),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let yaml = sim.talosconfig("os:admin").unwrap();
    let config = TalosConfig::from_yaml(&yaml, "<sim>").unwrap();
    let clusters = Clusters::from_talosconfig(
        config,
        None,
        talos_mcp::grpc_factory(talos_client::ClientSettings::default()),
    );
    let dir = tempfile::tempdir().unwrap();
    let audit = Arc::new(AuditSink::memory());
    let settings = ServerSettings {
        artifact_dir: dir.path().join("artifacts"),
        audit: audit.clone(),
        safety: Arc::new(SafetySettings {
            allow_write: true,
            allow_destructive: true,
            confirm,
            confirm_writes: false,
            tokens: TokenIssuer::random(Duration::from_secs(300)),
        }),
        ..ServerSettings::default()
    };
    let server = TalosMcp::new(clusters, settings).unwrap();
    let (server_io, client_io) = tokio::io::duplex(1 << 20);
    tokio::spawn(async move {
        if let Ok(running) = server.serve(server_io).await {
            let _ = running.waiting().await;
        }
    });
    let recorder = Recorder::default();
    let client = recorder.clone().serve(client_io).await.unwrap();
    Setup {
        sim,
        client,
        recorder,
        audit,
        yaml,
        _dir: dir,
    }
}

impl Setup {
    /// Calls a tool asking for progress.
    async fn call(&self, tool: &str, args: Value) -> CallToolResult {
        let mut meta = RequestMetaObject::default();
        meta.set_progress_token(ProgressToken(rmcp::model::NumberOrString::Number(1)));
        let mut params = CallToolRequestParams::new(tool.to_owned())
            .with_arguments(args.as_object().cloned().unwrap());
        params.meta = Some(meta);
        self.client.call_tool(params).await.unwrap()
    }

    /// A talos-client of its own, to change the cluster behind the server's back.
    fn direct(&self) -> talos_client::GrpcTalosClient {
        let config = TalosConfig::from_yaml(&self.yaml, "<sim>").unwrap();
        talos_client::GrpcTalosClient::new(&config.context(None).unwrap()).unwrap()
    }

    fn steps(&self) -> Vec<String> {
        self.recorder.progress.lock().unwrap().clone()
    }

    fn audit(&self) -> Vec<Value> {
        self.audit
            .lines()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn sc(r: &CallToolResult) -> Value {
    r.structured_content.clone().unwrap_or(Value::Null)
}

fn text(r: &CallToolResult) -> String {
    common::text(r)
}

/// The plan, then the confirmed call.
async fn confirmed(s: &Setup, tool: &str, args: Value) -> (Value, CallToolResult) {
    let plan = s.call(tool, args.clone()).await;
    assert_eq!(
        sc(&plan)["status"],
        "confirmation_required",
        "{}",
        text(&plan)
    );
    let plan = sc(&plan);
    let mut args = args;
    args["confirmation_token"] = plan["confirmation_token"].clone();
    let done = s.call(tool, args).await;
    (plan, done)
}

#[tokio::test]
async fn upgrade_plans_preflights_then_runs_over_the_lifecycle_stream() {
    let s = setup(ConfirmMode::Token).await;
    let args = json!({"node": W1, "image": V12});
    let first = s.call("talos_upgrade", args.clone()).await;
    let plan = sc(&first);
    assert_eq!(plan["status"], "confirmation_required", "{}", text(&first));
    let p = &plan["plan"];
    assert!(
        p["effect"]
            .as_str()
            .unwrap()
            .contains("from v1.11.5 to v1.12.0"),
        "{plan}"
    );
    let preflight = p["preflight"].to_string();
    assert!(preflight.contains("installer image pulled"), "{preflight}");
    assert!(
        preflight.contains("cluster health check passed"),
        "{preflight}"
    );
    assert!(
        preflight.contains("API: LifecycleService.Upgrade"),
        "{preflight}"
    );
    // Before confirmation the image was pulled and nothing else was done.
    assert_eq!(s.sim.calls(W1, "ImageService.Pull"), 1);
    assert_eq!(s.sim.calls(W1, "LifecycleService.Upgrade"), 0);
    assert_eq!(s.sim.version(W1).as_deref(), Some("v1.11.5"));
    let mut args = args;
    args["confirmation_token"] = plan["confirmation_token"].clone();
    let done = s.call("talos_upgrade", args).await;

    let out = sc(&done);
    assert_eq!(out["status"], "done", "{}", text(&done));
    let o = &out["outcome"];
    assert_eq!(o["api"], "lifecycle");
    assert_eq!(o["from_version"], "v1.11.5");
    assert_eq!(o["to_version"], "v1.12.0");
    assert_eq!(o["back"], true);
    assert_eq!(o["on_target"], true);
    assert_eq!(o["services_healthy"], true);
    assert_eq!(o["problem"], Value::Null);
    assert_ne!(o["boot_id_before"], o["boot_id_after"]);
    assert_eq!(s.sim.version(W1).as_deref(), Some("v1.12.0"));
    assert_eq!(s.sim.calls(W1, "LifecycleService.Upgrade"), 1);
    assert_eq!(s.sim.calls(W1, "Upgrade"), 0);

    let steps = s.steps();
    for want in [
        "127.0.10.14: installer: pulling installer image",
        "127.0.10.14: node is down",
        "127.0.10.14: node is back with a new boot id",
        "127.0.10.14: node runs v1.12.0",
        "127.0.10.14: services are healthy",
    ] {
        assert!(
            steps.iter().any(|m| m.starts_with(want)),
            "{want}: {steps:?}"
        );
    }
    // Audit: the confirmed call's `started` line comes before its `finished` one.
    let lines: Vec<Value> = s
        .audit()
        .into_iter()
        .filter(|l| l["tool"] == "talos_upgrade")
        .collect();
    let phases: Vec<&str> = lines.iter().map(|l| l["phase"].as_str().unwrap()).collect();
    assert_eq!(phases, ["started", "finished", "started", "finished"]);
    assert_eq!(lines[1]["result"], "confirmation_required");
    assert_eq!(lines[3]["result"], "ok");
    s.sim.shutdown().await;
}

#[tokio::test]
async fn a_node_without_the_lifecycle_service_falls_back_once_and_is_remembered() {
    let s = setup(ConfirmMode::None).await;
    s.sim.set_legacy_api(W2, true);
    let r = s
        .call("talos_upgrade", json!({"node": W2, "image": V12}))
        .await;
    let o = &sc(&r)["outcome"];
    assert_eq!(o["api"], "machine", "{}", text(&r));
    assert_eq!(o["on_target"], true);
    assert_eq!(s.sim.calls(W2, "LifecycleService.Upgrade"), 1);
    assert_eq!(s.sim.calls(W2, "Upgrade"), 1);
    assert!(
        s.steps()
            .iter()
            .any(|m| m.contains("no LifecycleService; using MachineService.Upgrade"))
    );
    // The next upgrade of that node goes straight to the classic API.
    let r = s
        .call(
            "talos_upgrade",
            json!({"node": W2, "image": "ghcr.io/siderolabs/installer:v1.12.1"}),
        )
        .await;
    assert_eq!(sc(&r)["outcome"]["to_version"], "v1.12.1", "{}", text(&r));
    assert_eq!(s.sim.calls(W2, "LifecycleService.Upgrade"), 1);
    assert_eq!(s.sim.calls(W2, "Upgrade"), 2);
    s.sim.shutdown().await;
}

#[tokio::test]
async fn the_version_path_refuses_skips_and_downgrades_unless_forced_and_confirmed() {
    let s = setup(ConfirmMode::Token).await;
    let skip = s
        .call(
            "talos_upgrade",
            json!({"node": W1, "image": "ghcr.io/siderolabs/installer:v1.13.0"}),
        )
        .await;
    assert_eq!(skip.is_error, Some(true));
    assert!(
        text(&skip).starts_with("PreflightFailed")
            && text(&skip).contains("skips minor release v1.12"),
        "{}",
        text(&skip)
    );
    let down = s
        .call(
            "talos_upgrade",
            json!({"node": W1, "image": "ghcr.io/siderolabs/installer:v1.10.0"}),
        )
        .await;
    assert!(text(&down).contains("downgrade"), "{}", text(&down));
    // A reference without a version tag never reaches the node.
    let bad = s
        .call(
            "talos_upgrade",
            json!({"node": W1, "image": "ghcr.io/siderolabs/installer:latest"}),
        )
        .await;
    assert!(
        text(&bad).starts_with("InvalidArgument: `image`"),
        "{}",
        text(&bad)
    );
    assert_eq!(s.sim.calls(W1, "LifecycleService.Upgrade"), 0);

    // force is confirmed like any argument: the plan says FORCED, and a token for the forced
    // call does not fit the unforced one.
    let args = json!({"node": W1, "image": "ghcr.io/siderolabs/installer:v1.13.0", "force": true});
    let plan = sc(&s.call("talos_upgrade", args.clone()).await);
    assert_eq!(plan["status"], "confirmation_required");
    assert!(
        plan["plan"]["preflight"]
            .to_string()
            .contains("FORCED despite")
    );
    let unforced = s
        .call(
            "talos_upgrade",
            json!({"node": W1, "image": "ghcr.io/siderolabs/installer:v1.13.0", "confirmation_token": plan["confirmation_token"]}),
        )
        .await;
    assert!(
        text(&unforced).starts_with("PreflightFailed"),
        "{}",
        text(&unforced)
    );
    let mut forced = args;
    forced["confirmation_token"] = plan["confirmation_token"].clone();
    let r = s.call("talos_upgrade", forced).await;
    assert_eq!(sc(&r)["outcome"]["to_version"], "v1.13.0", "{}", text(&r));
    s.sim.shutdown().await;
}

#[tokio::test]
async fn the_confirmation_is_bound_to_the_versions_the_plan_showed() {
    let s = setup(ConfirmMode::Token).await;
    let args = json!({"node": W1, "image": V12});
    let plan = sc(&s.call("talos_upgrade", args.clone()).await);
    assert_eq!(plan["status"], "confirmation_required");
    // Someone upgrades the node to a patch release before the token is used.
    s.direct()
        .upgrade(
            &CallOptions::node(W1),
            &UpgradeRequest {
                image: "ghcr.io/siderolabs/installer:v1.11.6".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let sim = s.sim.clone();
    assert!(
        tokio::time::timeout(Duration::from_secs(10), async {
            while sim.version(W1).as_deref() != Some("v1.11.6") || !sim.is_up(W1) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .is_ok()
    );
    let mut confirmed = args;
    confirmed["confirmation_token"] = plan["confirmation_token"].clone();
    let r = s.call("talos_upgrade", confirmed).await;
    assert_eq!(r.is_error, Some(true));
    assert!(text(&r).starts_with("NotConfirmed"), "{}", text(&r));
    assert_eq!(s.sim.calls(W1, "LifecycleService.Upgrade"), 0);
    assert_eq!(s.sim.version(W1).as_deref(), Some("v1.11.6"));
    s.sim.shutdown().await;
}

#[tokio::test]
async fn preflight_refuses_a_failing_pull_and_an_unhealthy_cluster() {
    let s = setup(ConfirmMode::Token).await;
    s.sim.set_upgrade_fault(W1, UpgradeFault::ImagePullFails);
    let r = s
        .call("talos_upgrade", json!({"node": W1, "image": V12}))
        .await;
    assert_eq!(r.is_error, Some(true));
    assert!(
        text(&r).starts_with("PreflightFailed") && text(&r).contains("could not be pulled"),
        "{}",
        text(&r)
    );
    // Even forced: a pull that fails cannot be overridden.
    let forced = s
        .call(
            "talos_upgrade",
            json!({"node": W1, "image": V12, "force": true}),
        )
        .await;
    assert!(
        text(&forced).contains("could not be pulled"),
        "{}",
        text(&forced)
    );

    // A worker goes down: Talos's health check fails, so no node is upgraded.
    s.direct()
        .shutdown(&CallOptions::node(W2), false)
        .await
        .unwrap();
    let r = s
        .call("talos_upgrade", json!({"node": CP1, "image": V12}))
        .await;
    assert!(
        text(&r).starts_with("PreflightFailed") && text(&r).contains("health check fails"),
        "{}",
        text(&r)
    );
    assert_eq!(s.sim.calls(CP1, "LifecycleService.Upgrade"), 0);
    assert_eq!(s.sim.version(CP1).as_deref(), Some("v1.11.5"));
    s.sim.shutdown().await;
}

#[tokio::test]
async fn faults_after_the_start_are_reported_as_problems() {
    let s = setup(ConfirmMode::None).await;
    s.sim.set_upgrade_fault(W1, UpgradeFault::OldVersion);
    s.sim.set_upgrade_fault(W2, UpgradeFault::Unhealthy);
    let w1 = s
        .call(
            "talos_upgrade",
            json!({"node": W1, "image": V12, "wait_timeout_seconds": 4}),
        )
        .await;
    // (W2 last: its unhealthy kubelet would make the cluster health preflight refuse W1.)
    let w2 = s
        .call(
            "talos_upgrade",
            json!({"node": W2, "image": V12, "wait_timeout_seconds": 4}),
        )
        .await;
    let old = &sc(&w1)["outcome"];
    assert_eq!(old["back"], true, "{}", text(&w1));
    assert_eq!(old["on_target"], false);
    assert_eq!(old["to_version"], "v1.11.5");
    assert!(
        old["problem"]
            .as_str()
            .unwrap()
            .contains("came back on v1.11.5"),
        "{old}"
    );
    assert!(
        text(&w1).contains("upgrade started but failed"),
        "{}",
        text(&w1)
    );
    let sick = &sc(&w2)["outcome"];
    assert_eq!(sick["on_target"], true, "{}", text(&w2));
    assert_eq!(sick["services_healthy"], false);
    assert!(
        sick["problem"].as_str().unwrap().contains("kubelet"),
        "{sick}"
    );
    s.sim.shutdown().await;
}

#[tokio::test]
async fn a_node_that_never_returns_is_reported_not_back() {
    let s = setup(ConfirmMode::None).await;
    s.sim.set_upgrade_fault(W1, UpgradeFault::NeverReturns);
    let r = s
        .call(
            "talos_upgrade",
            json!({"node": W1, "image": V12, "wait_timeout_seconds": 3}),
        )
        .await;
    let o = &sc(&r)["outcome"];
    assert_eq!(o["back"], false, "{}", text(&r));
    assert_eq!(o["on_target"], false);
    assert!(
        o["problem"]
            .as_str()
            .unwrap()
            .contains("was not back within 3 s"),
        "{o}"
    );
    assert!(
        s.steps()
            .iter()
            .any(|m| m == "127.0.10.14: gave up waiting")
    );
    s.sim.shutdown().await;
}

#[tokio::test]
async fn stage_installs_with_the_classic_api_and_waits_for_a_reboot() {
    let s = setup(ConfirmMode::Token).await;
    let (plan, done) = confirmed(
        &s,
        "talos_upgrade",
        json!({"node": W1, "image": V12, "stage": true}),
    )
    .await;
    assert!(
        plan["plan"]["effect"]
            .as_str()
            .unwrap()
            .starts_with("stage")
    );
    assert!(
        plan["plan"]["preflight"]
            .to_string()
            .contains("stage and preserve need the classic API")
    );
    let o = &sc(&done)["outcome"];
    assert_eq!(o["staged"], true, "{}", text(&done));
    assert_eq!(o["api"], "machine");
    assert_eq!(s.sim.version(W1).as_deref(), Some("v1.11.5"));
    assert_eq!(s.sim.staged_version(W1).as_deref(), Some("v1.12.0"));
    assert!(s.sim.is_up(W1));
    s.sim.shutdown().await;
}

#[tokio::test]
async fn rollback_returns_to_the_previous_version_and_needs_one() {
    let s = setup(ConfirmMode::Token).await;
    let none = confirmed(&s, "talos_rollback", json!({"node": W1})).await.1;
    assert_eq!(none.is_error, Some(true));
    assert!(text(&none).contains("no previous"), "{}", text(&none));
    assert_eq!(s.sim.version(W1).as_deref(), Some("v1.11.5"));

    let up = confirmed(&s, "talos_upgrade", json!({"node": W1, "image": V12}))
        .await
        .1;
    assert_eq!(sc(&up)["outcome"]["on_target"], true, "{}", text(&up));
    let (plan, done) = confirmed(&s, "talos_rollback", json!({"node": W1})).await;
    assert!(
        plan["plan"]["effect"]
            .as_str()
            .unwrap()
            .contains("back from v1.12.0"),
        "{plan}"
    );
    let o = &sc(&done)["outcome"];
    assert_eq!(o["from_version"], "v1.12.0", "{}", text(&done));
    assert_eq!(o["to_version"], "v1.11.5");
    assert_eq!(o["version_changed"], true);
    assert_eq!(o["services_healthy"], true);
    assert_eq!(s.sim.version(W1).as_deref(), Some("v1.11.5"));
    assert_eq!(s.sim.calls(W1, "Rollback"), 2);
    s.sim.shutdown().await;
}
