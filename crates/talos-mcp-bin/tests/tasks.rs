//! Long-running tools as operations and MCP tasks, over HTTP with raw JSON-RPC: a reboot polled
//! to completion, confirmation inside a task (answered, or cancelled before it, which changes
//! nothing), a client that drops and reads its result from a new session while another caller
//! cannot, and a client without the Tasks extension that gets its answer and the operation id.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{ALICE, BIN, BOB, Server, http, sim};
use serde_json::{Value, json};

const TASKS: &str = "io.modelcontextprotocol/tasks";

/// The server of these tests: the destructive tier on, no audit log, and `extra` flags.
fn serve(tc: &str, extra: &[&str]) -> Server {
    let mut flags = vec!["--allow-destructive", "--audit-log", "off"];
    flags.extend_from_slice(extra);
    Server::start(tc, &flags)
}

/// One exchange on `/mcp`, accepting JSON or an event stream.
fn mcp(
    addr: std::net::SocketAddr,
    method: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let mut all = vec![("Accept", "application/json, text/event-stream")];
    all.extend_from_slice(headers);
    http(addr, method, "/mcp", &all, body)
}

/// The JSON-RPC answer in a JSON or SSE body.
fn answer(body: &str) -> Value {
    if let Ok(v) = serde_json::from_str(body) {
        return v;
    }
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|v| v.get("id").is_some() && v.get("method").is_none())
        .unwrap_or(Value::Null)
}

/// An MCP session of one caller over HTTP.
struct Session {
    addr: SocketAddr,
    bearer: &'static str,
    id: String,
    next: u64,
}

