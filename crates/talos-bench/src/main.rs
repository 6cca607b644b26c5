//! `talos-bench`: the whole-process benchmarks behind `cargo xtask bench`.
//!
//! It runs the `talos-mcp` binary it is given against talos-sim (in this process, over real
//! mTLS on 127.0.0.1) and measures start-up, footprint, per-call overhead against bare gRPC,
//! fan-out, log streams, the HTTP transport under load, connection reuse and the size of
//! `tools/list`. Every section is bounded in time; a section that fails is reported as failed
//! and makes the exit status non-zero, so a broken benchmark is noticed. Times are reported,
//! never asserted: comparisons are ratios within one run. The figures go to a Markdown report
//! (`--out`) between the markers of docs/benchmarks.md.

// Progress goes to stderr; the report to stdout when no file is given.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod http;
mod mcp;
mod procfs;
mod raw;
mod report;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use serde_json::json;
use talos_sim::{SimCluster, SimConfig};

use crate::mcp::Mcp;
use crate::report::{Report, Row, Stats};

/// Measures talos-mcp against a simulated cluster and writes the figures as Markdown.
#[derive(Debug, Parser)]
#[command(name = "talos-bench")]
struct Args {
    /// The talos-mcp binary to measure.
    #[arg(long)]
    mcp: PathBuf,
    /// What the binary is (profile and features), for the report.
    #[arg(long, default_value = "")]
    build: String,
    /// Fewer and smaller runs (well under two minutes); for noticing breakage, not for figures.
    #[arg(long)]
    quick: bool,
    /// Replace the part between the `bench:begin`/`bench:end` markers of this file; without it
    /// the report goes to stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The command line that produced the run, for the report.
    #[arg(long, default_value = "cargo xtask bench")]
    command: String,
    /// Run only the sections whose name contains this text (case-insensitive; repeatable), for
    /// profiling one of them (`perf record -g -- talos-bench --only fan-out …`).
    #[arg(long, value_name = "TEXT")]
    only: Vec<String>,
}

/// How much each section does.
#[derive(Debug, Clone, Copy)]
struct Plan {
    starts: usize,
    calls: usize,
    fan_out_sizes: &'static [usize],
    fan_out_reps: usize,
    stream_mb: &'static [usize],
    http_calls_per_session: usize,
    http_single_calls: usize,
}

const FULL: Plan = Plan {
    starts: 30,
    calls: 2000,
    fan_out_sizes: &[1, 3, 12, 100, 1000],
    fan_out_reps: 10,
    stream_mb: &[10, 100, 500],
    http_calls_per_session: 100,
    http_single_calls: 200,
};

const QUICK: Plan = Plan {
    starts: 5,
    calls: 1000,
    fan_out_sizes: &[1, 12, 100],
    fan_out_reps: 3,
    stream_mb: &[1, 4],
    http_calls_per_session: 5,
    http_single_calls: 20,
};

/// The plan of a quick or a full run.
fn plan(quick: bool) -> Plan {
    if quick { QUICK } else { FULL }
}

