//! The safety layer end to end against talos-sim: tiers, the single-node rule, token and
//! elicitation confirmation, quorum preflight, reboot wait with progress, dry-run default, audit
//! lines and fail-closed behaviour.

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
use talos_config::TalosConfig;
use talos_mcp::audit::AuditSink;
use talos_mcp::safety::{ConfirmMode, SafetySettings, TokenIssuer};
use talos_mcp::{Clusters, ServerSettings, TalosMcp};
use talos_sim::{Fault, SimCluster, SimConfig};

/// A client that answers elicitations as told and records progress.
#[derive(Clone)]
struct TestClient {
    answer: Option<ElicitationAction>,
    confirm: bool,
    progress: Arc<Mutex<Vec<(f64, String)>>>,
    elicited: Arc<Mutex<Vec<String>>>,
}

impl TestClient {
    fn new(answer: Option<ElicitationAction>) -> Self {
        Self {
            answer,
            confirm: true,
            progress: Arc::default(),
            elicited: Arc::default(),
        }
    }
}

impl ClientHandler for TestClient {
    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        self.elicited
            .lock()
            .unwrap()
            .push(serde_json::to_string(&request).unwrap());
        Ok(
            match self.answer.clone().unwrap_or(ElicitationAction::Decline) {
                ElicitationAction::Accept => ElicitResult::new(ElicitationAction::Accept)
                    .with_content(json!({"confirm": self.confirm})),
                other => ElicitResult::new(other),
            },
        )
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _: NotificationContext<RoleClient>,
    ) {
        self.progress
            .lock()
            .unwrap()
            .push((params.progress, params.message.unwrap_or_default()));
    }

    fn get_info(&self) -> ClientConfig {
        let mut info = ClientConfig::default();
        if self.answer.is_some() {
            info.capabilities = ClientCapabilities::builder().enable_elicitation().build();
            // Server-to-client elicitation exists up to protocol 2025-11-25.
            info.protocol_version = ProtocolVersion::V_2025_06_18;
        }
        info
    }
}

/// Safety settings with the write and destructive tiers on.
fn all_tiers(
    confirm: ConfirmMode,
    confirm_writes: bool,
    token_ttl_secs: u64,
) -> Arc<SafetySettings> {
    Arc::new(SafetySettings {
        allow_write: true,
        allow_destructive: true,
        confirm,
        confirm_writes,
        tokens: TokenIssuer::random(Duration::from_secs(token_ttl_secs)),
    })
}

/// Both tiers on, confirmed through elicitation.
fn elicit_mode(st: &mut ServerSettings) {
    st.safety = all_tiers(ConfirmMode::Elicit, false, 300);
}

struct Setup {
    sim: SimCluster,
    server: TalosMcp,
    client: RunningService<RoleClient, TestClient>,
    handler: TestClient,
    audit: Arc<AuditSink>,
    _dir: tempfile::TempDir,
}

async fn setup(
    sim_config: SimConfig,
    handler: TestClient,
    tweak: impl FnOnce(&mut ServerSettings),
) -> Setup {
    setup_with(sim_config, handler, tweak, None).await
}

/// Like [`setup`], with the client speaking 2026-07-28 (no handshake, per-request metadata).
async fn setup_round_trip(handler: TestClient, tweak: impl FnOnce(&mut ServerSettings)) -> Setup {
    let lifecycle = rmcp::ClientLifecycleMode::Discover {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
    };
    setup_with(SimConfig::default(), handler, tweak, Some(lifecycle)).await
}

async fn setup_with(
    sim_config: SimConfig,
    handler: TestClient,
    tweak: impl FnOnce(&mut ServerSettings),
    lifecycle: Option<rmcp::ClientLifecycleMode>,
) -> Setup {
    let sim = SimCluster::start(sim_config).await.unwrap();
    let yaml = sim.talosconfig("os:admin").unwrap();
    let config = TalosConfig::from_yaml(&yaml, "<sim>").unwrap();
    let clusters = Clusters::from_talosconfig(
        config,
        None,
        talos_mcp::grpc_factory(talos_client::ClientSettings::default()),
    );
    let dir = tempfile::tempdir().unwrap();
    let audit = Arc::new(AuditSink::memory());
    let mut settings = ServerSettings {
        artifact_dir: dir.path().join("artifacts"),
        audit: audit.clone(),
        safety: all_tiers(ConfirmMode::Token, false, 300),
        ..ServerSettings::default()
    };
    tweak(&mut settings);
    let server = TalosMcp::new(clusters, settings).unwrap();
    let serving = server.clone();
    let (server_io, client_io) = tokio::io::duplex(1 << 20);
    tokio::spawn(async move {
        let server = serving;
        if let Ok(running) = server.serve(server_io).await {
            let _ = running.waiting().await;
        }
    });
    let client = match lifecycle {
        None => handler.clone().serve(client_io).await.unwrap(),
        Some(mode) => {
            use rmcp::ClientServiceExt as _;
            handler
                .clone()
                .serve_with_lifecycle(client_io, mode)
                .await
                .unwrap()
        }
    };
    Setup {
        sim,
        server,
        client,
        handler,
        audit,
        _dir: dir,
    }
}

async fn call(
    client: &RunningService<RoleClient, TestClient>,
    tool: &str,
    args: Value,
) -> CallToolResult {
    let params = CallToolRequestParams::new(tool.to_owned())
        .with_arguments(args.as_object().cloned().unwrap());
    client.call_tool(params).await.unwrap()
}

fn text(r: &CallToolResult) -> String {
    common::text(r)
}

fn sc(r: &CallToolResult) -> Value {
    r.structured_content.clone().unwrap_or(Value::Null)
}

const CP1: &str = "127.0.10.11";
const CP2: &str = "127.0.10.12";
const CP3: &str = "127.0.10.13";
const W1: &str = "127.0.10.14";

#[tokio::test]
async fn disabled_tiers_are_hidden_and_refused_with_the_enabling_flag() {
    let s = setup(SimConfig::default(), TestClient::new(None), |st| {
        st.safety = Arc::new(SafetySettings::default());
    })
    .await;
    let tools = s.client.list_all_tools().await.unwrap();
    assert!(
        tools
            .iter()
            .all(|t| t.annotations.as_ref().unwrap().read_only_hint == Some(true))
    );
    assert!(!tools.iter().any(|t| t.name == "talos_reboot"));
    let r = call(&s.client, "talos_reboot", json!({"node": W1})).await;
    assert_eq!(r.is_error, Some(true));
    assert!(
        text(&r).contains("destructive tier") && text(&r).contains("--allow-destructive"),
        "{}",
        text(&r)
    );
    let r = call(
        &s.client,
        "talos_service_restart",
        json!({"node": W1, "service": "kubelet"}),
    )
    .await;
    assert!(text(&r).contains("--allow-write"), "{}", text(&r));
    assert_eq!(s.sim.calls(W1, "Reboot"), 0);
    assert!(
        s.audit.lines().iter().any(
            |l| l.contains("\"tool\":\"talos_reboot\"") && l.contains("\"result\":\"refused\"")
        )
    );

    // Write enabled, destructive not: writes listed, reboot still hidden.
    let s = setup(SimConfig::default(), TestClient::new(None), |st| {
        st.safety = Arc::new(SafetySettings {
            allow_write: true,
            ..SafetySettings::default()
        });
    })
    .await;
    let names: Vec<String> = s
        .client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    assert!(
        names.contains(&"talos_service_restart".to_owned())
            && !names.contains(&"talos_reboot".to_owned())
    );
}

