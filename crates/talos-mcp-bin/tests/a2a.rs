//! The A2A 1.0 endpoint over HTTP with raw JSON-RPC against the simulated cluster: the agent
//! card, a read (answered, streamed, read back, listed), a reboot declined and then confirmed
//! (exactly one reboot reaches the node), answers to finished tasks, CancelTask, refusals (an
//! unknown tool, a disabled tier, no token, a wrong version) and the audit lines.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

mod common;

use common::{ALICE, BOB, Server, http, sim};
use serde_json::{Value, json};

/// An A2A caller.
struct Agent {
    addr: SocketAddr,
    bearer: Option<&'static str>,
    version: Option<&'static str>,
    /// A W3C `traceparent` header sent with each request.
    traceparent: Option<&'static str>,
    next: u64,
}

impl Agent {
    fn new(addr: SocketAddr, bearer: &'static str) -> Self {
        Self {
            addr,
            bearer: Some(bearer),
            version: Some("1.0"),
            traceparent: None,
            next: 0,
        }
    }

    /// POSTs one JSON-RPC request to /a2a: status, content type, body.
    fn post(&mut self, method: &str, params: Value) -> (u16, String, String) {
        self.next += 1;
        let body = json!({"jsonrpc": "2.0", "id": format!("r{}", self.next), "method": method, "params": params});
        let mut headers = Vec::new();
        if let Some(b) = self.bearer {
            headers.push(("Authorization", b));
        }
        if let Some(v) = self.version {
            headers.push(("A2A-Version", v));
        }
        if let Some(t) = self.traceparent {
            headers.push(("traceparent", t));
        }
        let (status, h, text) = http(self.addr, "POST", "/a2a", &headers, &body.to_string());
        let ct = h
            .iter()
            .find(|(k, _)| k == "content-type")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        (status, ct, text)
    }

    /// A JSON answer.
    fn rpc(&mut self, method: &str, params: Value) -> Value {
        let (status, ct, text) = self.post(method, params);
        assert_eq!(status, 200, "{method}: {text}");
        assert!(ct.starts_with("application/json"), "{ct}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// A streamed answer: every event's JSON-RPC response, in order.
    fn stream(&mut self, method: &str, params: Value) -> Vec<Value> {
        let (status, ct, text) = self.post(method, params);
        assert_eq!(status, 200, "{method}: {text}");
        assert!(ct.starts_with("text/event-stream"), "{ct}: {text}");
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| serde_json::from_str(d.trim()).unwrap())
            .collect()
    }

    fn send(&mut self, data: Value) -> Value {
        self.rpc("SendMessage", send_params(data, None))
    }

    fn answer(&mut self, task: &str, confirm: bool) -> Value {
        self.rpc(
            "SendMessage",
            send_params(json!({"confirm": confirm}), Some(task)),
        )
    }
}

fn send_params(data: Value, task: Option<&str>) -> Value {
    let mut message = json!({
        "messageId": format!("m-{}", data),
        "role": "ROLE_USER",
        "parts": [{"data": data}],
    });
    if let Some(task) = task {
        message["taskId"] = json!(task);
    }
    json!({"message": message})
}

fn task(answer: &Value) -> &Value {
    let task = &answer["result"]["task"];
    assert!(task.is_object(), "a task: {answer}");
    task
}

fn state(task: &Value) -> &str {
    task["status"]["state"].as_str().unwrap_or_default()
}

fn status_text(task: &Value) -> String {
    task["status"]["message"]["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The card is served without a token, names the endpoint under --public-url (or the listen
/// address), says bearer when tokens are configured, and lists only enabled tools, with tiers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_card_lists_enabled_tools_and_the_bearer_scheme() {
    let (_sim, _dir, tc, _worker) = sim().await;
    let reads = Server::start(&tc, &[]);
    let (status, _, body) = http(reads.addr, "GET", "/.well-known/agent-card.json", &[], "");
    assert_eq!(status, 200, "{body}");
    let card: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(card["name"], "talos-mcp");
    assert!(card.get("url").is_none(), "no 0.3 top-level url: {card}");
    let iface = &card["supportedInterfaces"][0];
    assert_eq!(iface["url"], format!("http://{}/a2a", reads.addr));
    assert_eq!(iface["protocolBinding"], "JSONRPC");
    assert_eq!(iface["protocolVersion"], "1.0");
    assert_eq!(card["capabilities"]["streaming"], true);
    assert_eq!(card["capabilities"]["pushNotifications"], false);
    assert_eq!(
        card["securitySchemes"]["bearer"]["httpAuthSecurityScheme"]["scheme"],
        "Bearer"
    );
    assert!(card["securityRequirements"][0]["schemes"]["bearer"].is_object());
    let skills = card["skills"].to_string();
    assert!(skills.contains("talos_version (read)"), "{skills}");
    assert!(
        !skills.contains("talos_reboot"),
        "disabled tiers are not listed: {skills}"
    );

    let all = Server::start(
        &tc,
        &[
            "--allow-destructive",
            "--public-url",
            "https://agents.example:8443/talos/",
        ],
    );
    let (_, _, body) = http(all.addr, "GET", "/.well-known/agent-card.json", &[], "");
    let card: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        card["supportedInterfaces"][0]["url"],
        "https://agents.example:8443/talos/a2a"
    );
    let skills = card["skills"].to_string();
    assert!(skills.contains("talos_reboot (destructive)"), "{skills}");
}

/// A read completes with its structured result as data and its summary as text; GetTask reads
/// it back, ListTasks lists it, another caller cannot see it; the audit line names the
/// transport `a2a` and the token's name; the metrics count the A2A request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_completes_and_reads_back_for_its_caller_only() {
    let (_sim, dir, tc, _worker) = sim().await;
    let audit = dir.path().join("audit.jsonl");
    let server = Server::start(&tc, &["--audit-log", audit.to_str().unwrap()]);
    let mut alice = Agent::new(server.addr, ALICE);
    // The calling agent's trace: the audit line names it (no exporter is configured here).
    alice.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    let done = alice.send(json!({"tool": "talos_version", "arguments": {}}));
    let t = task(&done);
    assert_eq!(state(t), "TASK_STATE_COMPLETED", "{done}");
    let parts = &t["artifacts"][0]["parts"];
    assert!(
        parts[0]["data"]["nodes"].is_array(),
        "structured result as data: {t}"
    );
    assert!(
        parts[1]["text"].as_str().unwrap().contains("v1."),
        "summary as text: {t}"
    );
    let id = t["id"].as_str().unwrap().to_owned();

