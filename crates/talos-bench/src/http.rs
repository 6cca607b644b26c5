//! The HTTP load generator: MCP sessions over streamable HTTP on kept-alive HTTP/1.1
//! connections (hyper client, TCP_NODELAY), 127.0.0.1 only, bounded in count and time.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;
use tokio::process::Child;

/// Longest wait for one HTTP answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// `talos-mcp serve --http` on a loopback port.
#[derive(Debug)]
pub(crate) struct Server {
    child: Child,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
}

impl Server {
    /// Starts the server and waits for the line that names its address.
    pub(crate) async fn start(bin: &Path, args: &[String]) -> Result<Self> {
        let mut all: Vec<String> = [
            "serve",
            "--log-level",
            "error",
            "--http",
            "127.0.0.1:0",
            "--rate-limit",
            "1000000",
        ]
        .map(str::to_owned)
        .to_vec();
        all.extend_from_slice(args);
        let mut child = crate::mcp::command(bin, &all)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stderr = child.stderr.take().context("no stderr")?;
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let addr = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.trim().strip_prefix("listening on http://") {
                    return Ok(rest.trim_end_matches("/mcp").parse::<SocketAddr>()?);
                }
            }
            bail!("the HTTP server exited before listening")
        })
        .await
        .context("the HTTP server did not start within 30 s")??;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self { child, addr })
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> Result<u32> {
        self.child.id().context("the HTTP server has exited")
    }

    /// Stops the server.
    pub(crate) async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// One kept-alive HTTP/1.1 connection.
async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (send, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(connection);
    Ok(send)
}

/// POSTs one JSON-RPC message to /mcp; returns the session header and the body.
async fn post(
    send: &mut SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    session: Option<&str>,
    message: &Value,
) -> Result<(Option<String>, Bytes)> {
    let mut request = http::Request::post("/mcp")
        .header(http::header::HOST, addr.to_string())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18");
    if let Some(id) = session {
        request = request.header("mcp-session-id", id);
    }
    let request = request.body(Full::new(Bytes::from(serde_json::to_vec(message)?)))?;
    let exchange = async {
        send.ready().await?;
        let response = send.send_request(request).await?;
        let status = response.status();
        let session = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!(
                "/mcp answered {status}: {:.200}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok((session, body))
    };
    tokio::time::timeout(ANSWER_TIMEOUT, exchange)
        .await
        .context("no HTTP answer within 60 s")?
}

/// The JSON-RPC response with `id` in a JSON or SSE body; a tool error is an error.
fn response(body: &[u8], id: u64) -> Result<Value> {
    let text = String::from_utf8_lossy(body);
    let found = serde_json::from_str::<Value>(&text)
        .ok()
        .into_iter()
        .chain(
            text.lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok()),
        )
        .find(|v| v.get("id") == Some(&json!(id)))
        .with_context(|| format!("no response with id {id} in {:.200}", text))?;
    if found.get("error").is_some() || found["result"]["isError"] == json!(true) {
        bail!("the call failed: {:.300}", found.to_string());
    }
    Ok(found)
}

/// An MCP session: its connection and id.
struct Session {
    send: SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    id: String,
    next: u64,
}

impl Session {
    async fn open(addr: SocketAddr) -> Result<Self> {
        let mut send = connect(addr).await?;
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "talos-bench", "version": "1"}}});
        let (id, body) = post(&mut send, addr, None, &init).await?;
        response(&body, 0)?;
        let id = id.context("initialize answered without a session id")?;
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        post(&mut send, addr, Some(&id), &note).await?;
        Ok(Self {
            send,
            addr,
            id,
            next: 1,
        })
    }

    fn call_message(&mut self, node: &str) -> (u64, Value) {
        let id = self.next;
        self.next += 1;
        let message = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
            "name": "talos_version", "arguments": {"nodes": [node]}}});
        (id, message)
    }

    /// One `talos_version` call on the session's kept-alive connection.
    async fn call(&mut self, node: &str) -> Result<Duration> {
        let (id, message) = self.call_message(node);
        let started = Instant::now();
        let (_, body) = post(&mut self.send, self.addr, Some(&self.id), &message).await?;
        let took = started.elapsed();
        response(&body, id)?;
        Ok(took)
    }

    /// One `talos_version` call on a new connection (the session stays the same).
    async fn call_fresh(&mut self, node: &str) -> Result<Duration> {
        let (id, message) = self.call_message(node);
        let started = Instant::now();
        let mut send = connect(self.addr).await?;
        let (_, body) = post(&mut send, self.addr, Some(&self.id), &message).await?;
        let took = started.elapsed();
        response(&body, id)?;
        Ok(took)
    }
}

/// Latencies of sequential calls on one session: kept-alive, then each on a fresh connection.
pub(crate) async fn one_session(
    addr: SocketAddr,
    node: &str,
    calls: usize,
) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let mut session = Session::open(addr).await?;
    for _ in 0..calls.min(20) {
        session.call(node).await?;
    }
    let mut kept = Vec::with_capacity(calls);
    for _ in 0..calls {
        kept.push(session.call(node).await?);
    }
    let mut fresh = Vec::with_capacity(calls);
    for _ in 0..calls {
        fresh.push(session.call_fresh(node).await?);
    }
    Ok((kept, fresh))
}

/// What the load run measured.
#[derive(Debug)]
pub(crate) struct Load {
    pub(crate) latencies: Vec<Duration>,
    pub(crate) wall: Duration,
    /// CPU seconds of the load generator's own threads.
    pub(crate) generator_cpu: f64,
}

/// Thread-name prefix of the load generator's runtime (its CPU time is read by this name).
const THREADS: &str = "bench-load";

/// `sessions` sessions on their own kept-alive connections, each making `calls` calls, run on
/// a runtime of its own (two threads) so the generator's CPU share can be reported.
pub(crate) fn load(addr: SocketAddr, node: String, sessions: usize, calls: usize) -> Result<Load> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(THREADS)
        .enable_all()
        .build()?;
    let before = crate::procfs::own_threads_cpu_secs(THREADS);
    let result = runtime.block_on(async move {
        let mut opened = Vec::with_capacity(sessions);
        for _ in 0..sessions {
            opened.push(Session::open(addr).await?);
        }
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for mut session in opened {
            let node = node.clone();
            tasks.spawn(async move {
                let mut took = Vec::with_capacity(calls);
                for _ in 0..calls {
                    took.push(session.call(&node).await?);
                }
                Ok::<_, anyhow::Error>(took)
            });
        }
        let mut latencies = Vec::with_capacity(sessions * calls);
        while let Some(done) = tasks.join_next().await {
            latencies.extend(done??);
        }
        Ok::<_, anyhow::Error>((latencies, started.elapsed()))
    });
    let generator_cpu = crate::procfs::own_threads_cpu_secs(THREADS) - before;
    drop(runtime);
    let (latencies, wall) = result?;
    Ok(Load {
        latencies,
        wall,
        generator_cpu,
    })
}
