//! What the HTTP tests of the binary share: a simulated cluster with a talosconfig, the server
//! on a loopback port with two callers, and one raw HTTP/1.1 exchange.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use talos_sim::{SimCluster, SimConfig};

pub const BIN: &str = env!("CARGO_BIN_EXE_talos-mcp");
pub const TOKENS: &str = "alice:0123456789abcdef0123456789,bob:fedcba9876543210fedcba9876";
pub const ALICE: &str = "Bearer 0123456789abcdef0123456789";
pub const BOB: &str = "Bearer fedcba9876543210fedcba9876";

pub async fn sim() -> (SimCluster, tempfile::TempDir, String, String) {
    let sim = SimCluster::start(SimConfig {
        reboot_downtime: Duration::from_millis(800),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("talosconfig");
    std::fs::write(&path, sim.talosconfig("os:admin").unwrap()).unwrap();
    let worker = sim
        .nodes()
        .into_iter()
        .find(|n| format!("{:?}", n.role).to_lowercase().contains("worker"))
        .unwrap()
        .address;
    (sim, dir, path.display().to_string(), worker)
}

/// `serve --http 127.0.0.1:0` with two callers and `extra` flags; stopped on drop.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Server {
    #[allow(clippy::zombie_processes)] // `drop` kills and waits for it
    pub fn start(tc: &str, extra: &[&str]) -> Self {
        let mut c = Command::new(BIN);
        c.env_remove("RUST_LOG");
        for (k, _) in std::env::vars() {
            if k.starts_with("TALOS_MCP_") || k.starts_with("OTEL_") {
                c.env_remove(k);
            }
        }
        let mut child = c
            .args(["serve", "--talosconfig", tc, "--http", "127.0.0.1:0"])
            .args(["--log-level", "warn", "--http-tokens", TOKENS])
            .args(extra)
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
                return Self { child, addr };
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP exchange: status, lower-cased headers, body.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\nContent-Type: application/json\r\n",
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
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, headers, body)
}

/// The payload of a chunked body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}