    let got = alice.rpc("GetTask", json!({"id": id}));
    assert_eq!(got["result"]["id"], id.as_str(), "{got}");
    assert_eq!(state(&got["result"]), "TASK_STATE_COMPLETED");
    assert_eq!(got["result"]["artifacts"], t["artifacts"]);

    let listed = alice.rpc("ListTasks", json!({}));
    let tasks = listed["result"]["tasks"].as_array().unwrap();
    assert!(tasks.iter().any(|x| x["id"] == id.as_str()), "{listed}");
    let listed = alice.rpc("ListTasks", json!({"status": "TASK_STATE_FAILED"}));
    assert_eq!(listed["result"]["tasks"], json!([]), "{listed}");

    let mut bob = Agent::new(server.addr, BOB);
    let theirs = bob.rpc("GetTask", json!({"id": id}));
    assert_eq!(theirs["error"]["code"], -32001, "{theirs}");
    let unknown = bob.rpc("GetTask", json!({"id": "0".repeat(32)}));
    assert_eq!(
        theirs["error"]["message"]
            .as_str()
            .unwrap()
            .replace(&id, "X"),
        unknown["error"]["message"]
            .as_str()
            .unwrap()
            .replace(&"0".repeat(32), "X"),
        "no oracle"
    );
    assert!(bob.rpc("ListTasks", json!({}))["result"]["tasks"] == json!([]));

    let lines = std::fs::read_to_string(&audit).unwrap();
    let line: Value = lines
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|l| l["tool"] == "talos_version")
        .expect("an audit line");
    assert_eq!(line["transport"], "a2a", "{line}");
    assert_eq!(line["caller"], "alice", "{line}");
    assert_eq!(line["request_id"], "r1", "{line}");
    assert_eq!(
        line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
        "{line}"
    );

    let (_, _, metrics) = http(
        server.addr,
        "GET",
        "/metrics",
        &[("Authorization", ALICE)],
        "",
    );
    assert!(
        metrics.contains("talos_mcp_a2a_requests_total{method=\"SendMessage\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("talos_mcp_a2a_tool_calls_total 1"),
        "{metrics}"
    );
}