#[tokio::test]
async fn changes_target_exactly_one_named_node() {
    let s = setup(SimConfig::default(), TestClient::new(None), |_| {}).await;
    let tool = s
        .client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.name == "talos_reboot")
        .unwrap();
    let required = tool
        .input_schema
        .get("required")
        .unwrap()
        .as_array()
        .unwrap();
    assert!(required.contains(&json!("node")));
    assert!(
        !tool
            .input_schema
            .get("properties")
            .unwrap()
            .as_object()
            .unwrap()
            .contains_key("nodes")
    );
    let missing = s
        .client
        .call_tool(
            CallToolRequestParams::new("talos_reboot").with_arguments(serde_json::Map::new()),
        )
        .await;
    assert!(
        missing.is_err() || missing.unwrap().is_error == Some(true),
        "no default node"
    );
    let outside = call(&s.client, "talos_reboot", json!({"node": "10.0.0.99"})).await;
    assert!(text(&outside).contains("NodeNotAllowed"));
}

#[tokio::test]
async fn token_flow_plans_then_runs_once() {
    let s = setup(SimConfig::default(), TestClient::new(None), |_| {}).await;
    let args = json!({"node": W1, "service": "syslogd"});
    // Actions on services nothing depends on need confirmation only when the operator asks for
    // it: here it does not.
    let r = call(&s.client, "talos_service_restart", args.clone()).await;
    assert_eq!(sc(&r)["status"], "done", "{}", text(&r));

    let r = call(&s.client, "talos_shutdown", json!({"node": W1})).await;
    let plan = sc(&r);
    assert_eq!(plan["status"], "confirmation_required", "{plan}");
    assert_eq!(plan["plan"]["node"], W1);
    assert_eq!(plan["plan"]["hostname"], "talos-worker-1");
    assert!(
        plan["plan"]["preflight"][0]
            .as_str()
            .unwrap()
            .contains("not an etcd member")
    );
    assert_eq!(
        s.sim.calls(W1, "Shutdown"),
        0,
        "the first call does nothing"
    );
    let token = plan["confirmation_token"].as_str().unwrap().to_owned();

    // A token for another node, or with changed arguments, is refused.
    let other = call(
        &s.client,
        "talos_shutdown",
        json!({"node": "127.0.10.15", "confirmation_token": token}),
    )
    .await;
    assert!(text(&other).contains("does not match"), "{}", text(&other));
    let changed = call(
        &s.client,
        "talos_shutdown",
        json!({"node": W1, "force": true, "confirmation_token": token}),
    )
    .await;
    assert!(
        text(&changed).contains("does not match"),
        "{}",
        text(&changed)
    );
    let other_tool = call(
        &s.client,
        "talos_reboot",
        json!({"node": W1, "confirmation_token": token}),
    )
    .await;
    assert!(text(&other_tool).contains("does not match"));

    let done = call(
        &s.client,
        "talos_shutdown",
        json!({"node": W1, "confirmation_token": token}),
    )
    .await;
    assert_eq!(sc(&done)["status"], "done", "{}", text(&done));
    assert_eq!(sc(&done)["confirmation"], "token: redeemed");
    assert_eq!(s.sim.calls(W1, "Shutdown"), 1);
    let replay = call(
        &s.client,
        "talos_shutdown",
        json!({"node": W1, "confirmation_token": token}),
    )
    .await;
    assert!(text(&replay).contains("already used"), "{}", text(&replay));
    assert_eq!(s.sim.calls(W1, "Shutdown"), 1);
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let s = setup(SimConfig::default(), TestClient::new(None), |st| {
        st.safety = all_tiers(ConfirmMode::Token, true, 0);
    })
    .await;
    let plan = call(&s.client, "talos_etcd_defragment", json!({"node": CP1})).await;
    let token = sc(&plan)["confirmation_token"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = call(
        &s.client,
        "talos_etcd_defragment",
        json!({"node": CP1, "confirmation_token": token}),
    )
    .await;
    assert!(text(&r).contains("expired"), "{}", text(&r));
    assert_eq!(s.sim.calls(CP1, "EtcdDefragment"), 0);
}

#[tokio::test]
async fn elicitation_accept_decline_cancel() {
    for (answer, confirm, expect_done, expect_text) in [
        (ElicitationAction::Accept, true, true, "done"),
        (
            ElicitationAction::Accept,
            false,
            false,
            "did not tick confirm",
        ),
        (ElicitationAction::Decline, true, false, "declined"),
        (ElicitationAction::Cancel, true, false, "cancelled"),
    ] {
        let mut handler = TestClient::new(Some(answer.clone()));
        handler.confirm = confirm;
        let s = setup(SimConfig::default(), handler, elicit_mode).await;
        let r = call(&s.client, "talos_shutdown", json!({"node": W1})).await;
        let asked = s.handler.elicited.lock().unwrap().clone();
        assert_eq!(asked.len(), 1, "one elicitation per call");
        assert!(
            asked[0].contains("talos_shutdown")
                && asked[0].contains("talos-worker-1")
                && asked[0].contains("talos-sim"),
            "{}",
            asked[0]
        );
        assert_eq!(
            s.sim.calls(W1, "Shutdown"),
            u64::from(expect_done),
            "{answer:?}/{confirm}"
        );
        assert!(
            text(&r).contains(expect_text) || sc(&r)["status"] == expect_text,
            "{answer:?}: {}",
            text(&r)
        );
    }
}

/// On 2026-07-28 the form travels in an `input_required` result and the client's retry; the
/// sealed state must come back unchanged, for the same call, once.
#[tokio::test]
async fn round_trip_confirmation_on_the_stateless_protocol() {
    // The client's helper drives the rounds: accept runs the change, decline does not.
    for (answer, expect_done, expect_text) in [
        (ElicitationAction::Accept, true, "elicitation: accepted"),
        (ElicitationAction::Decline, false, "declined"),
    ] {
        let s = setup_round_trip(TestClient::new(Some(answer.clone())), elicit_mode).await;
        let r = call(&s.client, "talos_shutdown", json!({"node": W1})).await;
        let asked = s.handler.elicited.lock().unwrap().clone();
        assert_eq!(asked.len(), 1, "{answer:?}: one form per call");
        assert!(asked[0].contains("talos_shutdown") && asked[0].contains("talos-worker-1"));
        assert_eq!(
            s.sim.calls(W1, "Shutdown"),
            u64::from(expect_done),
            "{answer:?}"
        );
        assert!(
            text(&r).contains(expect_text) || sc(&r)["confirmation"] == expect_text,
            "{answer:?}: {} {}",
            text(&r),
            sc(&r)
        );
        let lines = s.audit.lines();
        let finished: Vec<Value> = lines
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|l| l["phase"] == "finished")
            .collect();
        assert_eq!(finished[0]["result"], "confirmation_required");
        assert_eq!(
            finished[1]["confirmation"],
            if expect_done {
                "elicitation: accepted"
            } else {
                "elicitation: declined"
            }
        );
    }

    // Driving the rounds by hand: tampered, rebound and replayed state.
    let s = setup_round_trip(
        TestClient::new(Some(ElicitationAction::Accept)),
        elicit_mode,
    )
    .await;
    let params = |node: &str| {
        CallToolRequestParams::new("talos_shutdown")
            .with_arguments(json!({"node": node}).as_object().cloned().unwrap())
    };
    let first = s.client.call_tool_once(params(W1)).await.unwrap();
    let rmcp::model::CallToolResponse::InputRequired(first) = first else {
        panic!("expected input_required, got {first:?}")
    };
    let state = first.request_state.clone().unwrap();
    let form = serde_json::to_value(&first.input_requests).unwrap();
    assert_eq!(form["confirm"]["method"], "elicitation/create", "{form}");
    let accept: rmcp::model::InputResponses = serde_json::from_value(
        json!({"confirm": {"action": "accept", "content": {"confirm": true}}}),
    )
    .unwrap();
    let retry = |node: &str, state: String| {
        params(node)
            .with_input_responses(accept.clone())
            .with_request_state(state)
    };
    let mut tampered = state.clone();
    tampered.replace_range(tampered.len() - 2.., "00");
    let refused = s.client.call_tool_once(retry(W1, tampered)).await;
    assert!(
        matches!(&refused, Err(rmcp::ServiceError::McpError(e)) if e.code == rmcp::model::ErrorCode::INVALID_PARAMS),
        "tampered state: {refused:?}"
    );
    let rebound = s
        .client
        .call_tool_once(retry("127.0.10.15", state.clone()))
        .await;
    assert!(
        matches!(&rebound, Err(rmcp::ServiceError::McpError(e)) if e.code == rmcp::model::ErrorCode::INVALID_PARAMS),
        "state of another call: {rebound:?}"
    );
    assert_eq!(
        s.sim.calls(W1, "Shutdown") + s.sim.calls("127.0.10.15", "Shutdown"),
        0
    );
    let done = s
        .client
        .call_tool_once(retry(W1, state.clone()))
        .await
        .unwrap();
    let rmcp::model::CallToolResponse::Complete(done) = done else {
        panic!("expected a result")
    };
    assert_eq!(sc(&done)["status"], "done", "{}", text(&done));
    let replay = s.client.call_tool_once(retry(W1, state)).await.unwrap();
    let rmcp::model::CallToolResponse::Complete(replay) = replay else {
        panic!("expected a result")
    };
    assert!(text(&replay).contains("already used"), "{}", text(&replay));
    assert_eq!(s.sim.calls(W1, "Shutdown"), 1);
}

