//! The binary end to end: demo, tools, call with env/flag precedence, stdio driven by a real MCP
//! client over the child's pipes (and nothing but protocol on stdout), HTTP security, metrics,
//! graceful shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use talos_sim::{SimCluster, SimConfig};

const BIN: &str = env!("CARGO_BIN_EXE_talos-mcp");

/// A simulated cluster and a talosconfig file for it.
async fn sim() -> (SimCluster, tempfile::TempDir, String) {
    let sim = SimCluster::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("talosconfig");
    std::fs::write(&path, sim.talosconfig("os:admin").unwrap()).unwrap();
    (sim, dir, path.display().to_string())
}

fn talos_mcp(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_remove("RUST_LOG")
        .env("TALOS_MCP_AUDIT_LOG", "off");
    for (k, _) in std::env::vars() {
        if k.starts_with("TALOS_MCP_") {
            c.env_remove(k);
        }
    }
    c.env("TALOS_MCP_AUDIT_LOG", "off");
    c
}

#[test]
fn demo_runs_to_completion() {
    let out = talos_mcp(&["demo"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "→ initialize",
        "27 tools",
        "5/5 node(s) answered",
        "healthy",
        "level=error",
        "refused because the destructive tier is off",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
}

#[test]
fn tools_lists_every_tier() {
    let out = talos_mcp(&["tools", "--json"]).output().unwrap();
    assert!(out.status.success());
    let tools: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    // Every tool of the registry, whatever its tier (the README states the count; a test of the
    // library checks that).
    assert_eq!(tools.len(), talos_mcp::Registry::get().all().len());
    assert!(tools.len() >= 39);
    for name in [
        "talos_reboot",
        "talos_upgrade",
        "talos_rollback",
        "talos_cluster_upgrade",
    ] {
        assert!(
            tools.iter().any(|t| t["name"] == name
                && t["tier"] == "destructive"
                && t["toolset"] == "lifecycle"),
            "{name}"
        );
    }
    let table = talos_mcp(&["tools"]).output().unwrap();
    assert!(String::from_utf8_lossy(&table.stdout).contains("talos_version"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_contexts_check_and_env_precedence() {
    let (_sim, _dir, tc) = sim().await;
    let out = talos_mcp(&[
        "call",
        "talos_hostname",
        "--args",
        r#"{"nodes":["127.0.10.12"]}"#,
        "--talosconfig",
        &tc,
    ])
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        result["structuredContent"]["nodes"][0]["result"]["hostname"],
        "talos-cp-2"
    );

    // The environment selects toolsets...
    let out = talos_mcp(&["call", "talos_hostname", "--talosconfig", &tc])
        .env("TALOS_MCP_TOOLSETS", "etcd")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "talos_hostname is not in the etcd toolset"
    );
    // ...and a flag overrides the environment.
    let out = talos_mcp(&[
        "call",
        "talos_hostname",
        "--talosconfig",
        &tc,
        "--toolsets",
        "info",
    ])
    .env("TALOS_MCP_TOOLSETS", "etcd")
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Same safety rules as serve: the destructive tier is off.
    let out = talos_mcp(&[
        "call",
        "talos_reboot",
        "--args",
        r#"{"node":"127.0.10.14"}"#,
        "--talosconfig",
        &tc,
    ])
    .output()
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--allow-destructive"));

    let out = talos_mcp(&["contexts", "--talosconfig", &tc])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("talos-sim") && text.contains("127.0.10.11") && !text.contains("PRIVATE KEY"),
        "{text}"
    );
    let out = talos_mcp(&["check", "--talosconfig", &tc])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("OK") && text.contains("v1.11.5"),
        "{text}"
    );
    let out = talos_mcp(&["check", "--talosconfig", "/nonexistent/talosconfig"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/talosconfig"));
}

/// Writes JSON-RPC lines to a stdio server, closes stdin, and returns every stdout line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_stdout_carries_only_protocol_messages() {
    let (_sim, _dir, tc) = sim().await;
    let mut child = talos_mcp(&["serve", "--talosconfig", &tc, "--log-level", "trace"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Drain stderr concurrently: at trace level it outgrows the pipe buffer.
    let mut stderr_pipe = child.stderr.take().unwrap();
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text);
        text
    });
    let messages = [
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "talos_version", "arguments": {}}}),
    ];
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let done = line.contains("\"id\":3");
            lines.push(line);
            if done {
                break;
            }
        }
        lines
    });
    for m in &messages {
        writeln!(stdin, "{m}").unwrap();
    }
    stdin.flush().unwrap();
    let lines = reader.join().unwrap();
    drop(stdin); // EOF ends the session
    let status = wait_timeout(&mut child, Duration::from_secs(10)).expect("exits on stdin EOF");
    assert!(status.success());
    let stderr = stderr_reader.join().unwrap();
    assert!(
        stderr.contains("TRACE") || stderr.contains("DEBUG"),
        "logs go to stderr"
    );
    assert_eq!(lines.len(), 3, "{lines:#?}");
    for line in &lines {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|_| panic!("non-protocol output on stdout: {line}"));
        assert_eq!(v["jsonrpc"], "2.0");
    }
    let last: Value = serde_json::from_str(&lines[2]).unwrap();
    assert_eq!(
        last["result"]["structuredContent"]["nodes"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_served_to_an_rmcp_client_over_child_pipes() {
    use rmcp::ServiceExt;
    let (_sim, _dir, tc) = sim().await;
    let mut child = tokio::process::Command::new(BIN)
        .args(["serve", "--talosconfig", &tc])
        .env("TALOS_MCP_AUDIT_LOG", "off")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stdin = child.stdin.take().unwrap();
    let client = ().serve((stdout, stdin)).await.unwrap();
    assert_eq!(client.list_all_tools().await.unwrap().len(), 27);
    let r = client
        .call_tool(rmcp::model::CallToolRequestParams::new(
            "talos_etcd_members",
        ))
        .await
        .unwrap();
    assert_eq!(
        r.structured_content.unwrap()["members"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let _ = client.cancel().await;
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "clean exit on EOF");
}

fn wait_timeout(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}

/// Starts `serve --http 127.0.0.1:0` and returns the child and its address. The caller waits
/// for the child (the test stops it with SIGTERM).
#[allow(clippy::zombie_processes)]
fn http_server(tc: &str, extra: &[&str]) -> (Child, SocketAddr) {
    let mut args = vec![
        "serve",
        "--talosconfig",
        tc,
        "--http",
        "127.0.0.1:0",
        "--log-level",
        "warn",
    ];
    args.extend_from_slice(extra);
    let mut child = talos_mcp(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "server exited before listening"
        );
        if let Some(rest) = line
            .trim()
            .strip_prefix("listening on http://")
            .or_else(|| line.trim().strip_prefix("listening on https://"))
        {
            let addr = rest.trim_end_matches("/mcp").parse().unwrap();
            std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
            return (child, addr);
        }
    }
}

/// A minimal HTTP/1.1 exchange: returns status, headers (lower-cased names) and body.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap_or_default()
        .split(' ')
        .nth(1)
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

/// Announces a body of `length` bytes and sends none: the server must refuse on the header alone.
/// (Sending the body races the server's early answer: it may close while the client still
/// writes, and the client then sees a broken pipe or a reset instead of the status.)
fn oversized_post(addr: SocketAddr, length: usize) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: {BEARER}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    let mut status = String::new();
    BufReader::new(s).read_line(&mut status).unwrap();
    status.split(' ').nth(1).unwrap_or("0").parse().unwrap_or(0)
}

const TOKEN: &str = "alice:0123456789abcdef0123456789";
const BEARER: &str = "Bearer 0123456789abcdef0123456789";

fn mcp_headers(extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut h = vec![
        ("Authorization", BEARER.to_owned()),
        ("Content-Type", "application/json".to_owned()),
        ("Accept", "application/json, text/event-stream".to_owned()),
    ];
    h.extend(extra.iter().cloned());
    h
}

fn post(
    addr: SocketAddr,
    headers: &[(&'static str, String)],
    body: &Value,
) -> (u16, Vec<(String, String)>, String) {
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    request(addr, "POST", "/mcp", &h, &body.to_string())
}

/// The JSON-RPC message in a JSON or SSE response body.
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

fn session(addr: SocketAddr) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw-http", "version": "1"}}});
    let (status, headers, body) = post(addr, &mcp_headers(&[]), &init);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        rpc_body(&body)["result"]["serverInfo"]["name"],
        "talos-mcp",
        "{body}"
    );
    let id = headers
        .iter()
        .find(|(k, _)| k == "mcp-session-id")
        .map(|(_, v)| v.clone())
        .expect("session id");
    let (status, _, _) = post(
        addr,
        &mcp_headers(&[("Mcp-Session-Id", id.clone())]),
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    );
    assert!(status == 202 || status == 200);
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_security_metrics_and_shutdown() {
    let (_sim, dir, tc) = sim().await;
    let audit_path = dir.path().join("audit.log");
    let (mut child, addr) = http_server(
        &tc,
        &[
            "--http-tokens",
            TOKEN,
            "--rate-limit",
            "2",
            "--audit-log",
            audit_path.to_str().unwrap(),
        ],
    );

    assert_eq!(request(addr, "GET", "/healthz", &[], "").0, 200);
    let ready = Instant::now();
    while request(addr, "GET", "/readyz", &[], "").0 != 200 {
        assert!(ready.elapsed() < Duration::from_secs(10), "never ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}});
    let (status, headers, _) = request(
        addr,
        "POST",
        "/mcp",
        &[("Content-Type", "application/json")],
        &init.to_string(),
    );
    assert_eq!(status, 401);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "www-authenticate" && v == "Bearer")
    );
    assert_eq!(
        request(
            addr,
            "POST",
            "/mcp",
            &[("Authorization", "Bearer wrong-token-wrong-token")],
            "{}"
        )
        .0,
        401
    );
    assert_eq!(
        post(
            addr,
            &mcp_headers(&[("Origin", "http://evil.example".to_owned())]),
            &init
        )
        .0,
        403,
        "DNS-rebinding protection"
    );
    assert_eq!(oversized_post(addr, 2 * 1024 * 1024), 413);

    // Two concurrent sessions, a tool call in each.
    let a = session(addr);
    let b = session(addr);
    assert_ne!(a, b);
    for (i, s) in [a.clone(), b].into_iter().enumerate() {
        let call = json!({"jsonrpc": "2.0", "id": 10 + i, "method": "tools/call", "params": {"name": "talos_hostname", "arguments": {"nodes": ["127.0.10.11"]}}});
        let (status, _, body) = post(addr, &mcp_headers(&[("Mcp-Session-Id", s)]), &call);
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            rpc_body(&body)["result"]["structuredContent"]["nodes"][0]["result"]["hostname"],
            "talos-cp-1",
            "{body}"
        );
    }

    let (status, _, metrics) = request(addr, "GET", "/metrics", &[("Authorization", BEARER)], "");
    assert_eq!(status, 200);
    assert!(metrics.contains("talos_mcp_sessions_total 2"), "{metrics}");
    assert!(metrics.contains("talos_mcp_active_sessions 2"), "{metrics}");
    let rpcs = metrics
        .lines()
        .find_map(|l| l.strip_prefix("talos_mcp_talos_rpc_duration_seconds_count "))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(rpcs >= 2, "Talos RPCs are measured: {metrics}");
    assert!(
        metrics.contains("talos_mcp_tool_calls_total{tool=\"talos_hostname\",outcome=\"ok\"} 2"),
        "{metrics}"
    );
    for line in metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "not Prometheus text: {line}");
    }

    // Ending a session closes it in the metrics too.
    let (status, _, _) = request(
        addr,
        "DELETE",
        "/mcp",
        &[("Authorization", BEARER), ("Mcp-Session-Id", a.as_str())],
        "",
    );
    assert_eq!(status, 204, "DELETE of a session");
    let closing = Instant::now();
    loop {
        let (_, _, metrics) = request(addr, "GET", "/metrics", &[("Authorization", BEARER)], "");
        if metrics.contains("talos_mcp_active_sessions 1") {
            break;
        }
        assert!(
            closing.elapsed() < Duration::from_secs(5),
            "session never closed: {metrics}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The token's name is the caller in the audit log.
    let audit = std::fs::read_to_string(&audit_path).unwrap();
    let line = audit
        .lines()
        .find(|l| l.contains("talos_hostname"))
        .expect("audited");
    let record: Value = serde_json::from_str(line).unwrap();
    assert_eq!(record["caller"], "alice", "{line}");
    assert_eq!(record["transport"], "http");

    // Rate limit: burst of 10 at 2/s; a quick burst beyond it is refused.
    let codes: Vec<u16> = (0..15)
        .map(|_| request(addr, "GET", "/metrics", &[("Authorization", BEARER)], "").0)
        .collect();
    assert!(codes.contains(&429), "{codes:?}");

    // SIGTERM: clean shutdown.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = wait_timeout(&mut child, Duration::from_secs(10)).expect("stops on SIGTERM");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_loopback_without_auth_is_refused() {
    let (_sim, _dir, tc) = sim().await;
    let out = talos_mcp(&["serve", "--talosconfig", &tc, "--http", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refusing to serve"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_listener_serves_with_the_given_certificate() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (_sim, dir, tc) = sim().await;
    let ca = talos_sim::pki::CertificateAuthority::generate("listener-ca").unwrap();
    let cert = ca
        .server_cert(&["127.0.0.1"], talos_sim::pki::Validity::Current)
        .unwrap();
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, &cert.cert_pem).unwrap();
    std::fs::write(&key_path, &cert.key_pem).unwrap();
    let (mut child, addr) = http_server(
        &tc,
        &[
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
    );

    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(tls_roots(ca.cert_pem()))
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = connector
        .connect(
            rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    tls.write_all(
        format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut response = String::new();
    let _ = tls.read_to_string(&mut response).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // The listener pins TLS 1.3: a client that offers only TLS 1.2 gets no session.
    let tls12_only = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .with_root_certificates(tls_roots(ca.cert_pem()))
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let refused = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls12_only))
        .connect(
            rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap(),
            tcp,
        )
        .await;
    assert!(refused.is_err(), "a TLS 1.2-only client was served");
    // Plain HTTP on the TLS port gets nothing useful.
    assert_ne!(request(addr, "GET", "/healthz", &[], "").0, 200);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(wait_timeout(&mut child, Duration::from_secs(10)).is_some());
}

/// A root store holding one CA certificate (PEM).
fn tls_roots(ca_pem: &str) -> rustls::RootCertStore {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    roots
}
