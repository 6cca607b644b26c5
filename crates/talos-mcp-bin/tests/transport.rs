//! The HTTP transport under hostile or broken clients: Host and Origin checks, body limits and
//! timeouts whatever the framing, stalled and surplus connections, sessions bound to their caller,
//! the open-file limit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use talos_sim::{SimCluster, SimConfig};

const BIN: &str = env!("CARGO_BIN_EXE_talos-mcp");
const ALICE: &str = "alice:0123456789abcdef0123456789";
const BOB: &str = "bob:fedcba9876543210fedcba9876";
const ALICE_BEARER: &str = "Bearer 0123456789abcdef0123456789";
const BOB_BEARER: &str = "Bearer fedcba9876543210fedcba9876";

async fn sim() -> (SimCluster, tempfile::TempDir, String) {
    let sim = SimCluster::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("talosconfig");
    std::fs::write(&path, sim.talosconfig("os:admin").unwrap()).unwrap();
    (sim, dir, path.display().to_string())
}

fn talos_mcp(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args).env_remove("RUST_LOG");
    for (k, _) in std::env::vars() {
        if k.starts_with("TALOS_MCP_") {
            c.env_remove(k);
        }
    }
    c.env("TALOS_MCP_AUDIT_LOG", "off");
    c
}

/// A running `serve --http 127.0.0.1:0`: its address and everything it wrote on stderr.
struct Server {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    fn start(tc: &str, extra: &[&str]) -> Self {
        Self::start_with(talos_mcp(BIN, &[]), tc, extra)
    }

    #[allow(clippy::zombie_processes)] // `stop` waits for it
    fn start_with(mut command: Command, tc: &str, extra: &[&str]) -> Self {
        command
            .args(["serve", "--talosconfig", tc, "--http", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "server exited before listening"
            );
            if let Some(rest) = line.trim().strip_prefix("listening on http://") {
                let addr = rest.trim_end_matches("/mcp").parse().unwrap();
                let text = Arc::new(Mutex::new(String::new()));
                let sink = text.clone();
                std::thread::spawn(move || {
                    for line in stderr.lines() {
                        let Ok(line) = line else { break };
                        sink.lock().unwrap().push_str(&line);
                        sink.lock().unwrap().push('\n');
                    }
                });
                return Self {
                    child,
                    addr,
                    stderr: text,
                };
            }
        }
    }

    /// Stops the server (SIGTERM) and returns its stderr.
    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(20) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(100));
        self.stderr.lock().unwrap().clone()
    }
}

/// Sends raw bytes and returns the status and the whole response (the server closes).
fn raw(addr: SocketAddr, bytes: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    read_response(s)
}

fn read_response(mut s: TcpStream) -> (u16, String) {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// An HTTP/1.1 request with `Connection: close`; `host` is the Host header.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    raw(addr, req.as_bytes())
}

fn initialize() -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw-http", "version": "1"}}}).to_string()
}

const JSON: [(&str, &str); 2] = [
    ("Content-Type", "application/json"),
    ("Accept", "application/json, text/event-stream"),
];

fn mcp_post(addr: SocketAddr, host: &str, extra: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut headers = JSON.to_vec();
    headers.extend_from_slice(extra);
    request(addr, "POST", "/mcp", host, &headers, body)
}

