//! Three replicas sharing one Redis (`--state-url`, `--stateless`) behind a round-robin proxy,
//! against one simulated cluster: a confirmation issued on one replica is redeemed on another
//! and refused when replayed on a third; two replicas racing to reboot one node (exactly one
//! reboot reaches it); an operation started on one replica read and cancelled from another; a
//! replica killed while it holds the change lock and an operation (both lapse; the others carry
//! on); the rate limit counted across replicas; and audit lines naming their replica.
//!
//! Needs `redis-server` (Debian's package; `.ci/install-deps` installs it). Without it these
//! tests fail with that advice rather than pass unseen.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

use common::{ALICE, BOB, Server, http, sim};
use serde_json::{Value, json};

/// A `redis-server` on a free loopback port, with a password and persistence off; killed on drop.
struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

/// The password the test's Redis requires (given to the replicas in a file).
const REDIS_PASSWORD: &str = "replicas-test-password-0123456789";

fn redis_server() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file());
    match found {
        Some(p) => p,
        None => panic!(
            "redis-server is not installed: these tests run three replicas on a real Redis. Run .ci/install-deps (or `apt-get install redis-server`), then test again"
        ),
    }
}

impl Redis {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(redis_server())
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--requirepass", REDIS_PASSWORD])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "redis-server exited");
            if line.contains("Ready to accept connections") {
                break;
            }
        }
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        Self {
            child,
            port,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy sending each new connection to the next backend in turn (the test's requests
/// each use one connection, so each goes to the next replica). Records which backend served
/// each connection.
struct Proxy {
    addr: SocketAddr,
    served: Arc<Mutex<Vec<usize>>>,
}

impl Proxy {
    fn start(backends: Vec<SocketAddr>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(Mutex::new(Vec::new()));
        let next = AtomicUsize::new(0);
        let log = served.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let i = next.fetch_add(1, Ordering::SeqCst) % backends.len();
                log.lock().unwrap().push(i);
                let Ok(backend) = TcpStream::connect(backends[i]) else {
                    continue;
                };
                let (mut c_in, mut b_out) =
                    (client.try_clone().unwrap(), backend.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_in, &mut b_out);
                    let _ = b_out.shutdown(std::net::Shutdown::Write);
                });
                let (mut b_in, mut c_out) = (backend, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut b_in, &mut c_out);
                    let _ = c_out.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Self { addr, served }
    }

    /// The backend that served the last connection.
    fn last(&self) -> usize {
        *self.served.lock().unwrap().last().unwrap()
    }
}

/// Three replicas sharing `redis`, each with its own audit file, and the files they share.
struct Replicas {
    servers: Vec<Option<Server>>,
    addrs: Vec<SocketAddr>,
    audits: Vec<PathBuf>,
}

/// The replicas' rate limit (per second; the burst is 5 times this).
const RATE: u32 = 4;

fn replicas(tc: &str, redis: &Redis, dir: &Path) -> Replicas {
    let secret = dir.join("confirm-secret");
    std::fs::write(&secret, "a shared confirmation secret of 32+ bytes").unwrap();
    let password = dir.join("redis-password");
    std::fs::write(&password, format!("{REDIS_PASSWORD}\n")).unwrap();
    let url = redis.url();
    let rate = RATE.to_string();
    let mut servers = Vec::new();
    let mut audits = Vec::new();
    for name in ["replica-a", "replica-b", "replica-c"] {
        let audit = dir.join(format!("{name}.audit.jsonl"));
        let server = Server::start(
            tc,
            &[
                "--allow-destructive",
                "--confirm",
                "token",
                "--stateless",
                "--state-url",
                &url,
                "--state-password-file",
                password.to_str().unwrap(),
                "--confirm-secret-file",
                secret.to_str().unwrap(),
                "--replica",
                name,
                "--lease",
                "2",
                "--change-lock-wait",
                "0",
                "--rate-limit",
                &rate,
                "--audit-log",
                audit.to_str().unwrap(),
            ],
        );
        servers.push(Some(server));
        audits.push(audit);
    }
    let addrs = servers.iter().map(|s| s.as_ref().unwrap().addr).collect();
    Replicas {
        servers,
        addrs,
        audits,
    }
}

