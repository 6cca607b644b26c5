//! A minimal MCP client over a child process's stdio: one request at a time, newline-delimited
//! JSON-RPC, every read bounded by a timeout.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// How long one answer may take before the run is declared broken.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// The server as a child process speaking MCP on stdin/stdout.
#[derive(Debug)]
pub(crate) struct Mcp {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    next_id: u64,
}

/// A `talos-mcp` command with the caller's environment cleared of `TALOS_MCP_*` settings.
pub(crate) fn command(bin: &Path, args: &[String]) -> Command {
    let mut c = Command::new(bin);
    for (k, _) in std::env::vars() {
        if k.starts_with("TALOS_MCP_") || k.starts_with("OTEL_") {
            c.env_remove(k);
        }
    }
    c.args(args).env_remove("RUST_LOG").kill_on_drop(true);
    c
}

impl Mcp {
    /// Starts `bin serve <args>` (stdio); nothing is sent yet.
    pub(crate) fn spawn(bin: &Path, args: &[String]) -> Result<Self> {
        let mut all = vec!["serve".to_owned(), "--log-level".into(), "error".into()];
        all.extend_from_slice(args);
        let mut child = command(bin, &all)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = child.stdout.take().context("no stdout")?;
        Ok(Self {
            child,
            stdin,
            lines: BufReader::with_capacity(1 << 16, stdout).lines(),
            next_id: 1,
        })
    }

    /// The child's process id.
    pub(crate) fn pid(&self) -> Result<u32> {
        self.child.id().context("the server has exited")
    }

    async fn send(&mut self, message: &Value) -> Result<()> {
        let mut line = serde_json::to_vec(message)?;
        line.push(b'\n');
        self.stdin.write_all(&line).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    /// Sends a request and waits for its response (notifications in between are skipped).
    /// Returns the `result`; a JSON-RPC error is an error.
    pub(crate) async fn request(&mut self, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await?;
        loop {
            let line = tokio::time::timeout(ANSWER_TIMEOUT, self.lines.next_line())
                .await
                .with_context(|| format!("no answer to {method} within {ANSWER_TIMEOUT:?}"))??
                .with_context(|| format!("the server closed stdout before answering {method}"))?;
            let message: Value = serde_json::from_str(&line)
                .with_context(|| format!("not JSON on stdout: {:.200}", line))?;
            if message.get("id") != Some(&json!(id)) {
                continue;
            }
            if let Some(error) = message.get("error") {
                bail!("{method} failed: {error}");
            }
            return Ok(message.get("result").cloned().unwrap_or(Value::Null));
        }
    }

    /// `initialize` and `notifications/initialized`.
    pub(crate) async fn initialize(&mut self) -> Result<()> {
        self.request(
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "talos-bench", "version": "1"}}),
        )
        .await?;
        self.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await
    }

    /// Calls a tool; a tool error (`isError`) is an error.
    pub(crate) async fn call(&mut self, tool: &str, arguments: Value) -> Result<Value> {
        let result = self
            .request("tools/call", json!({"name": tool, "arguments": arguments}))
            .await?;
        if result.get("isError") == Some(&Value::Bool(true)) {
            bail!(
                "{tool} answered an error: {:.300}",
                result["content"][0]["text"]
            );
        }
        Ok(result)
    }

    /// Closes stdin (the server ends on EOF) and waits a few seconds before killing it.
    pub(crate) async fn close(mut self) {
        drop(self.stdin);
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}