/// The audit lines of finished calls, waiting up to 10 s for `count` of them.
async fn finished_lines(s: &Setup, count: usize) -> Vec<Value> {
    for _ in 0..200 {
        let finished: Vec<Value> = s
            .audit
            .lines()
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|l| l["phase"] == "finished")
            .collect();
        if finished.len() >= count {
            return finished;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "fewer than {count} finished calls in the audit log: {:?}",
        s.audit.lines()
    )
}

/// Calls a tool and gives up on it after `after`, as a client cancelling the call does (the
/// dropped request sends `notifications/cancelled`).
async fn abandon(s: &Setup, tool: &str, args: Value, after: Duration) {
    let params = CallToolRequestParams::new(tool.to_owned())
        .with_arguments(args.as_object().cloned().unwrap());
    let gave_up = tokio::time::timeout(after, s.client.call_tool(params)).await;
    assert!(gave_up.is_err(), "{tool} finished before it was cancelled");
}

/// A cancelled read stops at once (its Talos stream is dropped); a change that has started runs
/// to completion and is audited as it really ended.
#[tokio::test]
async fn cancellation_stops_reads_but_not_started_changes() {
    let config = SimConfig {
        log_lines: 50_000_000,
        reboot_downtime: Duration::from_millis(800),
        ..SimConfig::default()
    };
    let s = setup(config, TestClient::new(None), |st| {
        st.safety = all_tiers(ConfirmMode::None, false, 300);
    })
    .await;

    // Scanning 50 million lines for text that is not there takes far longer than this.
    let started = std::time::Instant::now();
    abandon(
        &s,
        "talos_service_logs",
        json!({"service": "etcd", "grep": "no-such-text", "nodes": [CP1]}),
        Duration::from_millis(500),
    )
    .await;
    let finished = finished_lines(&s, 1).await;
    assert_eq!(finished[0]["tool"], "talos_service_logs");
    assert_eq!(finished[0]["result"], "cancelled", "{:?}", finished[0]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cancellation took {:?}",
        started.elapsed()
    );
    for _ in 0..100 {
        if s.server.in_flight() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        s.server.in_flight(),
        0,
        "the cancelled call is still running"
    );
    // The session is still good.
    let r = call(&s.client, "talos_hostname", json!({"nodes": [CP1]})).await;
    assert_ne!(r.is_error, Some(true), "{}", text(&r));

    // A reboot that has been sent is followed to the end even when the client gives up.
    let boot_before = s.sim.boot_id(W1);
    abandon(
        &s,
        "talos_reboot",
        json!({"node": W1, "wait": true}),
        Duration::from_millis(300),
    )
    .await;
    let finished = finished_lines(&s, 3).await;
    assert_eq!(finished[2]["tool"], "talos_reboot");
    assert_eq!(finished[2]["result"], "ok", "{:?}", finished[2]);
    assert_eq!(s.sim.calls(W1, "Reboot"), 1);
    assert_ne!(s.sim.boot_id(W1), boot_before, "the node rebooted");
}

