//! Soak: the real binary serving streamable HTTP to 64 concurrent sessions for a bounded time
//! while faults are toggled on the simulator behind it. Checks that the server's memory stays
//! bounded, that no connections or sessions leak (open descriptors of the server process and the
//! sessions gauge return to where they were), that every tool call gets exactly one audit line,
//! and that every audit line is whole JSON (no interleaving).
//!
//! `TALOS_MCP_SOAK_SECS` sets the duration (default 30 s, as in CI; docs/reliability.md quotes a
//! 300 s run). With `SOAK_OUT=<file>` the run's figures are written there as Markdown.
//! Linux only (it reads /proc); all traffic goes to 127.0.0.1.

#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use talos_sim::{Fault, SimCluster, SimConfig};

const BIN: &str = env!("CARGO_BIN_EXE_talos-mcp");
const SESSIONS: usize = 64;

/// Starts `serve --http`; the test stops it with SIGTERM and waits for it.
#[allow(clippy::zombie_processes)]
fn server(tc: &str, audit: &str) -> (Child, SocketAddr) {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("TALOS_MCP_") {
            c.env_remove(k);
        }
    }
    let mut child = c
        .args([
            "serve",
            "--talosconfig",
            tc,
            "--http",
            "127.0.0.1:0",
            "--log-level",
            "warn",
            "--audit-log",
            audit,
            "--rate-limit",
            "1000000",
        ])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "server exited");
        if let Some(rest) = line.trim().strip_prefix("listening on http://") {
            let addr = rest.trim_end_matches("/mcp").parse().unwrap();
            std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
            return (child, addr);
        }
    }
}

/// Status, headers (lower-case names) and body of a response.
type Response = (u16, Vec<(String, String)>, String);

/// One HTTP/1.1 exchange on a fresh connection: status, headers (lower-case names), body.
fn request(
    addr: SocketAddr,
    method: &str,
    headers: &[(&str, &str)],
    path: &str,
    body: &str,
) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
        .collect();
    Ok((status, headers, body.to_owned()))
}

/// The JSON-RPC response in a JSON or SSE body.
fn rpc_body(body: &str) -> Value {
    if let Ok(v) = serde_json::from_str(body) {
        return v;
    }
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|v| v.get("id").is_some())
        .unwrap_or(Value::Null)
}

fn open_session(addr: SocketAddr) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "soak", "version": "1"}}});
    let (status, headers, body) = request(addr, "POST", &[], "/mcp", &init.to_string()).unwrap();
    assert_eq!(status, 200, "{body}");
    let id = headers
        .into_iter()
        .find(|(k, _)| k == "mcp-session-id")
        .map(|(_, v)| v)
        .expect("session id");
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let (status, _, _) = request(
        addr,
        "POST",
        &[("Mcp-Session-Id", &id)],
        "/mcp",
        &note.to_string(),
    )
    .unwrap();
    assert!(status == 200 || status == 202);
    id
}

fn close_session(addr: SocketAddr, id: &str) {
    let (status, _, _) = request(addr, "DELETE", &[("Mcp-Session-Id", id)], "/mcp", "").unwrap();
    assert_eq!(status, 204);
}