fn session_id(response: &str) -> String {
    response
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("mcp-session-id")
                .then(|| v.trim().to_owned())
        })
        .expect("session id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_names_are_checked_on_mcp_and_metrics_not_on_probes() {
    let (_sim, _dir, tc) = sim().await;
    // Loopback listen address, no tokens: loopback names only.
    let server = Server::start(&tc, &[]);
    let addr = server.addr;
    let local = addr.to_string();
    assert_eq!(mcp_post(addr, &local, &[], &initialize()).0, 200);
    assert_eq!(
        mcp_post(
            addr,
            &format!("localhost:{}", addr.port()),
            &[],
            &initialize()
        )
        .0,
        200
    );
    assert_eq!(
        mcp_post(addr, "talos-mcp.ns.svc:8080", &[], &initialize()).0,
        403,
        "a name not configured is refused"
    );
    // /metrics is readable only under an allowed name (a DNS-rebinding page sends its own).
    assert_eq!(request(addr, "GET", "/metrics", &local, &[], "").0, 200);
    let (status, body) = request(addr, "GET", "/metrics", "evil.example:80", &[], "");
    assert_eq!(status, 403, "{body}");
    // Probes send the pod IP as Host: they stay open.
    assert_eq!(
        request(addr, "GET", "/healthz", "10.0.0.5:8080", &[], "").0,
        200
    );
    server.stop();

    // The deployed case: the Service name is configured.
    let server = Server::start(
        &tc,
        &[
            "--http-tokens",
            ALICE,
            "--allowed-hosts",
            "talos-mcp.ns.svc:8080,talos-mcp",
        ],
    );
    let addr = server.addr;
    let auth = [("Authorization", ALICE_BEARER)];
    let (status, body) = mcp_post(addr, "talos-mcp.ns.svc:8080", &auth, &initialize());
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        mcp_post(addr, "talos-mcp:9999", &auth, &initialize()).0,
        200
    );
    assert_eq!(
        mcp_post(addr, "talos-mcp.ns.svc:9090", &auth, &initialize()).0,
        403,
        "the port is part of a host:port entry"
    );
    assert_eq!(
        mcp_post(addr, "other.ns.svc:8080", &auth, &initialize()).0,
        403
    );
    assert_eq!(
        request(addr, "GET", "/metrics", "talos-mcp.ns.svc:8080", &auth, "").0,
        200
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_is_not_text_is_refused() {
    let (_sim, _dir, tc) = sim().await;
    let server = Server::start(&tc, &[]);
    let addr = server.addr;
    let body = initialize();
    let mut req = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\nOrigin: http://evil",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(b"\xff\xfe.example\r\n\r\n");
    req.extend_from_slice(body.as_bytes());
    let (status, text) = raw(addr, &req);
    assert_eq!(status, 403, "{text}");
    // The same request with an allowed Origin passes.
    let (status, _) = mcp_post(
        addr,
        &addr.to_string(),
        &[("Origin", "http://localhost")],
        &body,
    );
    assert_eq!(status, 200);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_limited_and_timed_as_they_are_read() {
    let (_sim, _dir, tc) = sim().await;
    let server = Server::start(&tc, &["--body-timeout", "1"]);
    let addr = server.addr;

    // A chunked body (no Content-Length) over --max-body (1 MiB by default): 413.
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut writer = s.try_clone().unwrap();
    let send = std::thread::spawn(move || {
        let head = format!(
            "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        writer.write_all(head.as_bytes())?;
        let chunk = vec![b' '; 64 * 1024];
        for _ in 0..32 {
            writer.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())?;
            writer.write_all(&chunk)?;
            writer.write_all(b"\r\n")?;
        }
        writer.write_all(b"0\r\n\r\n")
    });
    let (status, text) = read_response(s);
    let _ = send.join();
    assert_eq!(status, 413, "{}", &text[..text.len().min(300)]);

    // A body that stops arriving: 408 after --body-timeout.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        format!(
            "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: 100\r\n\r\n{{\"jsonrpc\""
        )
        .as_bytes(),
    )
    .unwrap();
    let (status, text) = read_response(s);
    assert_eq!(status, 408, "{text}");
    server.stop();
}