#[tokio::test]
async fn quorum_preflight_refuses_to_break_etcd() {
    let s = setup(SimConfig::default(), TestClient::new(None), |_| {}).await;
    s.sim.set_fault(CP3, Fault::Unavailable);
    let r = call(&s.client, "talos_reboot", json!({"node": CP1})).await;
    assert_eq!(r.is_error, Some(true));
    assert!(
        text(&r).starts_with("PreflightFailed") && text(&r).contains("below the quorum of 2"),
        "{}",
        text(&r)
    );
    assert_eq!(s.sim.calls(CP1, "Reboot"), 0);
    // A worker is fine; with force the plan records the override and still needs confirmation.
    let w = call(&s.client, "talos_reboot", json!({"node": W1})).await;
    assert_eq!(sc(&w)["status"], "confirmation_required");
    let forced = call(
        &s.client,
        "talos_reboot",
        json!({"node": CP1, "force": true}),
    )
    .await;
    assert_eq!(sc(&forced)["status"], "confirmation_required");
    assert!(
        sc(&forced)["plan"]["preflight"]
            .to_string()
            .contains("FORCED")
    );
    // With all members healthy the reboot plan passes the preflight.
    s.sim.set_fault(CP3, Fault::None);
    let ok = call(&s.client, "talos_reboot", json!({"node": CP1})).await;
    assert!(
        sc(&ok)["plan"]["preflight"][0]
            .as_str()
            .unwrap()
            .contains("2 of the other 2"),
        "{}",
        sc(&ok)
    );
}