impl Session {
    /// Opens a session declaring `capabilities`.
    fn open(addr: SocketAddr, bearer: &'static str, capabilities: Value) -> Self {
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": capabilities,
            "clientInfo": {"name": "raw-tasks", "version": "1"}}});
        let (status, headers, body) = mcp(
            addr,
            "POST",
            &[("Authorization", bearer)],
            &init.to_string(),
        );
        assert_eq!(status, 200, "{body}");
        let init = answer(&body);
        assert!(
            init["result"]["capabilities"]["extensions"][TASKS].is_object(),
            "the server declares the Tasks extension: {init}"
        );
        let id = headers
            .iter()
            .find(|(k, _)| k == "mcp-session-id")
            .map(|(_, v)| v.clone())
            .expect("session id");
        let s = Self {
            addr,
            bearer,
            id,
            next: 1,
        };
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let (status, _, _) = mcp(addr, "POST", &s.headers(), &note.to_string());
        assert!(status == 200 || status == 202);
        s
    }

    /// A session that declares tasks and form elicitation.
    fn tasks(addr: SocketAddr, bearer: &'static str) -> Self {
        Self::open(
            addr,
            bearer,
            json!({"extensions": {TASKS: {}}, "elicitation": {"form": {}}}),
        )
    }

    fn headers(&self) -> Vec<(&str, &str)> {
        vec![
            ("Authorization", self.bearer),
            ("Mcp-Session-Id", self.id.as_str()),
        ]
    }

    /// Sends a request; returns the whole JSON-RPC answer.
    fn rpc(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let body = json!({"jsonrpc": "2.0", "id": self.next, "method": method, "params": params});
        let (status, _, text) = mcp(self.addr, "POST", &self.headers(), &body.to_string());
        assert_eq!(status, 200, "{method}: {text}");
        answer(&text)
    }

    fn call(&mut self, tool: &str, arguments: Value) -> Value {
        self.rpc("tools/call", json!({"name": tool, "arguments": arguments}))
    }

    fn get(&mut self, task: &str) -> Value {
        self.rpc("tasks/get", json!({"taskId": task}))
    }

    /// Polls `tasks/get` until the task leaves `working` (or reaches `until`), for up to 30 s.
    fn poll(&mut self, task: &str, until: &[&str]) -> Value {
        let start = Instant::now();
        loop {
            let got = self.get(task);
            let status = got["result"]["status"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if until.contains(&status.as_str()) {
                return got["result"].clone();
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "task {task} still {status}: {got}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn close(self) {
        let (status, _, _) = mcp(self.addr, "DELETE", &self.headers(), "");
        assert!(status == 204 || status == 200, "{status}");
    }
}

/// The task id of a `tools/call` answered with a task.
fn task_id(created: &Value) -> String {
    assert_eq!(created["result"]["resultType"], "task", "{created}");
    assert_eq!(created["result"]["status"], "working", "{created}");
    assert!(
        created["result"]["pollIntervalMs"].as_u64().is_some(),
        "{created}"
    );
    created["result"]["taskId"].as_str().unwrap().to_owned()
}

/// Token mode: the first task completes with the plan and a token, nothing done; the call
/// repeated with the token is a new task that reboots the node and follows it back, polled to
/// completion; its steps are in the operation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reboot_with_wait_runs_as_a_task_polled_to_completion() {
    let (sim, _dir, tc, worker) = sim().await;
    let server = serve(&tc, &["--confirm", "token"]);
    let mut alice = Session::tasks(server.addr, ALICE);
    let before = sim.boot_id(&worker);
    let args = json!({"node": worker, "wait": true, "wait_timeout_seconds": 30});

    let plan = task_id(&alice.call("talos_reboot", args.clone()));
    let planned = alice.poll(&plan, &["completed", "failed", "cancelled"]);
    assert_eq!(planned["status"], "completed", "{planned}");
    let token = planned["result"]["structuredContent"]["confirmation_token"]
        .as_str()
        .expect("a plan with a token")
        .to_owned();
    assert_eq!(sim.calls(&worker, "Reboot"), 0, "a plan changes nothing");

    let mut confirmed = args.clone();
    confirmed["confirmation_token"] = json!(token);
    let run = task_id(&alice.call("talos_reboot", confirmed));
    assert_ne!(run, plan);
    let done = alice.poll(&run, &["completed", "failed", "cancelled"]);
    assert_eq!(done["status"], "completed", "{done}");
    let result = &done["result"];
    assert_eq!(result["isError"], false, "{result}");
    assert_eq!(
        result["structuredContent"]["outcome"]["back"], true,
        "{result}"
    );
    assert_eq!(result["_meta"]["talos-mcp/operation"], run.as_str());
    assert_eq!(sim.calls(&worker, "Reboot"), 1);
    assert_ne!(sim.boot_id(&worker), before, "the node rebooted");
    assert!(
        done["ttlMs"].as_u64().is_some_and(|t| t >= 3_600_000),
        "{done}"
    );

    // The operation has the steps the tool reported.
    let shown = alice.call("talos_operations", json!({"id": run}));
    let op = &shown["result"]["structuredContent"]["operations"][0];
    assert_eq!(op["state"], "completed", "{shown}");
    assert_eq!(op["committed"], true, "{shown}");
    let steps: Vec<&str> = op["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["message"].as_str().unwrap())
        .collect();
    assert!(
        steps.iter().any(|s| s.contains("back with a new boot id")),
        "{steps:?}"
    );
    // A task that has ended cannot be cancelled.
    let late = alice.rpc("tasks/cancel", json!({"taskId": run}));
    assert!(
        late["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already ended"),
        "{late}"
    );
}

/// Form confirmation inside a task: the task waits in input_required with the form; cancelled
/// there, it ends cancelled and the node is untouched; answered with tasks/update, it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmation_by_form_inside_a_task_and_cancel_before_it() {
    let (sim, _dir, tc, worker) = sim().await;
    let server = serve(&tc, &[]);
    let mut alice = Session::tasks(server.addr, ALICE);

    // Cancelled before confirmation: nothing changes.
    let first = task_id(&alice.call("talos_reboot", json!({"node": worker})));
    let asking = alice.poll(&first, &["input_required", "completed", "failed"]);
    assert_eq!(asking["status"], "input_required", "{asking}");
    let form = &asking["inputRequests"]["confirm"];
    assert_eq!(form["method"], "elicitation/create", "{asking}");
    assert!(
        form["params"]["message"]
            .as_str()
            .unwrap()
            .contains(&worker),
        "the form names the node: {form}"
    );
    let ack = alice.rpc("tasks/cancel", json!({"taskId": first}));
    assert!(ack.get("error").is_none(), "{ack}");
    let cancelled = alice.poll(&first, &["cancelled", "completed", "failed"]);
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert_eq!(sim.calls(&worker, "Reboot"), 0, "nothing was done");
    // Input for a task that no longer waits is refused.
    let late = alice.rpc(
        "tasks/update",
        json!({"taskId": first, "inputResponses": {"confirm": {"action": "accept", "content": {"confirm": true}}}}),
    );
    assert!(late.get("error").is_some(), "{late}");
    assert_eq!(sim.calls(&worker, "Reboot"), 0);

    // Answered: the task resumes and the node reboots once.
    let second = task_id(&alice.call("talos_reboot", json!({"node": worker})));
    let asking = alice.poll(&second, &["input_required", "completed", "failed"]);
    assert_eq!(asking["status"], "input_required", "{asking}");
    let wrong = alice.rpc(
        "tasks/update",
        json!({"taskId": second, "inputResponses": {"other": {}}}),
    );
    assert!(
        wrong["error"]["message"]
            .as_str()
            .unwrap()
            .contains("outstanding"),
        "{wrong}"
    );
    let ack = alice.rpc(
        "tasks/update",
        json!({"taskId": second, "inputResponses": {"confirm": {"action": "accept", "content": {"confirm": true}}}}),
    );
    assert!(ack.get("error").is_none(), "{ack}");
    let done = alice.poll(&second, &["completed", "failed", "cancelled"]);
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["result"]["isError"], false, "{done}");
    assert_eq!(sim.calls(&worker, "Reboot"), 1);
}

