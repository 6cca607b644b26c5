//! The A2A dispatcher in process, against the simulated cluster: the card follows the
//! operator's settings, confirmation follows the confirmation modes, an answer runs exactly the
//! planned call once (even when answers race, or carry other arguments).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use talos_config::TalosConfig;
use talos_mcp::a2a::{A2a, Answer, CardSettings, agent_card};
use talos_mcp::safety::{ConfirmMode, SafetySettings};
use talos_mcp::{Clusters, ServerSettings, TalosMcp};
use talos_sim::{SimCluster, SimConfig};

const W1: &str = "127.0.10.14";
const W2: &str = "127.0.10.15";

async fn server(
    tweak: impl FnOnce(&mut ServerSettings),
) -> (A2a, TalosMcp, SimCluster, tempfile::TempDir) {
    let sim = SimCluster::start(SimConfig {
        reboot_downtime: Duration::from_millis(300),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let config = TalosConfig::from_yaml(&sim.talosconfig("os:admin").unwrap(), "<sim>").unwrap();
    let client_settings = talos_client::ClientSettings {
        timeout: Duration::from_secs(5),
        backoff_base: Duration::from_millis(10),
        ..Default::default()
    };
    let clusters =
        Clusters::from_talosconfig(config, None, talos_mcp::grpc_factory(client_settings));
    let dir = tempfile::tempdir().unwrap();
    let mut s = common::settings(&dir);
    tweak(&mut s);
    let server = TalosMcp::new(clusters, s).unwrap();
    (A2a::new(server.clone()), server, sim, dir)
}

fn destructive(confirm: ConfirmMode) -> impl FnOnce(&mut ServerSettings) {
    move |s| {
        s.safety = Arc::new(SafetySettings {
            allow_destructive: true,
            confirm,
            ..SafetySettings::default()
        });
    }
}

async fn rpc(a2a: &A2a, caller: &str, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    match a2a
        .handle(
            Some(caller.into()),
            Some("1.0"),
            body.to_string().as_bytes(),
        )
        .await
    {
        Answer::Json(v) => v,
        Answer::Stream(_) => panic!("{method}: a stream"),
    }
}

fn message(data: Value, task: Option<&str>) -> Value {
    let mut m = json!({"messageId": "m", "role": "ROLE_USER", "parts": [{"data": data}]});
    if let Some(t) = task {
        m["taskId"] = json!(t);
    }
    json!({"message": m})
}

fn state(answer: &Value) -> String {
    let task = if answer["result"]["task"].is_object() {
        &answer["result"]["task"]
    } else {
        &answer["result"]
    };
    task["status"]["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn reboot(node: &str) -> Value {
    json!({"tool": "talos_reboot", "arguments": {"node": node}})
}

/// The card lists only the enabled tools, each with its tier, and a bearer scheme only when
/// tokens are configured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_card_follows_the_operator_settings() {
    let (_a2a, reads, _sim, _dir) = server(|_| {}).await;
    let settings = CardSettings {
        base_url: "http://127.0.0.1:8080/".into(),
        bearer: false,
    };
    let card = serde_json::to_value(agent_card(&reads, &settings)).unwrap();
    assert_eq!(
        card["supportedInterfaces"][0]["url"],
        "http://127.0.0.1:8080/a2a"
    );
    assert!(card.get("securitySchemes").is_none(), "{card}");
    assert!(card.get("securityRequirements").is_none(), "{card}");
    let text = card["skills"].to_string();
    for (name, toolset, tier) in reads.enabled_tools() {
        assert!(
            text.contains(&format!("{name} ({})", tier.as_str())),
            "{name}"
        );
        assert!(
            card["skills"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["id"] == toolset.as_str())
        );
    }
    assert!(!text.contains("talos_reboot"), "{text}");
    assert!(!text.contains("talos_apply_config"), "{text}");

    let (_a2a, all, _sim, _dir) = server(destructive(ConfirmMode::Elicit)).await;
    let card = serde_json::to_value(agent_card(
        &all,
        &CardSettings {
            bearer: true,
            ..settings
        },
    ))
    .unwrap();
    assert!(
        card["skills"]
            .to_string()
            .contains("talos_reboot (destructive)")
    );
    assert_eq!(
        card["securitySchemes"]["bearer"]["httpAuthSecurityScheme"]["scheme"],
        "Bearer"
    );
}

/// `--confirm none`: an A2A change runs without asking (and is audited as such).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_none_runs_directly() {
    let (a2a, _server, sim, _dir) = server(destructive(ConfirmMode::None)).await;
    let done = rpc(&a2a, "alice", "SendMessage", message(reboot(W1), None)).await;
    assert_eq!(state(&done), "TASK_STATE_COMPLETED", "{done}");
    assert_eq!(sim.calls(W1, "Reboot"), 1);
}

/// Token mode: A2A still confirms through the task (there is no token to hand back), and the
/// answer runs it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_mode_confirms_through_the_task() {
    let (a2a, _server, sim, _dir) = server(destructive(ConfirmMode::Token)).await;
    let asked = rpc(&a2a, "alice", "SendMessage", message(reboot(W1), None)).await;
    assert_eq!(state(&asked), "TASK_STATE_INPUT_REQUIRED", "{asked}");
    assert!(!asked.to_string().contains("confirmation_token"), "{asked}");
    let id = asked["result"]["task"]["id"].as_str().unwrap().to_owned();
    let done = rpc(
        &a2a,
        "alice",
        "SendMessage",
        message(json!({"confirm": true}), Some(&id)),
    )
    .await;
    assert_eq!(state(&done), "TASK_STATE_COMPLETED", "{done}");
    assert_eq!(sim.calls(W1, "Reboot"), 1);
}