#[tokio::test]
async fn reboot_wait_follows_the_node_with_progress() {
    let s = setup(
        SimConfig {
            reboot_downtime: Duration::from_millis(800),
            ..SimConfig::default()
        },
        TestClient::new(None),
        |st| {
            st.safety = all_tiers(ConfirmMode::None, false, 300);
        },
    )
    .await;
    let before = s.sim.boot_id(W1).unwrap();
    let mut meta = RequestMetaObject::default();
    meta.set_progress_token(ProgressToken(rmcp::model::NumberOrString::Number(7)));
    let mut params = CallToolRequestParams::new("talos_reboot").with_arguments(
        json!({"node": W1, "wait": true, "wait_timeout_seconds": 20})
            .as_object()
            .cloned()
            .unwrap(),
    );
    params.meta = Some(meta);
    let r = s.client.call_tool(params).await.unwrap();
    let out = sc(&r);
    assert_eq!(out["status"], "done", "{}", text(&r));
    assert_eq!(out["outcome"]["back"], true);
    assert_eq!(out["outcome"]["boot_id_before"], before.as_str());
    assert_ne!(out["outcome"]["boot_id_after"], before.as_str());
    assert_eq!(
        out["outcome"]["boot_id_after"],
        s.sim.boot_id(W1).unwrap().as_str()
    );
    // Every step is sent before the result (the client may still be handling the last one).
    for _ in 0..50 {
        if s.handler.progress.lock().unwrap().len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let progress = s.handler.progress.lock().unwrap().clone();
    let steps: Vec<f64> = progress.iter().map(|p| p.0).collect();
    assert_eq!(steps, [1.0, 2.0, 3.0], "{progress:?}");
}

#[tokio::test]
async fn apply_config_is_a_dry_run_by_default_and_never_echoes_secrets() {
    let s = setup(SimConfig::default(), TestClient::new(None), |_| {}).await;
    let config = "version: v1alpha1\nmachine:\n  type: worker\n  token: NEW-SECRET-TOKEN\n  network:\n    hostname: renamed\ncluster:\n  clusterName: talos-sim\n";
    let r = call(
        &s.client,
        "talos_apply_config",
        json!({"node": W1, "config": config}),
    )
    .await;
    let out = sc(&r);
    assert_eq!(out["status"], "done", "{}", text(&r));
    assert_eq!(out["outcome"]["dry_run"], true);
    assert!(
        out["outcome"]["summary"]
            .as_str()
            .unwrap()
            .contains("Dry run")
    );
    let diff = out["outcome"]["diff"].as_str().unwrap();
    assert!(diff.contains("+     hostname: renamed"), "{diff}");
    let all = format!("{}{}", text(&r), out);
    for secret in ["NEW-SECRET-TOKEN"]
        .iter()
        .chain(talos_sim::PLANTED_SECRETS)
    {
        assert!(!all.contains(secret), "{secret} leaked: {all}");
    }
    // A real apply needs confirmation in every mode (write tier, without --confirm-writes).
    for mode in ["auto", "reboot", "no-reboot", "staged", "try"] {
        let real = call(
            &s.client,
            "talos_apply_config",
            json!({"node": W1, "config": config, "dry_run": false, "mode": mode}),
        )
        .await;
        assert_eq!(
            sc(&real)["status"],
            "confirmation_required",
            "{mode}: {}",
            text(&real)
        );
    }
    assert_eq!(s.sim.calls(W1, "ApplyConfiguration"), 1, "only the dry run");
    let bad = call(
        &s.client,
        "talos_apply_config",
        json!({"node": W1, "config": "not: [yaml"}),
    )
    .await;
    assert!(text(&bad).contains("InvalidArgument"), "{}", text(&bad));
    let file = call(
        &s.client,
        "talos_apply_config",
        json!({"node": W1, "config_file": "/etc/passwd"}),
    )
    .await;
    assert!(text(&file).contains("PathNotAllowed"), "{}", text(&file));
}

#[tokio::test]
async fn every_call_is_audited_with_secrets_redacted() {
    let s = setup(SimConfig::default(), TestClient::new(None), |_| {}).await;
    call(&s.client, "talos_version", json!({"nodes": [CP1]})).await;
    call(
        &s.client,
        "talos_apply_config",
        json!({"node": W1, "config": "version: v1alpha1\nmachine:\n  token: AUDIT-SECRET\n"}),
    )
    .await;
    let plan = call(&s.client, "talos_shutdown", json!({"node": W1})).await;
    let token = sc(&plan)["confirmation_token"].as_str().unwrap().to_owned();
    call(
        &s.client,
        "talos_shutdown",
        json!({"node": W1, "confirmation_token": token}),
    )
    .await;
    let lines = s.audit.lines();
    let records: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let finished: Vec<&Value> = records
        .iter()
        .filter(|r| r["phase"] == "finished")
        .collect();
    assert_eq!(finished.len(), 4, "{lines:#?}");
    assert_eq!(finished[0]["tool"], "talos_version");
    assert_eq!(finished[0]["tier"], "read");
    assert_eq!(finished[0]["result"], "ok");
    assert_eq!(finished[0]["nodes"], json!([CP1]));
    assert!(finished[0]["duration_ms"].is_number() && finished[0]["request_id"].is_string());
    assert_eq!(finished[2]["result"], "confirmation_required");
    assert_eq!(finished[2]["confirmation"], "token: issued");
    assert_eq!(finished[3]["confirmation"], "token: redeemed");
    assert_eq!(finished[3]["tier"], "destructive");
    assert!(
        records
            .iter()
            .any(|r| r["phase"] == "started" && r["tool"] == "talos_shutdown")
    );
    let all = lines.join("\n");
    assert!(
        !all.contains("AUDIT-SECRET") && !all.contains(&token),
        "secrets in the audit log: {all}"
    );
}

#[tokio::test]
async fn audit_lines_stay_small_whatever_the_client_sends() {
    let s = setup(SimConfig::default(), TestClient::new(None), |_| {}).await;
    let huge = "n".repeat(200 * 1024);
    let many: Vec<String> = (0..5_000).map(|i| format!("{huge:.1000}{i}")).collect();
    call(
        &s.client,
        "talos_version",
        json!({"nodes": many, "context": huge}),
    )
    .await;
    // An unknown tool is a protocol error, and still one audit line.
    let unknown = s
        .client
        .call_tool(CallToolRequestParams::new(huge.clone()))
        .await;
    assert!(unknown.is_err());
    // An argument the tool does not take is refused (naming the ones it does), and its junk is
    // still bounded in the audit line's arguments.
    let extra = call(
        &s.client,
        "talos_version",
        json!({"extra": {"deep": [[[[[[[[[[huge]]]]]]]]]]}}),
    )
    .await;
    assert_eq!(extra.is_error, Some(true));
    assert!(
        text(&extra).starts_with("InvalidArgument: `extra` is not an argument of talos_version; its arguments: context, nodes"),
        "{}",
        text(&extra)
    );
    let lines = s.audit.lines();
    assert_eq!(lines.len(), 3, "one line per call");
    for line in &lines {
        assert!(
            line.len() < 64 * 1024,
            "an audit line of {} bytes",
            line.len()
        );
    }
    let second: Value = serde_json::from_str(&lines[1]).unwrap();
    let tool = second["tool"].as_str().unwrap();
    assert!(
        tool.ends_with(&format!("({} bytes)", huge.len())),
        "{tool:.300}"
    );
    let first: Value = serde_json::from_str(&lines[0]).unwrap();
    let nodes = first["nodes"].as_array().unwrap();
    assert_eq!(nodes.last().unwrap(), "… and 4936 more", "{nodes:?}");
    assert!(first["context"].as_str().unwrap().len() < 400);
}

#[tokio::test]
async fn writes_fail_closed_when_the_audit_log_breaks() {
    let full = std::path::Path::new("/dev/full");
    if !full.exists() {
        return;
    }
    let s = setup(SimConfig::default(), TestClient::new(None), |st| {
        st.audit = Arc::new(AuditSink::file(full).unwrap());
    })
    .await;
    let r = call(
        &s.client,
        "talos_service_restart",
        json!({"node": W1, "service": "kubelet"}),
    )
    .await;
    assert_eq!(r.is_error, Some(true));
    assert!(
        text(&r).contains("audit log cannot be written"),
        "{}",
        text(&r)
    );
    assert_eq!(s.sim.calls(W1, "ServiceRestart"), 0);
    // Reads still work (their audit failure is reported in the server log).
    let v = call(&s.client, "talos_version", json!({"nodes": [W1]})).await;
    assert_ne!(v.is_error, Some(true));
}

#[tokio::test]
async fn etcd_and_image_actions() {
    let s = setup(SimConfig::default(), TestClient::new(None), |st| {
        st.safety = all_tiers(ConfirmMode::None, false, 300);
    })
    .await;
    for (tool, args, needle) in [
        (
            "talos_etcd_defragment",
            json!({"node": CP1}),
            "defragmented",
        ),
        (
            "talos_etcd_alarm_disarm",
            json!({"node": CP1}),
            "disarmed 0",
        ),
        (
            "talos_image_pull",
            json!({"node": W1, "image": "docker.io/library/busybox:1.36"}),
            "pulled",
        ),
        (
            "talos_service_stop",
            json!({"node": W1, "service": "kubelet"}),
            "stopped",
        ),
        (
            "talos_service_start",
            json!({"node": W1, "service": "kubelet"}),
            "started",
        ),
        (
            "talos_upgrade",
            json!({"node": W1, "image": "ghcr.io/siderolabs/installer:v1.12.0", "wait_timeout_seconds": 20}),
            "upgraded v1.11.5 → v1.12.0",
        ),
        (
            "talos_rollback",
            json!({"node": W1, "wait_timeout_seconds": 20}),
            "rolled back v1.12.0 → v1.11.5",
        ),
        (
            "talos_etcd_forfeit_leadership",
            json!({"node": CP1}),
            "moved to talos-cp-2",
        ),
        (
            "talos_etcd_remove_member",
            json!({"node": CP1, "member": "talos-cp-3"}),
            "removed member talos-cp-3",
        ),
        ("talos_etcd_leave", json!({"node": CP2}), "left"),
        (
            "talos_reset",
            json!({"node": "127.0.10.15", "reboot": true}),
            "reset requested",
        ),
    ] {
        let r = call(&s.client, tool, args).await;
        assert_eq!(sc(&r)["status"], "done", "{tool}: {}", text(&r));
        assert!(text(&r).contains(needle), "{tool}: {}", text(&r));
    }
    let snap = call(&s.client, "talos_etcd_snapshot", json!({"node": CP1})).await;
    let out = sc(&snap)["outcome"].clone();
    assert!(out["revision"].as_u64().is_some(), "{}", text(&snap));
    let path = std::path::PathBuf::from(out["path"].as_str().unwrap());
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        out["size_bytes"].as_u64().unwrap()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let bad = call(
        &s.client,
        "talos_service_restart",
        json!({"node": W1, "service": "nope"}),
    )
    .await;
    assert!(
        text(&bad).contains("`nope` is not a service"),
        "{}",
        text(&bad)
    );
    let cri = call(
        &s.client,
        "talos_image_pull",
        json!({"node": W1, "image": "docker.io/library/busybox:1.36", "namespace": "cri"}),
    )
    .await;
    assert_eq!(sc(&cri)["status"], "done", "{}", text(&cri));
    let pulls = s.sim.calls(W1, "ImagePull");
    let bad = call(
        &s.client,
        "talos_image_pull",
        json!({"node": W1, "image": "docker.io/library/busybox:1.36", "namespace": "moby"}),
    )
    .await;
    assert_eq!(bad.is_error, Some(true));
    assert!(
        text(&bad).contains(
            "InvalidArgument: `namespace` unknown variant `moby`, expected one of `system`, `cri`, `k8s`, `k8s.io`"
        ),
        "{}",
        text(&bad)
    );
    assert_eq!(s.sim.calls(W1, "ImagePull"), pulls, "nothing pulled");
}

/// A panic inside a tool fails that call only: an `Internal` error result, an audit line
/// `panic` without the payload, and the server keeps serving.
#[tokio::test]
async fn a_panicking_tool_fails_alone_and_the_server_keeps_serving() {
    let mut m = talos_client::MockTalosApi::new();
    m.expect_hostname()
        .returning(|o| Ok(format!("host-{}", o.node.clone().unwrap_or_default())));
    m.expect_version()
        .returning(|_| panic!("PANIC-PAYLOAD-WITH-ARGUMENTS"));
    let audit = Arc::new(AuditSink::memory());
    let sink = audit.clone();
    let h = common::with_mock(Arc::new(m), &["10.5.0.2"], move |st| st.audit = sink).await;
    // Without the catch the request is never answered: bound the wait so that fails, not hangs.
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        h.call("talos_version", json!({"nodes": ["10.5.0.2"]})),
    )
    .await
    .expect("the panicking call was never answered");
    assert_eq!(r.is_error, Some(true), "{}", text(&r));
    assert!(text(&r).starts_with("Internal:"), "{}", text(&r));
    // The server still answers, on the same session.
    let ok = h.ok("talos_hostname", json!({"nodes": ["10.5.0.2"]})).await;
    assert!(ok.to_string().contains("host-10.5.0.2"), "{ok}");
    let lines = audit.lines();
    let panicked: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["tool"] == "talos_version")
        .collect();
    assert_eq!(panicked.len(), 1, "{lines:?}");
    assert_eq!(panicked[0]["result"], "panic");
    let all = format!("{}{}", text(&r), lines.join("\n"));
    assert!(!all.contains("PANIC-PAYLOAD"), "{all}");
}