fn metric(addr: SocketAddr, name: &str) -> u64 {
    let (_, _, text) = request(addr, "GET", &[], "/metrics", "").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(u64::MAX)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[derive(Default)]
struct Tally {
    calls: AtomicU64,
    tool_errors: AtomicU64,
    http_failures: AtomicU64,
    sessions: AtomicU64,
    per_tool: Mutex<HashMap<String, u64>>,
    markers: Mutex<Vec<String>>,
}

/// One client: a session, tool calls until the deadline, a new session every 10 calls.
fn worker(addr: SocketAddr, n: usize, until: Instant, tally: Arc<Tally>) {
    let mut session = open_session(addr);
    tally.sessions.fetch_add(1, Ordering::Relaxed);
    let mut i = 0u64;
    while Instant::now() < until {
        i += 1;
        let marker = format!("soak-{n}-{i}");
        let (tool, args) = match i % 4 {
            0 => ("talos_version", json!({})),
            1 => (
                "talos_hostname",
                json!({"nodes": ["127.0.10.11", "127.0.10.14"]}),
            ),
            2 => (
                "talos_service_logs",
                json!({"service": "apid", "tail": 5, "grep": marker, "nodes": ["127.0.10.12"]}),
            ),
            _ => ("talos_memory", json!({})),
        };
        let call = json!({"jsonrpc": "2.0", "id": i + 1, "method": "tools/call", "params": {"name": tool, "arguments": args}});
        match request(
            addr,
            "POST",
            &[("Mcp-Session-Id", &session)],
            "/mcp",
            &call.to_string(),
        ) {
            Ok((200, _, body)) => {
                let v = rpc_body(&body);
                if v["result"].is_object() {
                    tally.calls.fetch_add(1, Ordering::Relaxed);
                    *tally
                        .per_tool
                        .lock()
                        .unwrap()
                        .entry(tool.to_owned())
                        .or_default() += 1;
                    if tool == "talos_service_logs" {
                        tally.markers.lock().unwrap().push(marker);
                    }
                    let failed = v["result"]["structuredContent"]["failed_nodes"]
                        .as_array()
                        .is_some_and(|f| !f.is_empty());
                    if v["result"]["isError"] == true || failed {
                        tally.tool_errors.fetch_add(1, Ordering::Relaxed);
                    }
                } else {
                    tally.http_failures.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {
                tally.http_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        if i.is_multiple_of(10) {
            close_session(addr, &session);
            session = open_session(addr);
            tally.sessions.fetch_add(1, Ordering::Relaxed);
        }
    }
    close_session(addr, &session);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_sessions_with_faults_stay_bounded_and_audited() {
    let secs: u64 = std::env::var("TALOS_MCP_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let sim = SimCluster::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tc = dir.path().join("talosconfig");
    std::fs::write(&tc, sim.talosconfig("os:admin").unwrap()).unwrap();
    let audit = dir.path().join("audit.log");
    let (mut child, addr) = server(tc.to_str().unwrap(), audit.to_str().unwrap());
    let pid = child.id();

    // Warm up: one session and call, so lazily opened things (the Talos channel, the audit
    // file) are open before the baseline is taken.
    let ready = Instant::now();
    while request(addr, "GET", &[], "/readyz", "")
        .map(|r| r.0)
        .unwrap_or(0)
        != 200
    {
        assert!(ready.elapsed() < Duration::from_secs(20), "never ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = open_session(addr);
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "talos_version", "arguments": {}}});
    let (status, _, _) = request(
        addr,
        "POST",
        &[("Mcp-Session-Id", &s)],
        "/mcp",
        &call.to_string(),
    )
    .unwrap();
    assert_eq!(status, 200);
    close_session(addr, &s);
    std::thread::sleep(Duration::from_millis(500));
    let fds_before = open_fds(pid);
    let rss_start = rss_kib(pid);

    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let tally = Arc::new(Tally::default());
    tally.calls.fetch_add(1, Ordering::Relaxed);
    tally
        .per_tool
        .lock()
        .unwrap()
        .insert("talos_version".into(), 1);

    // Faults: every 250 ms one node gets one of the faults, the previous one is cleared.
    let stop = Arc::new(AtomicBool::new(false));
    let toggler = {
        let sim = sim.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let nodes: Vec<String> = sim.nodes().into_iter().map(|n| n.address).collect();
            let mut toggles = 0u64;
            let mut k = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let node = &nodes[k % nodes.len()];
                let fault = match k % 5 {
                    0 => Fault::Unavailable,
                    1 => Fault::Latency(Duration::from_millis(300)),
                    2 => Fault::Status {
                        code: tonic::Code::Internal,
                        message: "soak".into(),
                    },
                    3 => Fault::AbortStreamAfter { bytes: 200 },
                    _ => Fault::None,
                };
                sim.set_fault(node, fault);
                tokio::time::sleep(Duration::from_millis(250)).await;
                sim.set_fault(node, Fault::None);
                toggles += 1;
                k = k.wrapping_mul(7).wrapping_add(3);
            }
            toggles
        })
    };

    // Memory: sampled every second while the load runs.
    let samples = Arc::new(Mutex::new(Vec::<(u64, u64)>::new()));
    let sampler = {
        let samples = samples.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let fds = open_fds(pid) as u64;
                samples.lock().unwrap().push((rss_kib(pid), fds));
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };

    let workers: Vec<_> = (0..SESSIONS)
        .map(|n| {
            let tally = tally.clone();
            std::thread::spawn(move || worker(addr, n, until, tally))
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let load_secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let toggles = toggler.await.unwrap();
    sampler.join().unwrap();

    // Nothing left open: sessions gauge at zero, descriptors back to the baseline.
    let settle = Instant::now();
    let (mut active, mut fds_after) = (u64::MAX, usize::MAX);
    while settle.elapsed() < Duration::from_secs(20) {
        active = metric(addr, "talos_mcp_active_sessions");
        fds_after = open_fds(pid);
        if active == 0 && fds_after <= fds_before + 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let rss_end = rss_kib(pid);
    let samples = samples.lock().unwrap().clone();
    let rss_peak = samples.iter().map(|s| s.0).max().unwrap_or(rss_end);
    let fds_peak = samples.iter().map(|s| s.1).max().unwrap_or(0);
    // The second half of the run against the first: memory does not keep growing.
    let half = samples.len() / 2;
    let first_half_peak = samples[..half]
        .iter()
        .map(|s| s.0)
        .max()
        .unwrap_or(rss_start);
    let second_half_peak = samples[half..].iter().map(|s| s.0).max().unwrap_or(rss_end);

    let calls = tally.calls.load(Ordering::Relaxed);
    let sessions_total = metric(addr, "talos_mcp_sessions_total");

    // The audit: one whole JSON line per call, per tool, and per logs marker.
    let audit_text = std::fs::read_to_string(&audit).unwrap();
    let mut audited: HashMap<String, u64> = HashMap::new();
    let mut marker_lines: HashMap<String, u64> = HashMap::new();
    let mut audit_lines = 0u64;
    for line in audit_text.lines() {
        let record: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("an audit line is not whole JSON ({e}): {line}"));
        audit_lines += 1;
        *audited
            .entry(record["tool"].as_str().unwrap().to_owned())
            .or_default() += 1;
        if let Some(m) = record["arguments"]["grep"].as_str() {
            *marker_lines.entry(m.to_owned()).or_default() += 1;
        }
    }
    let per_tool = tally.per_tool.lock().unwrap().clone();
    let markers = tally.markers.lock().unwrap().clone();

    if let Ok(path) = std::env::var("SOAK_OUT") {
        let md = format!(
            "| figure | value |\n|---|---|\n\
             | duration of load | {load_secs:.0} s |\n\
             | concurrent sessions | {SESSIONS} |\n\
             | sessions opened and closed | {} (server counter: {sessions_total}) |\n\
             | tool calls answered | {calls} ({:.0}/s) |\n\
             | of which with a failed node or isError (injected faults) | {} |\n\
             | HTTP-level failures | {} |\n\
             | fault toggles on the simulator | {toggles} |\n\
             | server RSS: before load / peak / after | {} / {} / {} MiB |\n\
             | server RSS peak: first half / second half | {} / {} MiB |\n\
             | server open fds: before / peak / after | {fds_before} / {fds_peak} / {fds_after} |\n\
             | active sessions after the run | {active} |\n\
             | audit lines / calls | {audit_lines} / {calls} |\n",
            tally.sessions.load(Ordering::Relaxed),
            calls as f64 / load_secs,
            tally.tool_errors.load(Ordering::Relaxed),
            tally.http_failures.load(Ordering::Relaxed),
            rss_start / 1024,
            rss_peak / 1024,
            rss_end / 1024,
            first_half_peak / 1024,
            second_half_peak / 1024,
        );
        std::fs::write(path, md).unwrap();
    }

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    sim.shutdown().await;

    assert_eq!(
        tally.http_failures.load(Ordering::Relaxed),
        0,
        "requests failed"
    );
    assert!(
        calls > SESSIONS as u64,
        "too little load to mean anything: {calls}"
    );
    assert!(toggles > 0);
    assert_eq!(active, 0, "sessions leaked");
    assert!(
        fds_after <= fds_before + 2,
        "descriptors leaked: {fds_before} before, {fds_after} after"
    );
    assert_eq!(audit_lines, calls, "one audit line per call");
    assert_eq!(audited, per_tool, "audit lines per tool");
    assert_eq!(marker_lines.len(), markers.len());
    assert!(
        marker_lines.values().all(|n| *n == 1),
        "a call audited twice"
    );
    // Bounded memory: no growth from the first half of the run to the second beyond slack for
    // allocator noise, and well under what 64 sessions' worth of unbounded buffering would take.
    assert!(
        second_half_peak <= first_half_peak + first_half_peak / 2 + 16 * 1024,
        "RSS grew: {first_half_peak} KiB then {second_half_peak} KiB"
    );
    assert!(rss_peak < 512 * 1024, "RSS peak {rss_peak} KiB");
}
