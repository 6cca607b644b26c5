//! talos_cluster_upgrade against the simulator over mTLS: the plan, its one confirmation bound
//! to the plan, the run in order with health gates, the stop at the first failure, resuming.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ElicitRequestParams,
    ElicitResult, ElicitationAction, ProgressNotificationParam, ProgressToken, ProtocolVersion,
    RequestMetaObject,
};
use rmcp::service::{NotificationContext, RequestContext, RunningService};
use rmcp::{ClientHandler, ErrorData, RoleClient, ServiceExt};
use serde_json::{Value, json};
use talos_client::TalosApi;
use talos_config::TalosConfig;
use talos_mcp::audit::AuditSink;
use talos_mcp::safety::{ConfirmMode, SafetySettings, TokenIssuer};
use talos_mcp::{Clusters, ServerSettings, TalosMcp};
use talos_sim::{SimCluster, SimConfig, UpgradeFault};

const CP1: &str = "127.0.10.11";
const CP2: &str = "127.0.10.12";
const CP3: &str = "127.0.10.13";
const W1: &str = "127.0.10.14";
const W2: &str = "127.0.10.15";
const ALL: [&str; 5] = [CP1, CP2, CP3, W1, W2];
const OLD: &str = "v1.11.5";
const NEW: &str = "v1.12.0";
const IMAGE: &str = "ghcr.io/siderolabs/installer:v1.12.0";

/// The simulator and a Talos client to change a node with while the human reads the plan.
type Meanwhile = (SimCluster, Arc<dyn TalosApi>);

/// A client that records progress messages and, when it declares elicitation, upgrades a node
/// out of band while the human "reads" the plan, then accepts it.
#[derive(Clone, Default)]
struct Progress {
    messages: Arc<Mutex<Vec<String>>>,
    elicit: bool,
    meanwhile: Arc<Mutex<Option<Meanwhile>>>,
}