/// The answer runs exactly the planned call: arguments sent with the answer are ignored, and
/// of two racing answers only one is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_runs_exactly_the_plan_once() {
    let (a2a, _server, sim, _dir) = server(destructive(ConfirmMode::Elicit)).await;
    let asked = rpc(&a2a, "alice", "SendMessage", message(reboot(W1), None)).await;
    assert_eq!(state(&asked), "TASK_STATE_INPUT_REQUIRED", "{asked}");
    let id = asked["result"]["task"]["id"].as_str().unwrap().to_owned();
    // An answer that also names another node and tool: only `confirm` is read.
    let sneaky = json!({"confirm": true, "tool": "talos_reboot", "arguments": {"node": W2}});
    let (a, b) = tokio::join!(
        rpc(
            &a2a,
            "alice",
            "SendMessage",
            message(sneaky.clone(), Some(&id))
        ),
        rpc(&a2a, "alice", "SendMessage", message(sneaky, Some(&id))),
    );
    let completed = [&a, &b]
        .iter()
        .filter(|x| state(x) == "TASK_STATE_COMPLETED")
        .count();
    assert_eq!(completed, 1, "{a}\n{b}");
    assert!(
        a.get("error").is_some() || b.get("error").is_some(),
        "{a}\n{b}"
    );
    assert_eq!(sim.calls(W1, "Reboot"), 1);
    assert_eq!(
        sim.calls(W2, "Reboot"),
        0,
        "the answer cannot retarget the plan"
    );
}

/// A task waiting for its answer is another caller's to neither see, answer nor cancel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_are_bound_to_their_caller() {
    let (a2a, _server, sim, _dir) = server(destructive(ConfirmMode::Elicit)).await;
    let asked = rpc(&a2a, "alice", "SendMessage", message(reboot(W1), None)).await;
    let id = asked["result"]["task"]["id"].as_str().unwrap().to_owned();
    for (method, params) in [
        ("GetTask", json!({"id": id})),
        ("CancelTask", json!({"id": id})),
        ("SendMessage", message(json!({"confirm": true}), Some(&id))),
    ] {
        let r = rpc(&a2a, "mallory", method, params).await;
        assert_eq!(r["error"]["code"], -32001, "{method}: {r}");
    }
    let r = rpc(&a2a, "alice", "GetTask", json!({"id": id})).await;
    assert_eq!(state(&r), "TASK_STATE_INPUT_REQUIRED", "{r}");
    assert_eq!(sim.calls(W1, "Reboot"), 0);
}