fn healthz(addr: SocketAddr) -> u16 {
    request(addr, "GET", "/healthz", &addr.to_string(), &[], "").0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_request_head_is_cut_off_after_the_header_timeout() {
    let (_sim, _dir, tc) = sim().await;
    let server = Server::start(&tc, &["--header-timeout", "1"]);
    let addr = server.addr;
    // Nothing sent, and a head that stops half-way: both closed after the header timeout (the
    // read ends; it does not run into the client's own 10 s timeout).
    let silent = TcpStream::connect(addr).unwrap();
    let mut partial = TcpStream::connect(addr).unwrap();
    partial
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ").as_bytes())
        .unwrap();
    for mut s in [silent, partial] {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        let read = s.read_to_end(&mut buf);
        assert!(
            read.is_ok() || buf.starts_with(b"HTTP/1.1 408"),
            "the server kept a stalled connection open: {read:?}"
        );
    }
    assert_eq!(healthz(addr), 200);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_connections_over_the_cap_do_not_keep_healthz_out() {
    let (_sim, _dir, tc) = sim().await;
    // A header timeout far beyond the test: only the cap can free places.
    let server = Server::start(&tc, &["--max-connections", "16", "--header-timeout", "600"]);
    let addr = server.addr;
    // Cap + 20 connections that stall in their request head: the oldest 20 make room for the
    // newer ones and are closed, the last 16 are held...
    let stalled: Vec<TcpStream> = (0..36)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: ").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s
        })
        .collect();
    for (i, mut s) in stalled.iter().take(20).enumerate() {
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("stalled connection {i} was kept although the cap was reached: {e}"),
        }
    }
    // ...and a probe still gets in, at once and again, while they are.
    for _ in 0..3 {
        assert_eq!(healthz(addr), 200);
    }
    drop(stalled);
    server.stop();
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_file_limit_is_raised_to_the_hard_limit() {
    let (_sim, _dir, tc) = sim().await;
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let hard: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4))
        .and_then(|h| h.parse().ok())
        .unwrap();
    if hard <= 256 {
        return; // nothing to raise to
    }
    let mut shell = talos_mcp("sh", &["-c", r#"ulimit -Sn 256 && exec "$0" "$@""#, BIN]);
    shell
        .env_remove("TALOS_MCP_AUDIT_LOG")
        .env("TALOS_MCP_AUDIT_LOG", "off");
    let server = Server::start_with(shell, &tc, &[]);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.child.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_owned();
    server.stop();
    let soft: u64 = line.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert_eq!(soft, hard, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_answer_only_to_the_caller_that_opened_them() {
    let (_sim, _dir, tc) = sim().await;
    let server = Server::start(
        &tc,
        &[
            "--http-tokens",
            &format!("{ALICE},{BOB}"),
            "--log-level",
            "info",
        ],
    );
    let addr = server.addr;
    let host = addr.to_string();
    let alice = [("Authorization", ALICE_BEARER)];
    let (status, response) = mcp_post(addr, &host, &alice, &initialize());
    assert_eq!(status, 200, "{response}");
    let id = session_id(&response);
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string();
    let as_alice = [
        ("Authorization", ALICE_BEARER),
        ("Mcp-Session-Id", id.as_str()),
    ];
    let as_bob = [
        ("Authorization", BOB_BEARER),
        ("Mcp-Session-Id", id.as_str()),
    ];
    assert!(matches!(
        mcp_post(addr, &host, &as_alice, &initialized).0,
        200 | 202
    ));
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).to_string();

    // Another token holder with the session id: the session does not exist for them.
    let (status, body) = mcp_post(addr, &host, &as_bob, &list);
    assert_eq!(status, 404, "{body}");
    let (status, _) = request(addr, "DELETE", "/mcp", &host, &as_bob, "");
    assert_eq!(status, 404);
    // The owner still has it.
    let (status, body) = mcp_post(addr, &host, &as_alice, &list);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("talos_version"), "{body}");
    assert_eq!(request(addr, "DELETE", "/mcp", &host, &as_alice, "").0, 204);

    // Session ids are credentials of a sort: not in the logs at info level.
    let stderr = server.stop();
    assert!(!stderr.contains(&id), "session id logged:\n{stderr}");
}