/// Repeated `talos_kubeconfig` calls replace one private file instead of leaving a new admin
/// kubeconfig on disk each time.
#[tokio::test]
async fn kubeconfigs_do_not_pile_up() {
    let s = setup(SimConfig::default(), TestClient::new(None), |_| {}).await;
    let mut paths = Vec::new();
    for _ in 0..3 {
        let r = call(&s.client, "talos_kubeconfig", json!({"nodes": [CP1]})).await;
        assert_ne!(r.is_error, Some(true), "{}", text(&r));
        paths.push(sc(&r)["path"].as_str().unwrap().to_owned());
        // Distinct seconds would have given distinct names before.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    assert!(paths.iter().all(|p| p == &paths[0]), "{paths:?}");
    let dir = std::path::Path::new(&paths[0]).parent().unwrap();
    let kubeconfigs: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("kubeconfig"))
        .collect();
    assert_eq!(kubeconfigs.len(), 1, "{kubeconfigs:?}");
}

/// Stopping or restarting a service the cluster depends on is confirmed by default, like a
/// destructive call; other services stay in the plain write tier.
#[tokio::test]
async fn critical_service_stops_need_confirmation_by_default() {
    let s = setup(SimConfig::default(), TestClient::new(None), |_| {}).await;
    for (tool, node, service) in [
        ("talos_service_stop", CP1, "etcd"),
        ("talos_service_restart", CP1, "etcd"),
        ("talos_service_stop", W1, "kubelet"),
        ("talos_service_restart", W1, "containerd"),
        ("talos_service_stop", CP2, "trustd"),
        ("talos_service_stop", W1, "apid"),
    ] {
        let r = call(&s.client, tool, json!({"node": node, "service": service})).await;
        assert_eq!(
            sc(&r)["status"],
            "confirmation_required",
            "{tool} {service}: {}",
            text(&r)
        );
    }
    let plan = call(
        &s.client,
        "talos_service_stop",
        json!({"node": CP1, "service": "etcd"}),
    )
    .await;
    assert!(
        sc(&plan)["plan"]["preflight"][0]
            .as_str()
            .unwrap()
            .contains("2 of the other 2"),
        "the quorum preflight ran: {}",
        sc(&plan)
    );
    let start = call(
        &s.client,
        "talos_service_start",
        json!({"node": W1, "service": "kubelet"}),
    )
    .await;
    assert_eq!(sc(&start)["status"], "done", "{}", text(&start));
    assert_eq!(
        s.sim.calls(CP1, "ServiceStop") + s.sim.calls(W1, "ServiceStop"),
        0
    );
}

/// etcd on two of three control planes cannot be stopped, neither one after the other (the
/// preflight sees the first stop) nor at once (changes to one cluster run one at a time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_stops_on_two_of_three_members_cannot_both_pass() {
    let s = setup(SimConfig::default(), TestClient::new(None), |st| {
        st.safety = all_tiers(ConfirmMode::None, false, 300);
    })
    .await;
    let stop = |node: &'static str| {
        call(
            &s.client,
            "talos_service_stop",
            json!({"node": node, "service": "etcd"}),
        )
    };
    let (a, b) = tokio::join!(stop(CP1), stop(CP2));
    let done = [&a, &b]
        .iter()
        .filter(|r| sc(r)["status"] == "done")
        .count();
    assert_eq!(done, 1, "{} / {}", text(&a), text(&b));
    let refused = if sc(&a)["status"] == "done" { &b } else { &a };
    assert!(
        text(refused).starts_with("PreflightFailed") && text(refused).contains("quorum"),
        "{}",
        text(refused)
    );
    assert_eq!(
        s.sim.calls(CP1, "ServiceStop") + s.sim.calls(CP2, "ServiceStop"),
        1
    );
    // One after the other: the third member is refused too.
    let third = stop(CP3).await;
    assert!(
        text(&third).starts_with("PreflightFailed"),
        "{}",
        text(&third)
    );
    assert_eq!(s.sim.calls(CP3, "ServiceStop"), 0);
}