impl ClientHandler for Progress {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _: NotificationContext<RoleClient>,
    ) {
        self.messages
            .lock()
            .unwrap()
            .push(params.message.unwrap_or_default());
    }

    async fn create_elicitation(
        &self,
        _: ElicitRequestParams,
        _: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        let meanwhile = self.meanwhile.lock().unwrap().clone();
        if let Some((sim, api)) = meanwhile {
            let request = talos_client::UpgradeRequest {
                image: IMAGE.into(),
                preserve: false,
                stage: false,
                force: false,
                reboot_mode: talos_client::RebootMode::Default,
            };
            api.upgrade(&talos_client::CallOptions::node(W2), &request)
                .await
                .unwrap();
            // Until the node is back on the new version (bounded).
            for _ in 0..500 {
                if sim.is_up(W2) && sim.version(W2).as_deref() == Some(NEW) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(ElicitResult::new(ElicitationAction::Accept).with_content(json!({"confirm": true})))
    }

    fn get_info(&self) -> ClientConfig {
        let mut info = ClientConfig::default();
        if self.elicit {
            info.capabilities = ClientCapabilities::builder().enable_elicitation().build();
            // Server-to-client elicitation exists up to protocol 2025-11-25.
            info.protocol_version = ProtocolVersion::V_2025_06_18;
        }
        info
    }
}

struct Setup {
    sim: SimCluster,
    client: RunningService<RoleClient, Progress>,
    progress: Progress,
    audit: Arc<AuditSink>,
    _dir: tempfile::TempDir,
}

/// A server over a fresh 3 + 2 node simulator with quick reboots, destructive tier on,
/// confirmation by token.
async fn setup() -> Setup {
    setup_with(ConfirmMode::Token, Progress::default()).await
}

async fn setup_with(confirm: ConfirmMode, progress: Progress) -> Setup {
    setup_lifecycle(confirm, progress, None).await
}

/// Like [`setup_with`], with the client connecting in `lifecycle` mode when given.
async fn setup_lifecycle(
    confirm: ConfirmMode,
    progress: Progress,
    lifecycle: Option<rmcp::ClientLifecycleMode>,
) -> Setup {
    let sim = SimCluster::start(SimConfig {
        reboot_downtime: Duration::from_millis(300),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let yaml = sim.talosconfig("os:admin").unwrap();
    let config = TalosConfig::from_yaml(&yaml, "<sim>").unwrap();
    let clusters = Clusters::from_talosconfig(
        config,
        None,
        talos_mcp::grpc_factory(talos_client::ClientSettings {
            timeout: Duration::from_secs(5),
            backoff_base: Duration::from_millis(10),
            ..Default::default()
        }),
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
        // Bounds every node's follow and every gate, with health_timeout_seconds.
        max_wait: Duration::from_secs(15),
        ..ServerSettings::default()
    };
    let server = TalosMcp::new(clusters, settings).unwrap();
    let (server_io, client_io) = tokio::io::duplex(1 << 20);
    tokio::spawn(async move {
        if let Ok(running) = server.serve(server_io).await {
            let _ = running.waiting().await;
        }
    });
    let client = match lifecycle {
        None => progress.clone().serve(client_io).await.unwrap(),
        Some(mode) => {
            use rmcp::ClientServiceExt as _;
            progress
                .clone()
                .serve_with_lifecycle(client_io, mode)
                .await
                .unwrap()
        }
    };
    Setup {
        sim,
        client,
        progress,
        audit,
        _dir: dir,
    }
}

impl Setup {
    async fn call(&self, args: Value) -> CallToolResult {
        let mut meta = RequestMetaObject::default();
        meta.set_progress_token(ProgressToken(rmcp::model::NumberOrString::Number(1)));
        let mut params = CallToolRequestParams::new("talos_cluster_upgrade")
            .with_arguments(args.as_object().cloned().unwrap());
        params.meta = Some(meta);
        self.client.call_tool(params).await.unwrap()
    }

    /// Plans with `args`, then runs the plan with its token.
    async fn plan_and_run(&self, args: Value) -> CallToolResult {
        let plan = self.call(args.clone()).await;
        assert_eq!(
            sc(&plan)["status"],
            "confirmation_required",
            "{}",
            text(&plan)
        );
        let mut args = args;
        args["confirmation_token"] = sc(&plan)["confirmation_token"].clone();
        self.call(args).await
    }

    /// Calls any tool, confirming its plan with the token when it returns one.
    async fn confirmed(&self, tool: &str, args: Value) -> CallToolResult {
        let params = |args: &Value| {
            CallToolRequestParams::new(tool.to_owned())
                .with_arguments(args.as_object().cloned().unwrap())
        };
        let first = self.client.call_tool(params(&args)).await.unwrap();
        if sc(&first)["status"] != "confirmation_required" {
            return first;
        }
        let mut args = args;
        args["confirmation_token"] = sc(&first)["confirmation_token"].clone();
        self.client.call_tool(params(&args)).await.unwrap()
    }

    /// Runs a rolling upgrade through both rounds of the form, accepting it.
    async fn confirmed_with_form(&self, args: Value) -> CallToolResult {
        let params = CallToolRequestParams::new("talos_cluster_upgrade")
            .with_arguments(args.as_object().cloned().unwrap());
        let first = self.client.call_tool_once(params.clone()).await.unwrap();
        let rmcp::model::CallToolResponse::InputRequired(first) = first else {
            panic!("expected input_required, got {first:?}")
        };
        let accept: rmcp::model::InputResponses = serde_json::from_value(
            json!({"confirm": {"action": "accept", "content": {"confirm": true}}}),
        )
        .unwrap();
        let retry = params
            .with_input_responses(accept)
            .with_request_state(first.request_state.clone().unwrap());
        match self.client.call_tool_once(retry).await.unwrap() {
            rmcp::model::CallToolResponse::Complete(r) => r,
            other => panic!("expected a result, got {other:?}"),
        }
    }

    fn upgrades(&self, node: &str) -> u64 {
        self.sim.calls(node, "Upgrade") + self.sim.calls(node, "LifecycleService.Upgrade")
    }

    fn versions(&self) -> Vec<String> {
        ALL.iter().map(|n| self.sim.version(n).unwrap()).collect()
    }
}

fn text(r: &CallToolResult) -> String {
    common::text(r)
}

fn sc(r: &CallToolResult) -> Value {
    r.structured_content.clone().unwrap_or(Value::Null)
}

/// Records the order in which nodes first report `NEW`, until `stop` is set.
fn watch_order(
    sim: SimCluster,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut order: Vec<String> = Vec::new();
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            for n in ALL {
                if !order.iter().any(|o| o == n) && sim.version(n).as_deref() == Some(NEW) {
                    order.push(n.to_owned());
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        order
    })
}

/// The plan changes nothing and lists every node in order; one confirmation runs the whole
/// plan: control planes one at a time, then the workers, each step reported as progress.
#[tokio::test]
async fn the_confirmed_plan_upgrades_every_node_in_order() {
    let s = setup().await;
    let plan = s.call(json!({"image": IMAGE})).await;
    let out = sc(&plan);
    assert_eq!(out["status"], "confirmation_required", "{}", text(&plan));
    let lines: Vec<String> = out["plan"]["steps"]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_owned())
        .collect();
    let expected = [
        ("step 1", "talos-cp-1"),
        ("step 2", "talos-cp-2"),
        ("step 3", "talos-cp-3"),
        ("step 4", "talos-worker-1"),
        ("step 5", "talos-worker-2"),
    ];
    assert_eq!(lines.len(), 5, "{lines:?}");
    for (line, (step, host)) in lines.iter().zip(expected) {
        assert!(line.starts_with(step) && line.contains(host), "{line}");
        assert!(line.contains(&format!("{OLD} -> {NEW}")), "{line}");
    }
    let digest = out["plan"]["steps"]["digest"].as_str().unwrap().to_owned();
    assert!(text(&plan).contains(&digest), "{}", text(&plan));
    for n in ALL {
        assert_eq!(s.upgrades(n), 0, "{n} upgraded by the plan");
    }
    assert!(s.versions().iter().all(|v| v == OLD));

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = watch_order(s.sim.clone(), stop.clone());
    let mut args = json!({"image": IMAGE});
    args["confirmation_token"] = out["confirmation_token"].clone();
    let done = s.call(args).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let order = watcher.await.unwrap();
    let out = sc(&done);
    assert_eq!(out["status"], "done", "{}", text(&done));
    assert_eq!(out["confirmation"], "token: redeemed");
    assert_eq!(out["outcome"]["result"], "completed", "{}", text(&done));
    assert_eq!(out["outcome"]["plan_digest"], digest.as_str());
    assert_eq!(order, ALL, "the order nodes came back on {NEW}");
    assert!(s.versions().iter().all(|v| v == NEW), "{:?}", s.versions());
    for n in ALL {
        assert_eq!(s.upgrades(n), 1, "{n}");
    }
    let upgraded: Vec<&str> = out["outcome"]["upgraded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["node"].as_str().unwrap())
        .collect();
    assert_eq!(upgraded, ALL);

    // Every node's step and gate was reported, naming the node.
    let progress = s.progress.messages.lock().unwrap().clone();
    for host in [
        "talos-cp-1",
        "talos-cp-2",
        "talos-cp-3",
        "talos-worker-1",
        "talos-worker-2",
    ] {
        assert!(
            progress
                .iter()
                .any(|p| p.starts_with(host) && p.contains("upgrading")),
            "{host}: {progress:?}"
        );
        assert!(
            progress
                .iter()
                .any(|p| p.contains(host) && p.contains("health gate passed")),
            "{host}: {progress:?}"
        );
    }

    // The audit has the run's `started` line (written before the tool ran), then its end.
    let lines: Vec<Value> = s
        .audit
        .lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|l: &Value| l["tool"] == "talos_cluster_upgrade")
        .collect();
    let started = lines
        .iter()
        .position(|l| l["phase"] == "started" && l["tier"] == "destructive")
        .expect("a started line");
    assert!(
        lines[started + 1..]
            .iter()
            .any(|l| l["phase"] == "finished"),
        "{lines:?}"
    );

    // Running the same plan again changes nothing, and asks nothing: every node is skipped.
    let again = s.call(json!({"image": IMAGE})).await;
    let out = sc(&again);
    assert_eq!(out["status"], "done", "{}", text(&again));
    assert_eq!(out["confirmation"], "not required (changes nothing)");
    assert_eq!(out["outcome"]["skipped"], json!(ALL));
    assert!(text(&again).contains("nothing to do"), "{}", text(&again));
    for n in ALL {
        assert_eq!(s.upgrades(n), 1, "{n}");
    }
}

/// Workers go in batches of `worker_batch_size`: both workers share one step.
#[tokio::test]
async fn workers_go_in_batches() {
    let s = setup().await;
    let plan = s
        .call(json!({"image": IMAGE, "worker_batch_size": 2}))
        .await;
    let lines = sc(&plan)["plan"]["steps"]["lines"].clone();
    let lines: Vec<&str> = lines
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        lines[3].starts_with("step 4") && lines[3].contains("talos-worker-1"),
        "{lines:?}"
    );
    assert!(
        lines[4].starts_with("step 4") && lines[4].contains("talos-worker-2"),
        "{lines:?}"
    );
    // The batch runs as one step: four steps in all, both workers upgraded in the last.
    let mut args = json!({"image": IMAGE, "worker_batch_size": 2});
    args["confirmation_token"] = sc(&plan)["confirmation_token"].clone();
    let done = s.call(args).await;
    assert_eq!(
        sc(&done)["outcome"]["result"],
        "completed",
        "{}",
        text(&done)
    );
    assert!(s.versions().iter().all(|v| v == NEW), "{:?}", s.versions());
    let progress = s.progress.messages.lock().unwrap().clone();
    for host in ["talos-worker-1", "talos-worker-2"] {
        assert!(
            progress
                .iter()
                .any(|p| p.starts_with(host) && p.contains("step 4/4")),
            "{host}: {progress:?}"
        );
    }
    let bad = s
        .call(json!({"image": IMAGE, "worker_batch_size": 50}))
        .await;
    assert_eq!(bad.is_error, Some(true));
    assert!(text(&bad).contains("worker_batch_size"), "{}", text(&bad));
}

/// With the second node failing its upgrade's health, the run stops there and says so; the
/// later nodes are untouched. After the fix, the same plan resumes and skips the done nodes.
#[tokio::test]
async fn a_failure_on_the_second_node_stops_the_run_there() {
    let s = setup().await;
    s.sim.set_upgrade_fault(CP2, UpgradeFault::Unhealthy);
    let r = s
        .plan_and_run(json!({"image": IMAGE, "health_timeout_seconds": 10}))
        .await;
    let out = sc(&r);
    assert_eq!(out["status"], "stopped", "{}", text(&r));
    let outcome = &out["outcome"];
    assert_eq!(outcome["result"], "stopped");
    assert_eq!(outcome["stopped"]["nodes"], json!([CP2]), "{}", text(&r));
    assert_eq!(outcome["stopped"]["step"], 2);
    assert!(text(&r).contains("STOPPED at step 2"), "{}", text(&r));
    assert!(text(&r).contains(CP2), "{}", text(&r));
    assert_eq!(outcome["untouched"], json!([CP3, W1, W2]), "{}", text(&r));
    for n in [CP3, W1, W2] {
        assert_eq!(s.upgrades(n), 0, "{n} was touched");
        assert_eq!(s.sim.version(n).unwrap(), OLD, "{n}");
    }
    assert_eq!(s.sim.version(CP1).unwrap(), NEW);
    // The audit records the stop as a partial outcome, not a success.
    assert!(
        s.audit
            .lines()
            .iter()
            .any(|l| l.contains("talos_cluster_upgrade")
                && l.contains("\"phase\":\"finished\"")
                && l.contains("\"result\":\"partial\"")),
        "{:?}",
        s.audit.lines()
    );

    // Until the cause is fixed the cluster is unhealthy, and a new plan is refused.
    let refused = s.call(json!({"image": IMAGE})).await;
    assert_eq!(refused.is_error, Some(true), "{}", text(&refused));
    assert!(
        text(&refused).contains("PreflightFailed"),
        "{}",
        text(&refused)
    );
    assert!(text(&refused).contains("kubelet"), "{}", text(&refused));

    // Fixed (kubelet restarted): the same plan resumes, skipping the nodes already done.
    s.sim.set_upgrade_fault(CP2, UpgradeFault::None);
    let restart = s
        .confirmed(
            "talos_service_restart",
            json!({"node": CP2, "service": "kubelet"}),
        )
        .await;
    assert_ne!(restart.is_error, Some(true), "{}", text(&restart));
    let r = s.plan_and_run(json!({"image": IMAGE})).await;
    let out = sc(&r);
    assert_eq!(out["outcome"]["result"], "completed", "{}", text(&r));
    assert_eq!(out["outcome"]["skipped"], json!([CP1, CP2]));
    assert_eq!(s.upgrades(CP1), 1);
    assert_eq!(s.upgrades(CP2), 1);
    assert!(s.versions().iter().all(|v| v == NEW), "{:?}", s.versions());
}

/// A token confirms one exact plan: after a node's version changed, the token is refused with
/// "the plan changed" and nothing is done.
#[tokio::test]
async fn a_token_is_refused_once_the_plan_changed() {
    let s = setup().await;
    let plan = s.call(json!({"image": IMAGE})).await;
    let token = sc(&plan)["confirmation_token"].clone();
    assert!(token.is_string(), "{}", text(&plan));

    // Meanwhile one worker is upgraded on its own (a plan of one node, confirmed separately).
    let one = s.plan_and_run(json!({"image": IMAGE, "nodes": [W2]})).await;
    assert_eq!(sc(&one)["status"], "done", "{}", text(&one));
    assert_eq!(s.sim.version(W2).unwrap(), NEW);

    let r = s
        .call(json!({"image": IMAGE, "confirmation_token": token}))
        .await;
    assert_eq!(r.is_error, Some(true), "{}", text(&r));
    assert!(
        text(&r).contains("the plan changed; review the new plan"),
        "{}",
        text(&r)
    );
    for n in [CP1, CP2, CP3, W1] {
        assert_eq!(s.upgrades(n), 0, "{n}");
    }

    // The new plan skips the worker that is already on the target version, and runs.
    let r = s.plan_and_run(json!({"image": IMAGE})).await;
    let out = sc(&r);
    assert_eq!(out["outcome"]["result"], "completed", "{}", text(&r));
    assert_eq!(out["outcome"]["skipped"], json!([W2]));
    assert_eq!(s.upgrades(W2), 1);
    assert!(s.versions().iter().all(|v| v == NEW));
}

/// Confirmed through the form: the plan is read again after the human accepted it, and a node
/// that changed meanwhile refuses the run.
#[tokio::test]
async fn a_plan_that_changed_while_the_human_read_it_is_refused() {
    let progress = Progress {
        elicit: true,
        ..Progress::default()
    };
    let s = setup_with(ConfirmMode::Elicit, progress.clone()).await;
    let yaml = s.sim.talosconfig("os:admin").unwrap();
    let context = TalosConfig::from_yaml(&yaml, "<sim>")
        .unwrap()
        .context(None)
        .unwrap();
    let api = talos_mcp::grpc_factory(talos_client::ClientSettings::default())(&context).unwrap();
    *progress.meanwhile.lock().unwrap() = Some((s.sim.clone(), api));

    let r = s.call(json!({"image": IMAGE})).await;
    assert_eq!(r.is_error, Some(true), "{}", text(&r));
    assert!(
        text(&r).contains("the plan changed; review the new plan"),
        "{}",
        text(&r)
    );
    assert_eq!(s.upgrades(W2), 1, "the out-of-band upgrade");
    for n in [CP1, CP2, CP3, W1] {
        assert_eq!(s.upgrades(n), 0, "{n}");
        assert_eq!(s.sim.version(n).unwrap(), OLD);
    }
}

/// On 2026-07-28 the form is a round trip: a retry whose plan changed since the form was sent
/// is refused as such, and nothing is done.
#[tokio::test]
async fn a_round_trip_for_a_plan_that_changed_is_refused() {
    let progress = Progress {
        elicit: true,
        ..Progress::default()
    };
    let lifecycle = rmcp::ClientLifecycleMode::Discover {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
    };
    let s = setup_lifecycle(ConfirmMode::Elicit, progress, Some(lifecycle)).await;
    let params = CallToolRequestParams::new("talos_cluster_upgrade")
        .with_arguments(json!({"image": IMAGE}).as_object().cloned().unwrap());
    let first = s.client.call_tool_once(params.clone()).await.unwrap();
    let rmcp::model::CallToolResponse::InputRequired(first) = first else {
        panic!("expected input_required, got {first:?}")
    };
    let state = first.request_state.clone().unwrap();
    let form = serde_json::to_value(&first.input_requests).unwrap();
    assert!(
        form.to_string().contains("step 5"),
        "the form lists the steps: {form}"
    );

    // W2 is upgraded on its own meanwhile.
    let one = s
        .confirmed_with_form(json!({"image": IMAGE, "nodes": [W2]}))
        .await;
    assert_eq!(sc(&one)["status"], "done", "{}", text(&one));

    let accept: rmcp::model::InputResponses = serde_json::from_value(
        json!({"confirm": {"action": "accept", "content": {"confirm": true}}}),
    )
    .unwrap();
    let retry = params
        .with_input_responses(accept)
        .with_request_state(state);
    let r = s.client.call_tool_once(retry).await.unwrap();
    let rmcp::model::CallToolResponse::Complete(r) = r else {
        panic!("expected a result")
    };
    assert_eq!(r.is_error, Some(true), "{}", text(&r));
    assert!(
        text(&r).contains("the plan changed; review the new plan"),
        "{}",
        text(&r)
    );
    for n in [CP1, CP2, CP3, W1] {
        assert_eq!(s.upgrades(n), 0, "{n}");
    }
}

/// The version path is a preflight: a downgrade is refused before anything is asked or done,
/// unless forced (and force is part of what is confirmed).
#[tokio::test]
async fn downgrades_need_force() {
    let s = setup().await;
    let image = "ghcr.io/siderolabs/installer:v1.10.0";
    let r = s.call(json!({"image": image})).await;
    assert_eq!(r.is_error, Some(true), "{}", text(&r));
    assert!(text(&r).contains("PreflightFailed"), "{}", text(&r));
    let forced = s.call(json!({"image": image, "force": true})).await;
    assert_eq!(
        sc(&forced)["status"],
        "confirmation_required",
        "{}",
        text(&forced)
    );
    assert!(text(&forced).contains("FORCED"), "{}", text(&forced));
    // The token of the forced plan does not confirm the same call without force.
    let token = sc(&forced)["confirmation_token"].clone();
    let r = s
        .call(json!({"image": image, "confirmation_token": token}))
        .await;
    assert_eq!(r.is_error, Some(true));
    for n in ALL {
        assert_eq!(s.upgrades(n), 0);
    }
    let bad = s
        .call(json!({"image": "ghcr.io/siderolabs/installer:latest"}))
        .await;
    assert_eq!(bad.is_error, Some(true));
    assert!(text(&bad).contains("image"), "{}", text(&bad));
}