/// One stateless MCP request (no session, no initialize): the JSON-RPC answer.
fn mcp(addr: SocketAddr, bearer: &str, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let (status, _, text) = http(
        addr,
        "POST",
        "/mcp",
        &[
            ("Authorization", bearer),
            ("Accept", "application/json, text/event-stream"),
            ("MCP-Protocol-Version", "2025-06-18"),
        ],
        &body.to_string(),
    );
    assert_eq!(status, 200, "{method}: {text}");
    if let Ok(v) = serde_json::from_str::<Value>(&text) {
        return v;
    }
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|v| v.get("id").is_some() && v.get("method").is_none())
        .unwrap_or(Value::Null)
}

fn call(addr: SocketAddr, tool: &str, arguments: Value) -> Value {
    let answer = mcp(
        addr,
        ALICE,
        "tools/call",
        json!({"name": tool, "arguments": arguments}),
    );
    assert!(answer["result"].is_object(), "{answer}");
    answer["result"].clone()
}

fn text(result: &Value) -> String {
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Waits (bounded) until the simulated node is back from a reboot.
fn until_up(sim: &talos_sim::SimCluster, node: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sim.is_up(node) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The first call of a reboot: its plan's token.
fn plan(addr: SocketAddr, worker: &str) -> String {
    let r = call(addr, "talos_reboot", json!({"node": worker}));
    assert_eq!(
        r["structuredContent"]["status"], "confirmation_required",
        "{r}"
    );
    r["structuredContent"]["confirmation_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn confirmed(addr: SocketAddr, worker: &str, token: &str) -> Value {
    call(
        addr,
        "talos_reboot",
        json!({"node": worker, "confirmation_token": token}),
    )
}

/// One A2A request to `addr`.
fn a2a(addr: SocketAddr, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": "1", "method": method, "params": params});
    let (status, _, text) = http(
        addr,
        "POST",
        "/a2a",
        &[("Authorization", ALICE), ("A2A-Version", "1.0")],
        &body.to_string(),
    );
    assert_eq!(status, 200, "{method}: {text}");
    serde_json::from_str(&text).unwrap()
}

fn task_state(task: &Value) -> String {
    task["status"]["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Starts a reboot as an A2A task on `addr`: it waits for its confirmation (holding the change
/// lock). Its id.
fn waiting_reboot(addr: SocketAddr, worker: &str) -> String {
    static SENT: AtomicUsize = AtomicUsize::new(0);
    let message = json!({"message": {
        "messageId": format!("m-{}", SENT.fetch_add(1, Ordering::SeqCst)),
        "role": "ROLE_USER",
        "parts": [{"data": {"tool": "talos_reboot", "arguments": {"node": worker}}}],
    }});
    let answer = a2a(addr, "SendMessage", message);
    let task = &answer["result"]["task"];
    assert_eq!(task_state(task), "TASK_STATE_INPUT_REQUIRED", "{answer}");
    task["id"].as_str().unwrap().to_owned()
}

/// Polls GetTask on `addr` until the task reaches `state` (at most `within`).
fn until_state(addr: SocketAddr, id: &str, state: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let got = a2a(addr, "GetTask", json!({"id": id}));
        if task_state(&got["result"]) == state || Instant::now() > deadline {
            return got["result"].clone();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_confirmations_locks_operations_and_the_rate_limit() {
    let redis = Redis::start();
    let (sim, dir, tc, worker) = sim().await;
    let mut set = replicas(&tc, &redis, dir.path());
    let proxy = Proxy::start(set.addrs.clone());
    let [a, b, c] = [set.addrs[0], set.addrs[1], set.addrs[2]];

    // Step one on one replica, step two on the next; the token replayed on the third is
    // refused. Exactly one reboot reaches the node.
    let token = plan(proxy.addr, &worker);
    let first = proxy.last();
    let done = confirmed(proxy.addr, &worker, &token);
    let second = proxy.last();
    assert_ne!(first, second, "two replicas");
    assert_eq!(done["structuredContent"]["status"], "done", "{done}");
    assert_eq!(sim.calls(&worker, "Reboot"), 1);
    let replay = confirmed(proxy.addr, &worker, &token);
    assert_ne!(proxy.last(), first);
    assert_ne!(proxy.last(), second);
    assert_eq!(replay["isError"], true, "{replay}");
    assert!(text(&replay).contains("already used"), "{replay}");
    assert_eq!(sim.calls(&worker, "Reboot"), 1, "the replay did nothing");

    // Two replicas racing to reboot one node, each with a valid confirmation: the change lock
    // lets one through; the other is refused at once (--change-lock-wait 0), naming the holder.
    until_up(&sim, &worker);
    let (t1, t2) = (plan(a, &worker), plan(b, &worker));
    sim.set_fault(
        &worker,
        talos_sim::Fault::Latency(Duration::from_millis(1500)),
    );
    let racers: Vec<_> = [(a, t1), (b, t2)]
        .into_iter()
        .map(|(addr, t)| {
            let w = worker.clone();
            std::thread::spawn(move || confirmed(addr, &w, &t))
        })
        .collect();
    let results: Vec<Value> = racers.into_iter().map(|h| h.join().unwrap()).collect();
    sim.set_fault(&worker, talos_sim::Fault::None);
    let winners = results
        .iter()
        .filter(|r| r["structuredContent"]["status"] == "done")
        .count();
    assert_eq!(winners, 1, "{results:?}");
    let loser = results.iter().find(|r| r["isError"] == true).unwrap();
    assert!(
        text(loser).contains("another change") && text(loser).contains("on replica replica-"),
        "{loser}"
    );
    assert_eq!(sim.calls(&worker, "Reboot"), 2, "exactly one more reboot");

    // An operation started on A, read and cancelled from B: it stops on A, nothing is done.
    until_up(&sim, &worker);
    let id = waiting_reboot(a, &worker);
    let read = a2a(b, "GetTask", json!({"id": id}));
    assert_eq!(
        task_state(&read["result"]),
        "TASK_STATE_INPUT_REQUIRED",
        "{read}"
    );
    // An id naming another kind of key in the store is just an unknown task.
    let probe = a2a(b, "GetTask", json!({"id": format!("{id}:lease")}));
    assert_eq!(probe["error"]["code"], -32001, "{probe}");
    let cancel = a2a(b, "CancelTask", json!({"id": id}));
    assert!(cancel["result"].is_object(), "{cancel}");
    let ended = until_state(c, &id, "TASK_STATE_CANCELED", Duration::from_secs(10));
    assert_eq!(task_state(&ended), "TASK_STATE_CANCELED", "{ended}");
    assert_eq!(sim.calls(&worker, "Reboot"), 2);

    // The rate limit is one bucket for a caller across the replicas: Bob's burst (5 × rate)
    // is spent once, not once per replica.
    let started = Instant::now();
    let mut allowed = 0;
    let tries = 3 * 5 * RATE;
    for _ in 0..tries {
        let (status, _, _) = http(proxy.addr, "GET", "/metrics", &[("Authorization", BOB)], "");
        assert!(status == 200 || status == 429, "{status}");
        if status == 200 {
            allowed += 1;
        }
    }
    let refill = (started.elapsed().as_secs_f64() * f64::from(RATE)).ceil() as u32;
    assert!(
        allowed >= 5 * RATE && allowed <= 5 * RATE + refill,
        "{allowed} of {tries} allowed (refill {refill})"
    );

    // A killed while its operation waits for confirmation and holds the change lock: B marks
    // the operation failed once A's lease lapses, the lock lapses too, and B carries on.
    until_up(&sim, &worker);
    let id = waiting_reboot(a, &worker);
    let killed = set.servers[0].take().unwrap();
    drop(killed);
    let lapsed = until_state(b, &id, "TASK_STATE_FAILED", Duration::from_secs(15));
    assert_eq!(task_state(&lapsed), "TASK_STATE_FAILED", "{lapsed}");
    assert!(lapsed.to_string().contains("replica"), "{lapsed}");
    let deadline = Instant::now() + Duration::from_secs(15);
    let token = loop {
        let r = call(b, "talos_reboot", json!({"node": worker}));
        if r["structuredContent"]["status"] == "confirmation_required" {
            break r["structuredContent"]["confirmation_token"]
                .as_str()
                .unwrap()
                .to_owned();
        }
        assert!(Instant::now() < deadline, "the lock never lapsed: {r}");
        std::thread::sleep(Duration::from_millis(250));
    };
    let done = confirmed(c, &worker, &token);
    assert_eq!(done["structuredContent"]["status"], "done", "{done}");
    assert_eq!(sim.calls(&worker, "Reboot"), 3);
    let version = call(b, "talos_version", json!({}));
    assert_ne!(version["isError"], true, "{version}");

    // Every audit line names the replica that wrote it.
    for (i, audit) in set.audits.iter().enumerate() {
        let lines = std::fs::read_to_string(audit).unwrap_or_default();
        for line in lines.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            assert_eq!(
                v["replica"],
                ["replica-a", "replica-b", "replica-c"][i],
                "{line}"
            );
        }
    }
    let b_lines = std::fs::read_to_string(&set.audits[1]).unwrap();
    assert!(b_lines.contains("talos_reboot"), "{b_lines}");
    // Nothing of the store's password reached the audit or the process list of flags.
    for audit in &set.audits {
        let lines = std::fs::read_to_string(audit).unwrap_or_default();
        assert!(!lines.contains(REDIS_PASSWORD));
    }
    drop(set.servers);
}

/// A replica refuses to start with a shared store but a per-process random confirmation
/// secret (tokens issued by one replica would be refused by the others), and with a store that
/// does not answer the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_store_needs_a_shared_secret_and_the_right_password() {
    let redis = Redis::start();
    let (_sim, dir, tc, _) = sim().await;
    let run = |extra: &[&str]| {
        let out = Command::new(common::BIN)
            .args(["serve", "--talosconfig", &tc])
            .args(["--http", "127.0.0.1:0", "--audit-log", "off"])
            .args(extra)
            .env_remove("TALOS_MCP_STATE_URL")
            .env_remove("TALOS_MCP_CONFIRM_SECRET_FILE")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(&["--state-url", &redis.url()]);
    assert!(err.contains("--confirm-secret-file"), "{err}");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "a shared confirmation secret of 32+ bytes").unwrap();
    let wrong = "redis://:not-the-password@127.0.0.1";
    let url = format!("{wrong}:{}/0", redis.port);
    let err = run(&[
        "--state-url",
        &url,
        "--confirm-secret-file",
        secret.to_str().unwrap(),
    ]);
    assert!(err.contains("shared state store"), "{err}");
    assert!(
        !err.contains("not-the-password"),
        "the password is never shown: {err}"
    );
}

/// A stateless server never asks a handshake-era client through a server-to-client request
/// (its answer could reach another replica): a client declaring form elicitation gets the
/// token flow's plan instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateless_server_confirms_handshake_era_clients_with_tokens() {
    let (sim, _dir, tc, worker) = sim().await;
    let server = Server::start(
        &tc,
        &["--allow-destructive", "--stateless", "--audit-log", "off"],
    );
    let answer = mcp(
        server.addr,
        ALICE,
        "tools/call",
        json!({
            "name": "talos_reboot",
            "arguments": {"node": worker},
            "_meta": {"io.modelcontextprotocol/clientCapabilities": {"elicitation": {"form": {}}}},
        }),
    );
    let result = &answer["result"];
    assert_eq!(
        result["structuredContent"]["status"], "confirmation_required",
        "{answer}"
    );
    assert!(result["structuredContent"]["confirmation_token"].is_string());
    assert_eq!(sim.calls(&worker, "Reboot"), 0);
}