/// The confirmation of a real apply shows the config's SHA-256 and the redacted diff against
/// the node's current config, and is bound to those bytes: a `config_file` changed between plan
/// and apply is refused.
#[tokio::test]
async fn apply_confirmation_shows_the_diff_and_is_bound_to_the_bytes() {
    let files = tempfile::tempdir().unwrap();
    let allowed = files.path().to_string_lossy().into_owned();
    let s = setup(SimConfig::default(), TestClient::new(None), move |st| {
        st.config_allowlist = vec![allowed];
    })
    .await;
    let path = files.path().join("worker.yaml");
    let config = |host: &str| {
        format!(
            "version: v1alpha1\nmachine:\n  type: worker\n  token: PLAN-SECRET\n  network:\n    hostname: {host}\ncluster:\n  clusterName: talos-sim\n"
        )
    };
    std::fs::write(&path, config("shown-to-human")).unwrap();
    let args = json!({"node": W1, "config_file": path, "dry_run": false, "mode": "no-reboot"});
    let plan = call(&s.client, "talos_apply_config", args.clone()).await;
    let out = sc(&plan);
    assert_eq!(out["status"], "confirmation_required", "{}", text(&plan));
    let details = out["plan"]["details"].as_str().unwrap();
    let sha = talos_sim_sha256(config("shown-to-human").as_bytes());
    assert!(details.contains(&sha), "{details}");
    assert!(
        details.contains("+     hostname: shown-to-human"),
        "{details}"
    );
    assert!(
        text(&plan).contains("hostname: shown-to-human"),
        "{}",
        text(&plan)
    );
    let all = format!("{}{}", text(&plan), out);
    assert!(!all.contains("PLAN-SECRET"), "{all}");
    let token = out["confirmation_token"].as_str().unwrap().to_owned();

    // The file changes after the human saw the plan: the token no longer fits.
    std::fs::write(&path, config("swapped-in")).unwrap();
    let mut with_token = args.clone();
    with_token["confirmation_token"] = json!(token);
    let swapped = call(&s.client, "talos_apply_config", with_token.clone()).await;
    assert!(
        text(&swapped).contains("does not match"),
        "{}",
        text(&swapped)
    );
    assert_eq!(s.sim.calls(W1, "ApplyConfiguration"), 0);

    // The approved bytes go through.
    std::fs::write(&path, config("shown-to-human")).unwrap();
    let plan = call(&s.client, "talos_apply_config", args.clone()).await;
    with_token["confirmation_token"] = sc(&plan)["confirmation_token"].clone();
    let done = call(&s.client, "talos_apply_config", with_token).await;
    assert_eq!(sc(&done)["status"], "done", "{}", text(&done));
    assert_eq!(s.sim.calls(W1, "ApplyConfiguration"), 1);
}

/// The elicitation form of a real apply carries the same hash and diff.
#[tokio::test]
async fn apply_elicitation_shows_the_diff() {
    let s = setup(
        SimConfig::default(),
        TestClient::new(Some(ElicitationAction::Decline)),
        elicit_mode,
    )
    .await;
    let config = "version: v1alpha1\nmachine:\n  type: worker\n  token: FORM-SECRET\n  network:\n    hostname: in-the-form\n";
    call(
        &s.client,
        "talos_apply_config",
        json!({"node": W1, "config": config, "dry_run": false, "mode": "staged"}),
    )
    .await;
    let asked = s.handler.elicited.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    assert!(
        asked[0].contains(&talos_sim_sha256(config.as_bytes()))
            && asked[0].contains("hostname: in-the-form")
            && !asked[0].contains("FORM-SECRET"),
        "{}",
        asked[0]
    );
    assert_eq!(s.sim.calls(W1, "ApplyConfiguration"), 0);
}