/// HTTP sessions of the load run.
const SESSIONS: usize = 64;
/// Injected endpoint-to-node latency of the latency-bound fan-out.
const NODE_LATENCY: Duration = Duration::from_millis(20);
/// `--fan-out` given to the server in the fan-out runs.
const FAN_OUT: usize = 256;

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .thread_name("bench-main")
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("talos-bench: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("talos-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Scratch files of one run (talosconfigs, audit logs), removed at the end.
#[derive(Debug)]
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("talos-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }

    /// Writes the simulator's talosconfig; returns the server arguments that use it (audit log
    /// on, to a file, as in production).
    fn server_args(&self, sim: &SimCluster, name: &str) -> Result<Vec<String>> {
        let talosconfig = self.0.join(format!("{name}.talosconfig"));
        std::fs::write(&talosconfig, sim.talosconfig("os:admin")?)?;
        let audit = self.0.join(format!("{name}.audit.log"));
        Ok(vec![
            "--talosconfig".into(),
            talosconfig.display().to_string(),
            "--audit-log".into(),
            audit.display().to_string(),
        ])
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn run(args: &Args) -> Result<bool> {
    if !args.mcp.is_file() {
        bail!("{} is not a file (build it first)", args.mcp.display());
    }
    if !args.only.is_empty() && args.out.is_some() {
        bail!("--only makes a partial report: it goes to stdout, not into --out");
    }
    let plan = plan(args.quick);
    let scratch = Scratch::new()?;
    let mut report = Report::new(&args.command, &procfs::machine(), &args.build, args.quick);
    let started = Instant::now();
    macro_rules! section {
        ($name:literal, $limit:expr, $body:expr) => {{
            if selected(&args.only, $name) {
                eprintln!("talos-bench: {} …", $name);
                let t = Instant::now();
                match tokio::time::timeout($limit, $body).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => report.failed($name, &format!("{e:#}")),
                    Err(_) => report.failed($name, &format!("did not finish within {:?}", $limit)),
                }
                eprintln!(
                    "talos-bench: {} done in {:.1} s",
                    $name,
                    t.elapsed().as_secs_f64()
                );
            }
        }};
    }
    let m = &args.mcp;
    section!(
        "tool list",
        Duration::from_secs(60),
        tool_list(m, &scratch, &mut report)
    );
    section!(
        "start and footprint",
        Duration::from_secs(120),
        start(m, &scratch, plan, &mut report)
    );
    section!(
        "per-call overhead",
        Duration::from_secs(180),
        per_call(m, &scratch, plan, &mut report)
    );
    section!(
        "fan-out",
        Duration::from_secs(240),
        fan_out(m, &scratch, plan, &mut report)
    );
    section!(
        "streams",
        Duration::from_secs(240),
        streams(m, &scratch, plan, &mut report)
    );
    section!(
        "HTTP transport",
        Duration::from_secs(180),
        http_transport(m, &scratch, plan, &mut report)
    );
    report.total = started.elapsed();
    let markdown = report.markdown();
    match &args.out {
        Some(path) => report::replace_between_markers(path, &markdown)?,
        None => println!("{markdown}"),
    }
    if !report.failures.is_empty() {
        for (name, why) in &report.failures {
            eprintln!("talos-bench: {name} failed: {why}");
        }
        return Ok(false);
    }
    Ok(true)
}

/// Whether the section `name` runs: every section when `only` is empty.
fn selected(only: &[String], name: &str) -> bool {
    let name = name.to_lowercase();
    only.is_empty() || only.iter().any(|o| name.contains(&o.to_lowercase()))
}

/// The allowlisted first node of a simulator.
fn first_node(sim: &SimCluster) -> Result<String> {
    sim.nodes()
        .first()
        .map(|n| n.address.clone())
        .context("the simulator has no nodes")
}

async fn tool_list(bin: &Path, scratch: &Scratch, report: &mut Report) -> Result<()> {
    let sim = SimCluster::start(SimConfig::default()).await?;
    let server = scratch.server_args(&sim, "tool-list")?;
    let tiers: [(&str, &[&str]); 3] = [
        ("read-only (default)", &[]),
        ("read + write", &["--allow-write"]),
        ("every tier", &["--allow-write", "--allow-destructive"]),
    ];
    for (tier, flags) in tiers {
        let mut args = server.clone();
        args.extend(flags.iter().map(|f| (*f).to_owned()));
        let mut mcp = Mcp::spawn(bin, &args)?;
        mcp.initialize().await?;
        let list = mcp.request("tools/list", json!({})).await?;
        mcp.close().await;
        let bytes = serde_json::to_string(&list)?.len();
        let tools = list["tools"].as_array().map_or(0, Vec::len);
        // The budgets talos-mcp's tool_list test holds the lists to.
        let budget = match tier {
            "read-only (default)" => Some(25 * 1024),
            "every tier" => Some(50 * 1024),
            _ => None,
        };
        report.row(Row {
            section: "Tool list",
            figure: format!("`tools/list`, {tier}: {tools} tools"),
            measured: format!("{bytes} B ≈ {} tokens", bytes / 4),
            target: budget.map_or_else(|| "—".into(), |b| format!("≤ {} KiB", b / 1024)),
            met: budget.map(|b| bytes <= b),
        });
    }
    sim.shutdown().await;
    Ok(())
}

async fn start(bin: &Path, scratch: &Scratch, plan: Plan, report: &mut Report) -> Result<()> {
    let sim = SimCluster::start(SimConfig::default()).await?;
    let server = scratch.server_args(&sim, "start")?;
    let mut times = Vec::with_capacity(plan.starts);
    let mut idle_rss = None;
    for i in 0..plan.starts {
        let t = Instant::now();
        let mut mcp = Mcp::spawn(bin, &server)?;
        mcp.initialize().await?;
        times.push(t.elapsed());
        if i + 1 == plan.starts {
            // Idle: initialised, tools listed, nothing running for a moment.
            mcp.request("tools/list", json!({})).await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            idle_rss = procfs::rss_kib(mcp.pid()?);
        }
        mcp.close().await;
    }
    sim.shutdown().await;
    let stats = Stats::of(&mut times);
    report.row(Row {
        section: "Start and footprint",
        figure: format!("spawn → `initialize` answered, p50 of {}", plan.starts),
        measured: report::ms(stats.p50),
        target: "≤ 5 ms".into(),
        met: Some(stats.p50 <= Duration::from_millis(5)),
    });
    let rss = idle_rss.context("no idle RSS (is /proc readable?)")?;
    report.row(Row {
        section: "Start and footprint",
        figure: "idle RSS (after `initialize` and `tools/list`)".into(),
        measured: format!("{:.1} MB", rss as f64 * 1024.0 / 1e6),
        target: "≤ 10 MB".into(),
        met: Some(rss as f64 * 1024.0 <= 10e6),
    });
    let size = procfs::file_mb(bin).context("binary size")?;
    report.row(Row {
        section: "Start and footprint",
        figure: "binary size (the build measured, see above)".into(),
        measured: format!("{size:.1} MB"),
        target: "≤ 15 MB".into(),
        met: Some(size <= 15.0),
    });
    Ok(())
}

async fn per_call(bin: &Path, scratch: &Scratch, plan: Plan, report: &mut Report) -> Result<()> {
    let sim = SimCluster::start(SimConfig::default()).await?;
    let node = first_node(&sim)?;
    let mut mcp = Mcp::spawn(bin, &scratch.server_args(&sim, "per-call")?)?;
    mcp.initialize().await?;
    let args = json!({"nodes": [node]});
    mcp.call("talos_version", args.clone()).await?;
    let handshakes = sim.tls_handshakes();
    for _ in 0..50 {
        mcp.call("talos_version", args.clone()).await?;
    }
    let mut tool = Vec::with_capacity(plan.calls);
    for _ in 0..plan.calls {
        let t = Instant::now();
        mcp.call("talos_version", args.clone()).await?;
        tool.push(t.elapsed());
    }
    let new_handshakes = sim.tls_handshakes() - handshakes;
    let mut ping = Vec::with_capacity(plan.calls);
    for _ in 0..plan.calls {
        let t = Instant::now();
        mcp.request("ping", json!({})).await?;
        ping.push(t.elapsed());
    }
    mcp.close().await;

    let mut client = raw::machine_client(&sim).await?;
    for _ in 0..50 {
        client.version(raw::to(&node, ())?).await?;
    }
    let mut grpc = Vec::with_capacity(plan.calls);
    for _ in 0..plan.calls {
        let t = Instant::now();
        client.version(raw::to(&node, ())?).await?;
        grpc.push(t.elapsed());
    }
    let library = raw::talos_client(&sim)?;
    let options = talos_client::CallOptions::node(node.clone());
    let mut lib = Vec::with_capacity(plan.calls);
    for i in 0..plan.calls + 50 {
        let t = Instant::now();
        talos_client::NodeInfo::version(&library, &options).await?;
        if i >= 50 {
            lib.push(t.elapsed());
        }
    }
    sim.shutdown().await;

    let (tool, ping, grpc, lib) = (
        Stats::of(&mut tool),
        Stats::of(&mut ping),
        Stats::of(&mut grpc),
        Stats::of(&mut lib),
    );
    let s = "Per-call overhead";
    for (what, st) in [
        ("bare tonic `Version` over mTLS", &grpc),
        ("talos-client `TalosApi::version`", &lib),
        ("MCP `ping` over stdio", &ping),
        ("`talos_version` (1 node) over stdio", &tool),
    ] {
        report.row(Row {
            section: s,
            figure: format!("{what}, p50 / p99 of {}", plan.calls),
            measured: format!("{} / {}", report::ms(st.p50), report::ms(st.p99)),
            target: "—".into(),
            met: None,
        });
    }
    let p50 = report::ratio(tool.p50, grpc.p50);
    let p99 = report::ratio(tool.p99, grpc.p99);
    report.row(Row {
        section: s,
        figure: "`talos_version` over stdio ÷ bare tonic `Version`, p50 / p99".into(),
        measured: format!("{p50:.2}× / {p99:.2}×"),
        target: "≤ 1.5× both".into(),
        met: Some(p50 <= 1.5 && p99 <= 1.5),
    });
    report.row(Row {
        section: "Connection reuse",
        figure: format!(
            "new TLS handshakes from the 2nd to the {}th call of a context",
            plan.calls + 51
        ),
        measured: new_handshakes.to_string(),
        target: "0".into(),
        met: Some(new_handshakes == 0),
    });
    Ok(())
}

/// Spawns a server for `sim`, calls `talos_version` on the first `size` nodes `reps` times
/// (after one warm-up call) and returns the p50 and the server's peak RSS (KiB).
async fn fan_out_once(
    bin: &Path,
    server: &[String],
    nodes: &[String],
    reps: usize,
) -> Result<(Duration, u64)> {
    let mut args = server.to_vec();
    args.extend([
        "--max-nodes".into(),
        nodes.len().max(1).to_string(),
        "--fan-out".into(),
        FAN_OUT.to_string(),
    ]);
    let mut mcp = Mcp::spawn(bin, &args)?;
    mcp.initialize().await?;
    let call = json!({"nodes": nodes});
    let first = mcp.call("talos_version", call.clone()).await?;
    let failed = first["structuredContent"]["nodes"]
        .as_array()
        .map_or(0, |n| n.iter().filter(|r| r["ok"] == json!(false)).count());
    if failed > 0 {
        bail!("{failed} of {} nodes failed", nodes.len());
    }
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        mcp.call("talos_version", call.clone()).await?;
        times.push(t.elapsed());
    }
    let peak = procfs::peak_rss_kib(mcp.pid()?).unwrap_or(0);
    mcp.close().await;
    Ok((Stats::of(&mut times).p50, peak))
}

async fn fan_out(bin: &Path, scratch: &Scratch, plan: Plan, report: &mut Report) -> Result<()> {
    let largest = plan.fan_out_sizes.iter().copied().max().unwrap_or(1);
    let s = "Fan-out";
    for latency in [NODE_LATENCY, Duration::ZERO] {
        let sim = SimCluster::start(SimConfig {
            control_planes: 3,
            workers: largest.saturating_sub(3),
            node_latency: latency,
            ..SimConfig::default()
        })
        .await?;
        let server = scratch.server_args(&sim, "fan-out")?;
        let nodes: Vec<String> = sim.nodes().into_iter().map(|n| n.address).collect();
        let kind = if latency.is_zero() {
            "CPU-bound (no injected latency)".to_owned()
        } else {
            format!("latency-bound ({} ms per node)", latency.as_millis())
        };
        let mut one = None;
        let sizes: Vec<usize> = if latency.is_zero() {
            vec![largest]
        } else {
            plan.fan_out_sizes.to_vec()
        };
        for size in sizes {
            let (p50, peak) = fan_out_once(
                bin,
                &server,
                &nodes[..size.min(nodes.len())],
                plan.fan_out_reps,
            )
            .await?;
            if size == 1 {
                one = Some(p50);
            }
            let (target, met) = match (latency.is_zero(), size, one) {
                (true, 1000, _) => ("≤ 50 ms".to_owned(), Some(p50 <= Duration::from_millis(50))),
                (false, 100, Some(one)) => {
                    let r = report::ratio(p50, one);
                    (format!("≤ 2× one node ({r:.2}×)"), Some(r <= 2.0))
                }
                (false, 1000, Some(one)) => {
                    let r = report::ratio(p50, one);
                    (format!("≤ 10× one node ({r:.2}×)"), Some(r <= 10.0))
                }
                _ => ("—".to_owned(), None),
            };
            report.row(Row {
                section: s,
                figure: format!(
                    "`talos_version` to {size} node{}, {kind}, p50 of {}",
                    if size == 1 { "" } else { "s" },
                    plan.fan_out_reps
                ),
                measured: format!(
                    "{}, peak RSS {:.1} MB",
                    report::ms(p50),
                    peak as f64 * 1024.0 / 1e6
                ),
                target,
                met,
            });
        }
        sim.shutdown().await;
    }
    Ok(())
}

/// Bytes of a service log and of the ring buffer, streamed over bare gRPC; and how long that took.
async fn raw_stream_bytes(sim: &SimCluster, node: &str) -> Result<(u64, u64, Duration)> {
    use talos_proto::machine::{DmesgRequest, LogsRequest};
    let mut client = raw::machine_client(sim).await?;
    let t = Instant::now();
    let mut logs = client
        .logs(raw::to(
            node,
            LogsRequest {
                namespace: "system".into(),
                id: "etcd".into(),
                driver: 0,
                follow: false,
                tail_lines: -1,
            },
        )?)
        .await?
        .into_inner();
    let mut log_bytes = 0u64;
    while let Some(chunk) = logs.message().await? {
        log_bytes += chunk.bytes.len() as u64;
    }
    let took = t.elapsed();
    let mut dmesg = client
        .dmesg(raw::to(
            node,
            DmesgRequest {
                follow: false,
                tail: false,
            },
        )?)
        .await?
        .into_inner();
    let mut dmesg_bytes = 0u64;
    while let Some(chunk) = dmesg.message().await? {
        dmesg_bytes += chunk.bytes.len() as u64;
    }
    Ok((log_bytes, dmesg_bytes, took))
}

async fn streams(bin: &Path, scratch: &Scratch, plan: Plan, report: &mut Report) -> Result<()> {
    let s = "Streams";
    let mut peaks: Vec<(String, usize, u64)> = Vec::new();
    for &mb in plan.stream_mb {
        // About 95 bytes per generated log line and 75 per kernel line; the exact size is
        // measured below.
        let sim = SimCluster::start(SimConfig {
            log_lines: mb * 1_000_000 / 95,
            dmesg_lines: mb * 1_000_000 / 75,
            ..SimConfig::default()
        })
        .await?;
        let node = first_node(&sim)?;
        let (log_bytes, dmesg_bytes, raw_took) = raw_stream_bytes(&sim, &node).await?;
        report.row(Row {
            section: s,
            figure: format!(
                "bare gRPC `Logs` stream of {:.0} MB (the simulator's own rate)",
                log_bytes as f64 / 1e6
            ),
            measured: format!(
                "{:.0} MB/s",
                log_bytes as f64 / 1e6 / raw_took.as_secs_f64()
            ),
            target: "—".into(),
            met: None,
        });
        let server = scratch.server_args(&sim, "streams")?;
        let calls = [
            (
                "talos_service_logs",
                json!({"nodes": [node], "service": "etcd", "grep": "slow request", "tail": 100}),
                log_bytes,
            ),
            (
                "talos_dmesg",
                json!({"nodes": [node], "grep": "ext4", "tail": 100}),
                dmesg_bytes,
            ),
        ];
        for (tool, arguments, bytes) in calls {
            let mut mcp = Mcp::spawn(bin, &server)?;
            mcp.initialize().await?;
            let t = Instant::now();
            let result = mcp.call(tool, arguments).await?;
            let took = t.elapsed();
            if result["structuredContent"]["nodes"][0]["ok"] != json!(true) {
                bail!("{tool} did not succeed: {:.300}", result.to_string());
            }
            let peak = procfs::peak_rss_kib(mcp.pid()?).unwrap_or(0);
            mcp.close().await;
            let rate = bytes as f64 / 1e6 / took.as_secs_f64();
            report.row(Row {
                section: s,
                figure: format!("`{tool}` with `grep` over {:.0} MB", bytes as f64 / 1e6),
                measured: format!(
                    "{rate:.0} MB/s ({}), peak RSS {:.1} MB",
                    report::ms(took),
                    peak as f64 * 1024.0 / 1e6
                ),
                target: "≥ 200 MB/s".into(),
                met: Some(rate >= 200.0),
            });
            peaks.push((tool.to_owned(), mb, peak));
        }
        sim.shutdown().await;
    }
    for tool in ["talos_service_logs", "talos_dmesg"] {
        let of: Vec<&(String, usize, u64)> = peaks.iter().filter(|p| p.0 == tool).collect();
        if let (Some(small), Some(large)) = (of.first(), of.last()) {
            let growth = (large.2 as f64 - small.2 as f64) / (small.2 as f64).max(1.0) * 100.0;
            report.row(Row {
                section: s,
                figure: format!("`{tool}` peak RSS growth, {} MB → {} MB", small.1, large.1),
                measured: format!("{growth:+.1} %"),
                target: "< 10 %".into(),
                met: Some(growth < 10.0),
            });
        }
    }
    Ok(())
}

async fn http_transport(
    bin: &Path,
    scratch: &Scratch,
    plan: Plan,
    report: &mut Report,
) -> Result<()> {
    let s = "HTTP transport";
    let sim = SimCluster::start(SimConfig::default()).await?;
    let node = first_node(&sim)?;
    let server = http::Server::start(bin, &scratch.server_args(&sim, "http")?).await?;
    let addr = server.addr;
    let (mut kept, mut fresh) = http::one_session(addr, &node, plan.http_single_calls).await?;
    let (kept, fresh) = (Stats::of(&mut kept), Stats::of(&mut fresh));
    report.row(Row {
        section: s,
        figure: format!(
            "one session, {} sequential calls: kept-alive connection, p50 / p99",
            plan.http_single_calls
        ),
        measured: format!("{} / {}", report::ms(kept.p50), report::ms(kept.p99)),
        target: "—".into(),
        met: None,
    });
    report.row(Row {
        section: s,
        figure: "the same on a fresh connection per call, p50 / p99".into(),
        measured: format!("{} / {}", report::ms(fresh.p50), report::ms(fresh.p99)),
        target: "—".into(),
        met: None,
    });
    let r = report::ratio(kept.p50, fresh.p50);
    report.row(Row {
        section: s,
        figure: "kept-alive p50 ÷ fresh-connection p50 (a Nagle/delayed-ACK stall shows as ≫ 1)"
            .into(),
        measured: format!("{r:.2}×"),
        target: "≤ 1×".into(),
        met: Some(r <= 1.0),
    });
    let pid = server.pid()?;
    let server_cpu = procfs::cpu_secs(pid).unwrap_or(0.0);
    let calls = plan.http_calls_per_session;
    let load = tokio::task::spawn_blocking({
        let node = node.clone();
        move || http::load(addr, node, SESSIONS, calls)
    })
    .await??;
    let server_cpu = procfs::cpu_secs(pid).unwrap_or(0.0) - server_cpu;
    server.stop().await;
    sim.shutdown().await;
    let total = load.latencies.len();
    let mut latencies = load.latencies;
    let stats = Stats::of(&mut latencies);
    let rate = total as f64 / load.wall.as_secs_f64();
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    let wall = load.wall.as_secs_f64();
    report.row(Row {
        section: s,
        figure: format!(
            "{SESSIONS} sessions × {calls} calls on kept-alive connections: throughput"
        ),
        measured: format!("{rate:.0} calls/s"),
        target: "≥ 5,000 calls/s".into(),
        met: Some(rate >= 5000.0),
    });
    report.row(Row {
        section: s,
        figure: "the same: latency p50 / p99".into(),
        measured: format!("{} / {}", report::ms(stats.p50), report::ms(stats.p99)),
        target: "p99 < 20 ms".into(),
        met: Some(stats.p99 < Duration::from_millis(20)),
    });
    report.row(Row {
        section: s,
        figure: "the same: CPU share of the load generator / of the server (of all cores)".into(),
        measured: format!(
            "{:.0} % / {:.0} %",
            load.generator_cpu / wall / cores * 100.0,
            server_cpu / wall / cores * 100.0
        ),
        target: "—".into(),
        met: None,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line() {
        let args = Args::try_parse_from(["talos-bench", "--mcp", "x", "--quick"]);
        assert!(args.is_ok_and(|a| a.quick && a.out.is_none()));
        assert!(Args::try_parse_from(["talos-bench"]).is_err());
    }
}