/// A client that drops its session reads the finished result from a new one (same bearer
/// token); another caller sees neither the task nor the operation, and gets the same error as
/// for an id that does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_drops_reads_its_result_later_and_no_one_else_can() {
    let (sim, _dir, tc, worker) = sim().await;
    let server = serve(&tc, &["--confirm", "none"]);
    let mut first = Session::tasks(server.addr, ALICE);
    let id = task_id(&first.call(
        "talos_reboot",
        json!({"node": worker, "wait": true, "wait_timeout_seconds": 30}),
    ));
    first.close();

    let mut again = Session::tasks(server.addr, ALICE);
    let done = again.poll(&id, &["completed", "failed", "cancelled"]);
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        done["result"]["structuredContent"]["outcome"]["back"], true,
        "{done}"
    );
    assert_eq!(sim.calls(&worker, "Reboot"), 1);
    let listed = again.call("talos_operations", json!({}));
    assert_eq!(
        listed["result"]["structuredContent"]["operations"][0]["id"],
        id.as_str(),
        "{listed}"
    );

    let mut bob = Session::tasks(server.addr, BOB);
    let theirs = bob.get(&id);
    let unknown = bob.get(&"0".repeat(32));
    let words = |v: &Value, id: &str| v["error"]["message"].as_str().unwrap().replace(id, "ID");
    assert_eq!(theirs["error"]["code"], -32602, "{theirs}");
    assert_eq!(words(&theirs, &id), words(&unknown, &"0".repeat(32)));
    assert!(bob.rpc("tasks/cancel", json!({"taskId": id}))["error"].is_object());
    let listed = bob.call("talos_operations", json!({}));
    assert_eq!(
        listed["result"]["structuredContent"]["operations"],
        json!([]),
        "{listed}"
    );
    let shown = bob.call("talos_operations", json!({"id": id}));
    assert_eq!(shown["result"]["isError"], true, "{shown}");
}

/// A client without the Tasks extension gets the synchronous answer, which names the
/// operation; the operation shows the same result later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_tasks_gets_the_answer_and_the_operation_id() {
    let (sim, _dir, tc, worker) = sim().await;
    let server = serve(&tc, &["--confirm", "none"]);
    let mut plain = Session::open(server.addr, ALICE, json!({}));
    let answered = plain.call("talos_reboot", json!({"node": worker}));
    let result = &answered["result"];
    assert!(
        result.get("resultType").is_none_or(|t| t != "task"),
        "{answered}"
    );
    assert_eq!(result["isError"], false, "{answered}");
    let id = result["_meta"]["talos-mcp/operation"]
        .as_str()
        .expect("the operation id")
        .to_owned();
    assert!(
        result["content"][0]["text"].as_str().unwrap().contains(&id),
        "{answered}"
    );
    assert_eq!(sim.calls(&worker, "Reboot"), 1);
    // Without the extension, tasks/* are not for this client.
    let refused = plain.rpc("tasks/get", json!({"taskId": id}));
    assert!(refused["error"].is_object(), "{refused}");
    let shown = plain.call("talos_operations", json!({"id": id}));
    let op = &shown["result"]["structuredContent"]["operations"][0];
    assert_eq!(op["state"], "completed", "{shown}");
    assert_eq!(
        op["result"]["structuredContent"],
        result["structuredContent"]
    );
}

/// Over stdio, the end of input does not cut a task short whose change has begun: the process
/// waits (within the grace period) for the operation, which writes its `finished` audit line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_eof_waits_for_a_running_operation() {
    let (sim, dir, tc, worker) = sim().await;
    let audit = dir.path().join("audit.log");
    let mut child = Command::new(BIN)
        .env_remove("RUST_LOG")
        .args(["serve", "--talosconfig", &tc, "--allow-destructive"])
        .args(["--confirm", "none", "--audit-log", audit.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let send = |stdin: &mut std::process::ChildStdin, v: Value| {
        writeln!(stdin, "{v}").unwrap();
        stdin.flush().unwrap();
    };
    let mut read_answer = |id: u64| loop {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "stdout closed");
        let v: Value = serde_json::from_str(&line).unwrap();
        if v["id"] == id && v.get("method").is_none() {
            return v;
        }
    };
    send(
        &mut stdin,
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {"extensions": {TASKS: {}}},
            "clientInfo": {"name": "raw", "version": "1"}}}),
    );
    read_answer(1);
    send(
        &mut stdin,
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    );
    send(
        &mut stdin,
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "talos_reboot",
            "arguments": {"node": worker, "wait": true, "wait_timeout_seconds": 30}}}),
    );
    task_id(&read_answer(2));
    // Close input only once the reboot has been sent: the change has begun.
    for _ in 0..200 {
        if sim.calls(&worker, "Reboot") > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(sim.calls(&worker, "Reboot"), 1);
    drop(stdin);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("the server did not exit after the end of input");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    let lines = std::fs::read_to_string(&audit).unwrap();
    let finished: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["phase"] == "finished" && l["tool"] == "talos_reboot")
        .collect();
    assert_eq!(finished.len(), 1, "{lines}");
    assert_eq!(finished[0]["result"], "ok", "{lines}");
}