/// SendStreamingMessage answers with server-sent events: the task first, its artifact, and
/// its end; each event is a JSON-RPC response to the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_read_sends_the_task_its_artifact_and_its_end() {
    let (_sim, _dir, tc, _worker) = sim().await;
    let server = Server::start(&tc, &[]);
    let mut alice = Agent::new(server.addr, ALICE);
    let events = alice.stream(
        "SendStreamingMessage",
        send_params(json!({"tool": "talos_version"}), None),
    );
    assert!(events.len() >= 2, "{events:?}");
    assert!(
        events
            .iter()
            .all(|e| e["id"] == "r1" && e["jsonrpc"] == "2.0")
    );
    let first = &events[0]["result"]["task"];
    assert!(first.is_object(), "the task first: {events:?}");
    let id = first["id"].as_str().unwrap();
    let last = &events[events.len() - 1]["result"];
    let end = if last["task"].is_object() {
        &last["task"]
    } else {
        &last["statusUpdate"]
    };
    assert_eq!(state(end), "TASK_STATE_COMPLETED", "{events:?}");
    if last["statusUpdate"].is_object() {
        assert_eq!(last["statusUpdate"]["taskId"], id);
        let artifact = events
            .iter()
            .find_map(|e| e["result"]["artifactUpdate"].as_object())
            .expect("an artifact event");
        assert!(
            artifact["artifact"]["parts"][0]["data"].is_object(),
            "{artifact:?}"
        );
    } else {
        assert!(end["artifacts"][0]["parts"][0]["data"].is_object(), "{end}");
    }
}

