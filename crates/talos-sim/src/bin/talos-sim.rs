//! Runs a simulated Talos cluster until Ctrl-C, writing a talosconfig for it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use talos_sim::{SimCluster, SimConfig, UpgradeFault};

/// A simulated Talos apid (gRPC over mTLS) with virtual nodes, for trying Talos tools without a
/// cluster. Traffic stays on this machine.
#[derive(Debug, Parser)]
#[command(name = "talos-sim", version)]
struct Args {
    /// Control-plane nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Worker nodes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Where to write the talosconfig (written 0600).
    #[arg(long, default_value = "talosconfig")]
    talosconfig: PathBuf,
    /// Role of the client certificate in the talosconfig.
    #[arg(long, default_value = "os:admin")]
    role: String,
    /// Address to listen on (loopback by default).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Talos version the nodes report.
    #[arg(long, default_value = "v1.11.5")]
    talos_version: String,
    /// Cluster name, also the talosconfig context's name; a cluster not named talos-sim gets
    /// secret values of its own.
    #[arg(long, default_value = talos_sim::DEFAULT_CLUSTER)]
    name: String,
    /// The Talos version of one node, as NODE=VERSION (address or hostname; repeatable).
    #[arg(long = "node-version", value_name = "NODE=VERSION", value_parser = parse_pair)]
    node_versions: Vec<(String, String)>,
    /// A YAML file merged into every node's machine configuration.
    #[arg(long, value_name = "FILE")]
    machine_config_patch: Option<PathBuf>,
    /// Lines in each service or container log (generated lazily, so millions are fine).
    #[arg(long, default_value_t = SimConfig::default().log_lines)]
    log_lines: usize,
    /// How long a rebooting node stays unreachable, in milliseconds.
    #[arg(long, default_value_t = SimConfig::default().reboot_downtime.as_millis() as u64)]
    reboot_downtime_ms: u64,
    /// Milliseconds every call waits before its node answers (the endpoint-to-node round trip).
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// An upgrade fault for one node, as NODE=KIND (address or hostname; repeatable). KIND is
    /// image-pull-fails, never-returns, old-version, unhealthy, or legacy-api (the node answers
    /// like a Talos before 1.13: no ImageService or LifecycleService).
    #[arg(long = "fault", value_name = "NODE=KIND", value_parser = parse_fault)]
    faults: Vec<(String, NodeFault)>,
    /// Start like a new cluster before its first bootstrap (etcd has no members).
    #[arg(long)]
    etcd_unbootstrapped: bool,
}

/// A fault the command line can set on a node.
#[derive(Debug, Clone, Copy)]
enum NodeFault {
    Upgrade(UpgradeFault),
    LegacyApi,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .filter(|(k, v)| !k.is_empty() && !v.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected NODE=VERSION, got {s:?}"))
}

fn parse_fault(s: &str) -> Result<(String, NodeFault), String> {
    let (node, kind) = s
        .split_once('=')
        .filter(|(n, _)| !n.is_empty())
        .ok_or_else(|| format!("expected NODE=KIND, got {s:?}"))?;
    let fault = match kind {
        "legacy-api" => NodeFault::LegacyApi,
        other => NodeFault::Upgrade(other.parse()?),
    };
    Ok((node.to_owned(), fault))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let machine_config_patch = match &args.machine_config_patch {
        None => None,
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(e) => {
                tracing::error!("cannot read {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
    };
    let config = SimConfig {
        cluster_name: args.name,
        node_versions: args.node_versions,
        machine_config_patch,
        control_planes: args.nodes,
        workers: args.workers,
        talos_version: args.talos_version,
        bind: args.listen,
        log_lines: args.log_lines,
        reboot_downtime: std::time::Duration::from_millis(args.reboot_downtime_ms),
        node_latency: std::time::Duration::from_millis(args.latency_ms),
        ..SimConfig::default()
    };
    let cluster = match SimCluster::start(config).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let written = cluster
        .talosconfig(&args.role)
        .map_err(|e| e.to_string())
        .and_then(|yaml| {
            write_private(&args.talosconfig, &yaml)
                .map_err(|e| format!("cannot write {}: {e}", args.talosconfig.display()))
        });
    if let Err(e) = written {
        tracing::error!("{e}");
        return ExitCode::FAILURE;
    }
    for (node, fault) in &args.faults {
        if !cluster
            .nodes()
            .iter()
            .any(|n| n.address == *node || n.hostname == *node)
        {
            tracing::error!(node = %node, "--fault names no node of this cluster");
            cluster.shutdown().await;
            return ExitCode::FAILURE;
        }
        match fault {
            NodeFault::Upgrade(f) => cluster.set_upgrade_fault(node, *f),
            NodeFault::LegacyApi => cluster.set_legacy_api(node, true),
        }
        tracing::info!(node = %node, fault = ?fault, "fault set");
    }
    if args.etcd_unbootstrapped {
        cluster.unbootstrap_etcd();
    }
    for node in cluster.nodes() {
        tracing::info!(address = %node.address, hostname = %node.hostname, role = ?node.role, "node");
    }
    tracing::info!(
        endpoint = %cluster.endpoint(),
        talosconfig = %args.talosconfig.display(),
        "serving; press Ctrl-C to stop"
    );
    wait_for_stop(&cluster).await;
    cluster.shutdown().await;
    ExitCode::SUCCESS
}

fn write_private(path: &PathBuf, body: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path)?.write_all(body.as_bytes())
}

/// Waits for Ctrl-C. On Unix, SIGUSR1 meanwhile makes the control planes lose etcd quorum (how
/// the end-to-end suite stages a disaster).
async fn wait_for_stop(cluster: &SimCluster) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut usr1) = signal(SignalKind::user_defined1()) {
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => return,
                    _ = usr1.recv() => {
                        cluster.lose_etcd_quorum();
                        tracing::info!("etcd quorum lost (SIGUSR1)");
                    }
                }
            }
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