fn talos_sim_sha256(data: &[u8]) -> String {
    use std::fmt::Write as _;
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Errors about a `config_file` name the file and the error class, never its content.
#[tokio::test]
async fn config_file_errors_never_quote_the_file() {
    let files = tempfile::tempdir().unwrap();
    let allowed = files.path().to_string_lossy().into_owned();
    let s = setup(SimConfig::default(), TestClient::new(None), move |st| {
        st.config_allowlist = vec![allowed];
    })
    .await;
    let cases = [
        // A duplicate key: YAML parsers quote the key in their error.
        (
            "dup.yaml",
            "version: v1alpha1\nmachine: {}\nFILE-SECRET-KEY: 1\nFILE-SECRET-KEY: 2\n",
        ),
        (
            "broken.yaml",
            "version: v1alpha1\nmachine:\n  token: [FILE-SECRET-VALUE\n",
        ),
        ("notalos.yaml", "FILE-SECRET-DOC: true\n"),
    ];
    for (name, content) in cases {
        let path = files.path().join(name);
        std::fs::write(&path, content).unwrap();
        let r = call(
            &s.client,
            "talos_apply_config",
            json!({"node": W1, "config_file": path}),
        )
        .await;
        assert_eq!(r.is_error, Some(true), "{name}: {}", text(&r));
        let all = format!("{}{:?}", text(&r), r.meta);
        assert!(all.contains(name), "{name}: the file is named: {all}");
        assert!(!all.contains("FILE-SECRET"), "{name}: {all}");
    }
}

/// A reboot's plan says when a configuration this server staged is pending: the reboot
/// activates it.
#[tokio::test]
async fn a_reboot_plan_names_a_pending_staged_config() {
    let s = setup(SimConfig::default(), TestClient::new(None), |_| {}).await;
    let config =
        "version: v1alpha1\nmachine:\n  type: worker\n  network:\n    hostname: staged-one\n";
    let args = json!({"node": W1, "config": config, "dry_run": false, "mode": "staged"});
    let plan = call(&s.client, "talos_apply_config", args.clone()).await;
    let mut with_token = args;
    with_token["confirmation_token"] = sc(&plan)["confirmation_token"].clone();
    let done = call(&s.client, "talos_apply_config", with_token).await;
    assert_eq!(sc(&done)["status"], "done", "{}", text(&done));

    let reboot = call(&s.client, "talos_reboot", json!({"node": W1})).await;
    let preflight = sc(&reboot)["plan"]["preflight"].to_string();
    let sha = talos_sim_sha256(config.as_bytes());
    assert!(
        preflight.contains("staged") && preflight.contains(&sha),
        "{preflight}"
    );
    assert!(text(&reboot).contains("staged"), "{}", text(&reboot));
    // Another node has nothing pending.
    let other = call(&s.client, "talos_reboot", json!({"node": "127.0.10.15"})).await;
    assert!(
        !sc(&other)["plan"]["preflight"]
            .to_string()
            .contains("staged")
    );
    // Once the node has rebooted, nothing is pending any more.
    let token = sc(&reboot)["confirmation_token"].clone();
    let rebooted = call(
        &s.client,
        "talos_reboot",
        json!({"node": W1, "confirmation_token": token}),
    )
    .await;
    assert_eq!(sc(&rebooted)["status"], "done", "{}", text(&rebooted));
    let again = call(&s.client, "talos_reboot", json!({"node": W1})).await;
    assert!(
        !sc(&again)["plan"]["preflight"]
            .to_string()
            .contains("staged")
    );
}

/// Apply and reboot modes are closed choices: a value outside them is an `InvalidArgument`
/// result naming the field and the accepted values, and the spellings people type are accepted.
#[tokio::test]
async fn lifecycle_modes_are_closed_choices_with_aliases() {
    let s = setup(SimConfig::default(), TestClient::new(None), |_| {}).await;
    let config = "version: v1alpha1\nmachine:\n  type: worker\n";
    for (tool, args, accepted) in [
        (
            "talos_apply_config",
            json!({"node": W1, "config": config, "dry_run": false, "mode": "sometimes"}),
            ["`auto`", "`no-reboot`", "`reboot`", "`staged`", "`try`"].as_slice(),
        ),
        (
            "talos_reboot",
            json!({"node": W1, "mode": "hard"}),
            ["`default`", "`powercycle`"].as_slice(),
        ),
    ] {
        let r = call(&s.client, tool, args).await;
        let err = text(&r);
        assert_eq!(r.is_error, Some(true), "{tool}: {err}");
        assert!(
            err.contains("InvalidArgument") && err.contains("`mode`"),
            "{tool}: {err}"
        );
        for value in accepted {
            assert!(err.contains(value), "{tool} does not list {value}: {err}");
        }
    }
    for (alias, effect) in [
        (json!("no-reboot"), "without a reboot"),
        (json!("no_reboot"), "without a reboot"),
        (json!("noreboot"), "without a reboot"),
        (json!("staged"), "next boot activates it"),
        (json!(null), "mode auto"),
    ] {
        let plan = call(
            &s.client,
            "talos_apply_config",
            json!({"node": W1, "config": config, "dry_run": false, "mode": alias}),
        )
        .await;
        let out = sc(&plan);
        assert_eq!(
            out["status"],
            "confirmation_required",
            "{alias}: {}",
            text(&plan)
        );
        assert!(
            out["plan"]["effect"].as_str().unwrap().contains(effect),
            "{alias}: {out}"
        );
    }
    for (alias, effect) in [
        (json!("default"), "(Default mode)"),
        (json!(null), "(Default mode)"),
        (json!("powercycle"), "(Powercycle mode)"),
        (json!("power-cycle"), "(Powercycle mode)"),
        (json!("power_cycle"), "(Powercycle mode)"),
    ] {
        let plan = call(
            &s.client,
            "talos_reboot",
            json!({"node": W1, "mode": alias}),
        )
        .await;
        let out = sc(&plan);
        assert_eq!(
            out["status"],
            "confirmation_required",
            "{alias}: {}",
            text(&plan)
        );
        assert!(
            out["plan"]["effect"].as_str().unwrap().contains(effect),
            "{alias}: {out}"
        );
    }
    assert_eq!(
        s.sim.calls(W1, "ApplyConfiguration"),
        0,
        "nothing was applied"
    );
}

/// The audit file is followed by path: a rotated file is recreated and written to, and when the
/// path cannot be written any more, changes are refused before anything reaches Talos.
#[tokio::test]
async fn changes_are_refused_when_the_audit_path_becomes_unwritable() {
    let logs = tempfile::tempdir().unwrap();
    let path = logs.path().join("audit.jsonl");
    let sink = Arc::new(AuditSink::file(&path).unwrap());
    let s = setup(SimConfig::default(), TestClient::new(None), {
        let sink = sink.clone();
        move |st| st.audit = sink
    })
    .await;
    let restart = json!({"node": W1, "service": "syslogd"});
    let r = call(&s.client, "talos_service_restart", restart.clone()).await;
    assert_eq!(sc(&r)["status"], "done", "{}", text(&r));
    let first = std::fs::read_to_string(&path).unwrap();
    assert!(first.contains("\"phase\":\"started\""), "{first}");

    // Rotation: the old file is moved away; the next lines go to a new file at the path.
    std::fs::rename(&path, logs.path().join("audit.jsonl.1")).unwrap();
    let r = call(&s.client, "talos_service_restart", restart.clone()).await;
    assert_eq!(sc(&r)["status"], "done", "{}", text(&r));
    let second = std::fs::read_to_string(&path).unwrap();
    assert!(
        second.contains("\"phase\":\"started\"") && second.contains("\"phase\":\"finished\""),
        "{second}"
    );

    // The path becomes unusable (here: a directory takes its place, which even root cannot
    // append to): the change is refused and nothing is sent.
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    let before = s.sim.calls(W1, "ServiceRestart");
    let r = call(&s.client, "talos_service_restart", restart).await;
    assert_eq!(r.is_error, Some(true), "{}", text(&r));
    assert!(
        text(&r).contains("audit log cannot be written"),
        "{}",
        text(&r)
    );
    assert_eq!(s.sim.calls(W1, "ServiceRestart"), before);
}

/// A long-running call that asks for confirmation through the multi-round-trip flow is recorded
/// as an operation, without the sealed round-trip state in its record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_trip_operation_keeps_no_request_state() {
    let s = setup_round_trip(
        TestClient::new(Some(ElicitationAction::Accept)),
        elicit_mode,
    )
    .await;
    let first = s
        .client
        .call_tool_once(
            CallToolRequestParams::new("talos_reboot")
                .with_arguments(json!({"node": W1}).as_object().cloned().unwrap()),
        )
        .await
        .unwrap();
    let rmcp::model::CallToolResponse::InputRequired(first) = first else {
        panic!("expected input_required, got {first:?}")
    };
    let state = first.request_state.clone().unwrap();
    let listed = call(&s.client, "talos_operations", json!({})).await;
    let id = sc(&listed)["operations"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let shown = call(&s.client, "talos_operations", json!({"id": id})).await;
    let op = &sc(&shown)["operations"][0];
    assert_eq!(op["state"], "completed", "{op}");
    assert_eq!(op["result"]["resultType"], "input_required", "{op}");
    assert!(!op.to_string().contains(&state), "{op}");
    assert_eq!(s.sim.calls(W1, "Reboot"), 0);
}

/// An audit line names the trace of the call's `_meta.traceparent` (no exporter needed); a
/// malformed `traceparent` is ignored, never written.
#[tokio::test]
async fn audit_lines_name_the_callers_trace() {
    let mut m = talos_client::MockTalosApi::new();
    m.expect_hostname()
        .returning(|o| Ok(format!("host-{}", o.node.clone().unwrap_or_default())));
    let audit = Arc::new(AuditSink::memory());
    let sink = audit.clone();
    let h = common::with_mock(Arc::new(m), &["10.5.0.2"], move |st| st.audit = sink).await;
    let call = |traceparent: &str| {
        let mut meta = rmcp::model::RequestMetaObject::default();
        meta.0.set_traceparent(traceparent);
        let mut params = rmcp::model::CallToolRequestParams::new("talos_hostname")
            .with_arguments(json!({"nodes": ["10.5.0.2"]}).as_object().cloned().unwrap());
        params.meta = Some(meta);
        h.client.call_tool(params)
    };
    let r = call("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .await
        .unwrap();
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    let r = call("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01-<script>")
        .await
        .unwrap();
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    let lines: Vec<Value> = audit
        .lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(lines[1].get("trace_id").is_none(), "{}", lines[1]);
    assert!(!audit.lines().join("\n").contains("script"));
}