/// A reboot stops in INPUT_REQUIRED with its plan before anything reaches the node; declined,
/// it ends CANCELED with no reboot; confirmed, it reboots exactly once, its steps streamed as
/// WORKING updates; answers to either finished task change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reboot_declined_then_confirmed_reaches_the_node_once() {
    let (sim, dir, tc, worker) = sim().await;
    let audit = dir.path().join("audit.jsonl");
    let server = Server::start(
        &tc,
        &[
            "--allow-destructive",
            "--audit-log",
            audit.to_str().unwrap(),
        ],
    );
    let mut alice = Agent::new(server.addr, ALICE);
    let reboot = json!({"tool": "talos_reboot", "arguments": {"node": worker, "wait": true, "wait_timeout_seconds": 30}});

    let asked = alice.send(reboot.clone());
    let t = task(&asked);
    assert_eq!(state(t), "TASK_STATE_INPUT_REQUIRED", "{asked}");
    let text = status_text(t);
    assert!(text.contains(&worker) && text.contains("confirm"), "{text}");
    let plan = t["status"]["message"]["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|p| p["data"]["plan"].as_object())
        .expect("the plan as data");
    assert_eq!(plan["node"], worker.as_str());
    assert_eq!(sim.calls(&worker, "Reboot"), 0, "nothing before the answer");
    let first = t["id"].as_str().unwrap().to_owned();

    // Bob cannot answer Alice's task.
    let mut bob = Agent::new(server.addr, BOB);
    assert_eq!(bob.answer(&first, true)["error"]["code"], -32001);
    assert_eq!(sim.calls(&worker, "Reboot"), 0);

    let declined = alice.answer(&first, false);
    let d = task(&declined);
    assert_eq!(state(d), "TASK_STATE_CANCELED", "{declined}");
    assert!(status_text(d).contains("declined"), "{declined}");
    assert_eq!(sim.calls(&worker, "Reboot"), 0);
    let late = alice.answer(&first, true);
    assert_eq!(late["error"]["code"], -32004, "{late}");
    assert_eq!(
        sim.calls(&worker, "Reboot"),
        0,
        "an answer to a finished task changes nothing"
    );

    let asked = alice.send(reboot);
    let second = task(&asked)["id"].as_str().unwrap().to_owned();
    assert_eq!(state(task(&asked)), "TASK_STATE_INPUT_REQUIRED", "{asked}");
    let events = alice.stream(
        "SendStreamingMessage",
        send_params(json!({"confirm": true}), Some(&second)),
    );
    let resumed = &events[0]["result"]["task"];
    assert_eq!(resumed["id"], second.as_str(), "{events:?}");
    assert_ne!(
        state(resumed),
        "TASK_STATE_INPUT_REQUIRED",
        "starts from the answer taken"
    );
    let last = &events[events.len() - 1]["result"]["statusUpdate"];
    assert_eq!(state(last), "TASK_STATE_COMPLETED", "{events:?}");
    let steps: Vec<String> = events
        .iter()
        .filter_map(|e| e["result"]["statusUpdate"].as_object())
        .filter(|u| u["status"]["state"] == "TASK_STATE_WORKING")
        .map(|u| {
            u["status"]["message"]["parts"][0]["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(
        steps.iter().any(|s| s.contains("back with a new boot id")),
        "the steps as WORKING updates: {steps:?}"
    );
    assert_eq!(sim.calls(&worker, "Reboot"), 1);

    let again = alice.answer(&second, true);
    assert_eq!(again["error"]["code"], -32004, "{again}");
    let read = alice.rpc("GetTask", json!({"id": second}));
    assert_eq!(state(&read["result"]), "TASK_STATE_COMPLETED", "{read}");
    assert_eq!(sim.calls(&worker, "Reboot"), 1, "exactly one reboot");
    // The audit says how each was confirmed: by the A2A caller's answer, not by a form.
    let confirmations: Vec<String> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["phase"] == "finished" && l["tool"] == "talos_reboot")
        .map(|l| l["confirmation"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(confirmations, ["a2a: declined", "a2a: confirmed"]);
}

/// CancelTask before the confirmation: CANCELED, nothing reaches the node; a second cancel is
/// refused as not cancelable; returnImmediately answers at once with the working task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_before_confirmation_changes_nothing() {
    let (sim, _dir, tc, worker) = sim().await;
    let server = Server::start(&tc, &["--allow-destructive"]);
    let mut alice = Agent::new(server.addr, ALICE);
    let asked = alice.send(json!({"tool": "talos_reboot", "arguments": {"node": worker}}));
    let id = task(&asked)["id"].as_str().unwrap().to_owned();
    assert_eq!(state(task(&asked)), "TASK_STATE_INPUT_REQUIRED", "{asked}");
    let cancelled = alice.rpc("CancelTask", json!({"id": id}));
    assert_eq!(
        state(&cancelled["result"]),
        "TASK_STATE_CANCELED",
        "{cancelled}"
    );
    let again = alice.rpc("CancelTask", json!({"id": id}));
    assert_eq!(again["error"]["code"], -32002, "{again}");
    let subscribed = alice.rpc("SubscribeToTask", json!({"id": id}));
    assert_eq!(subscribed["error"]["code"], -32004, "{subscribed}");
    assert_eq!(sim.calls(&worker, "Reboot"), 0);
}

/// Refusals: an unknown tool and a disabled tier end REJECTED with MCP's words, bad arguments
/// FAILED; a text part gets the usage reply; no token is 401; a missing or other A2A version,
/// an unknown method and the push methods get the spec's JSON-RPC errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_protocol_errors() {
    let (sim, _dir, tc, worker) = sim().await;
    let server = Server::start(&tc, &["--max-body", "4096"]);
    let mut alice = Agent::new(server.addr, ALICE);

    let unknown = alice.send(json!({"tool": "talos_nope"}));
    assert_eq!(state(task(&unknown)), "TASK_STATE_REJECTED", "{unknown}");
    assert!(
        status_text(task(&unknown)).contains("is not served here"),
        "{unknown}"
    );
    let disabled = alice.send(json!({"tool": "talos_reboot", "arguments": {"node": worker}}));
    assert_eq!(state(task(&disabled)), "TASK_STATE_REJECTED", "{disabled}");
    assert!(
        status_text(task(&disabled)).contains("--allow-destructive"),
        "{disabled}"
    );
    assert_eq!(sim.calls(&worker, "Reboot"), 0);
    let bad = alice.send(json!({"tool": "talos_version", "arguments": {"nodes": 7}}));
    assert_eq!(state(task(&bad)), "TASK_STATE_FAILED", "{bad}");
    assert!(
        status_text(task(&bad)).starts_with("InvalidArgument"),
        "{bad}"
    );

    let usage = alice.rpc(
        "SendMessage",
        json!({"message": {"messageId": "t1", "role": "ROLE_USER", "parts": [{"text": "hello"}]}}),
    );
    let text = usage["result"]["message"]["parts"][0]["text"]
        .as_str()
        .unwrap();
    assert!(
        text.contains("\"tool\"") && text.contains("talos_version"),
        "{usage}"
    );

    let mut anonymous = Agent::new(server.addr, ALICE);
    anonymous.bearer = None;
    let (status, _, _) = anonymous.post("GetTask", json!({"id": "x"}));
    assert_eq!(status, 401);

    alice.version = Some("0.3");
    assert_eq!(alice.rpc("ListTasks", json!({}))["error"]["code"], -32009);
    alice.version = None;
    assert_eq!(alice.rpc("ListTasks", json!({}))["error"]["code"], -32009);
    alice.version = Some("1.0");
    assert_eq!(
        alice.rpc("message/send", json!({}))["error"]["code"],
        -32601
    );
    assert_eq!(
        alice.rpc("CreateTaskPushNotificationConfig", json!({}))["error"]["code"],
        -32003
    );
    assert_eq!(
        alice.rpc("GetTask", json!({"task": 1}))["error"]["code"],
        -32602
    );

    // The HTTP guard of /mcp applies: body limit, Origin.
    let big =
        json!({"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "x".repeat(5000)}});
    let (status, _, _) = http(
        server.addr,
        "POST",
        "/a2a",
        &[("Authorization", ALICE), ("A2A-Version", "1.0")],
        &big.to_string(),
    );
    assert_eq!(status, 413);
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "ListTasks", "params": {}}).to_string();
    let (status, _, _) = http(
        server.addr,
        "POST",
        "/a2a",
        &[
            ("Authorization", ALICE),
            ("A2A-Version", "1.0"),
            ("Origin", "https://evil.example"),
        ],
        &list,
    );
    assert_eq!(status, 403);
}

/// `--confirm none`: a reboot runs at once. `returnImmediately` answers with the working task;
/// SubscribeToTask (another connection) streams its steps to the end; a CancelTask after the
/// reboot reached the node is refused as not cancelable, the reboot runs to its end, and the
/// record says the cancellation came too late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_follows_a_running_task_and_a_late_cancel_is_refused() {
    let (sim, _dir, tc, worker) = sim().await;
    let server = Server::start(&tc, &["--allow-destructive", "--confirm", "none"]);
    let mut alice = Agent::new(server.addr, ALICE);
    let mut params = send_params(
        json!({"tool": "talos_reboot", "arguments": {"node": worker, "wait": true, "wait_timeout_seconds": 30}}),
        None,
    );
    params["configuration"] = json!({"returnImmediately": true});
    let started = alice.rpc("SendMessage", params);
    assert_eq!(state(task(&started)), "TASK_STATE_WORKING", "{started}");
    let id = task(&started)["id"].as_str().unwrap().to_owned();
    for _ in 0..600 {
        if sim.calls(&worker, "Reboot") == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(sim.calls(&worker, "Reboot"), 1);
    let late = alice.rpc("CancelTask", json!({"id": id}));
    assert_eq!(late["error"]["code"], -32002, "{late}");

    let events = alice.stream("SubscribeToTask", json!({"id": id}));
    assert_eq!(events[0]["result"]["task"]["id"], id.as_str(), "{events:?}");
    let last = &events[events.len() - 1]["result"]["statusUpdate"];
    assert_eq!(state(last), "TASK_STATE_COMPLETED", "{events:?}");
    assert!(
        events.iter().any(
            |e| e["result"]["statusUpdate"]["status"]["message"]["parts"][0]["text"]
                .as_str()
                .is_some_and(|t| t.contains("back with a new boot id"))
        ),
        "{events:?}"
    );
    let read = alice.rpc("GetTask", json!({"id": id}));
    assert!(
        status_text(&read["result"]).contains("cancel requested after the change had started"),
        "{read}"
    );
    assert_eq!(sim.calls(&worker, "Reboot"), 1);
}
