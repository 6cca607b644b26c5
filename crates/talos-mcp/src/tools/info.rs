//! Node facts: version, system stats, CPU, memory, processes, disks, mounts, network, time.

use crate::call::{Call, Reply};
use crate::error::ToolError;
use crate::registry::{ToolDef, Toolset, tool};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use talos_client::{CallOptions, NetstatFilter};

use super::{bounded, bytes, rfc3339};
use crate::output::{Keep, PerNode};
use crate::server::{TalosMcp, TargetArgs};

/// Talos version of a node, next to this server's.
#[derive(Debug, Serialize, JsonSchema)]
pub struct VersionOut {
    /// Talos release, e.g. v1.11.5.
    pub tag: String,
    /// Git commit of the release.
    pub sha: String,
    /// OS/architecture.
    pub os_arch: String,
    /// Platform (metal, aws, …), when reported.
    pub platform: Option<String>,
    /// This server's (talos-mcp) version.
    pub client_version: String,
}

/// A compact health summary of one node.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SystemStatsOut {
    /// Seconds since boot.
    pub uptime_seconds: u64,
    /// Logical CPUs.
    pub cpus: usize,
    /// Share of CPU time busy since boot, percent.
    pub cpu_busy_percent: f64,
    /// Load averages 1/5/15 min.
    pub load: [f64; 3],
    /// Total memory, bytes.
    pub memory_total_bytes: u64,
    /// Used memory (total − available), bytes.
    pub memory_used_bytes: u64,
    /// Used memory, percent.
    pub memory_used_percent: f64,
    /// Processes running now.
    pub processes_running: u64,
    /// Processes blocked on I/O now.
    pub processes_blocked: u64,
    /// Processes created since boot.
    pub processes_created: u64,
}

/// CPUs of a node.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CpuOut {
    /// Logical CPUs.
    pub count: usize,
    /// Model name of the first CPU.
    pub model: String,
    /// Clock of the first CPU, MHz.
    pub mhz: f64,
    /// Cores per package.
    pub cores_per_package: u32,
}

/// Memory of a node, in bytes.
#[derive(Debug, Serialize, JsonSchema)]
pub struct MemoryOut {
    /// Total.
    pub total: u64,
    /// Available for new work.
    pub available: u64,
    /// Used (total − available).
    pub used: u64,
    /// Used, percent.
    pub used_percent: f64,
    /// Completely free.
    pub free: u64,
    /// Page cache.
    pub cached: u64,
    /// Buffers.
    pub buffers: u64,
    /// Swap total.
    pub swap_total: u64,
    /// Swap free.
    pub swap_free: u64,
}

/// Arguments of talos_processes.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct ProcessesArgs {
    #[serde(flatten)]
    pub target: TargetArgs,
    /// Order by CPU time (default) or resident memory.
    #[serde(default)]
    pub sort_by: Option<SortBy>,
    /// Per node (1–200, default 20).
    #[serde(default)]
    pub limit: Option<u32>,
    /// Only commands or arguments containing this text.
    #[serde(default)]
    pub filter: Option<String>,
}

// The order of talos_processes (no doc comment: it would be repeated in the schema).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SortBy {
    #[default]
    Cpu,
    #[serde(alias = "mem")]
    Memory,
}

/// A process.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ProcessOut {
    pub pid: i32,
    pub command: String,
    pub state: String,
    pub threads: i32,
    /// CPU time consumed, seconds.
    pub cpu_seconds: f64,
    /// Resident memory, bytes.
    pub resident_bytes: u64,
    /// Arguments (cut to 200 characters).
    pub args: String,
}

/// Processes of a node.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ProcessesOut {
    /// Processes on the node in total.
    pub total: usize,
    /// The top processes by the chosen order.
    pub processes: Vec<ProcessOut>,
}

/// A block device.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DiskOut {
    pub device: String,
    pub size_bytes: u64,
    pub model: String,
    pub serial: String,
    /// HDD, SSD, NVME, SD, CD or UNKNOWN.
    pub kind: String,
    /// Holds the Talos system partitions.
    pub system_disk: bool,
}

/// Arguments of talos_disk_usage.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct DiskUsageArgs {
    #[serde(flatten)]
    pub target: TargetArgs,
    /// Absolute paths (default ["/var"]); /proc links and secret locations are refused.
    #[serde(default)]
    pub paths: Option<Vec<String>>,
    /// Levels to descend (0–5, default 1).
    #[serde(default)]
    pub depth: Option<u32>,
    /// Per node (1–500, default 50).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// A disk-usage entry.
#[derive(Debug, Serialize, JsonSchema)]
pub struct UsageOut {
    pub path: String,
    pub size_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A mounted filesystem.
#[derive(Debug, Serialize, JsonSchema)]
pub struct MountOut {
    pub filesystem: String,
    pub mounted_on: String,
    pub size_bytes: u64,
    pub available_bytes: u64,
    pub used_percent: f64,
}

/// Arguments of talos_network.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct NetworkArgs {
    #[serde(flatten)]
    pub target: TargetArgs,
    /// Sections (default: all but sockets).
    #[serde(default)]
    pub include: Option<Vec<Section>>,
    /// Which sockets (default listening).
    #[serde(default)]
    pub sockets: Option<Sockets>,
    /// Only sockets with this local or remote port.
    #[serde(default)]
    pub port: Option<u32>,
}

// A section of talos_network (`as usize` indexes `sections`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Section {
    Interfaces,
    Addresses,
    Routes,
    Sockets,
}

// The sockets talos_network lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Sockets {
    #[default]
    #[serde(alias = "listen")]
    Listening,
    Connected,
    All,
}

impl From<Sockets> for NetstatFilter {
    fn from(s: Sockets) -> Self {
        match s {
            Sockets::Listening => Self::Listening,
            Sockets::Connected => Self::Connected,
            Sockets::All => Self::All,
        }
    }
}

/// Counters of an interface.
#[derive(Debug, Serialize, JsonSchema)]
pub struct InterfaceOut {
    pub name: String,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
}

/// A socket.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SocketOut {
    pub protocol: String,
    pub local: String,
    pub remote: String,
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
}

/// The network view of a node.
#[derive(Debug, Default, Serialize, JsonSchema)]
pub struct NetworkOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<Vec<InterfaceOut>>,
    /// Address statuses (COSI AddressStatuses.net.talos.dev specs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Vec<serde_json::Map<String, serde_json::Value>>>,
    /// Route statuses (COSI RouteStatuses.net.talos.dev specs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<serde_json::Map<String, serde_json::Value>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sockets: Option<Vec<SocketOut>>,
}

/// Time of a node.
#[derive(Debug, Serialize, JsonSchema)]
pub struct TimeOut {
    /// NTP server checked.
    pub server: String,
    /// The node's clock (RFC 3339).
    pub local_time: Option<String>,
    /// The NTP server's clock (RFC 3339).
    pub remote_time: Option<String>,
    /// Node minus NTP, milliseconds (positive: node ahead).
    pub offset_ms: Option<f64>,
}

/// A node's hostname.
#[derive(Debug, Serialize, JsonSchema)]
pub struct HostnameOut {
    pub hostname: String,
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (part as f64 * 1000.0 / whole as f64).round() / 10.0
    }
}

impl TalosMcp {
    /// Talos version of each node, and of this server.
    pub(crate) async fn talos_version(
        &self,
        _call: &Call,
        args: TargetArgs,
    ) -> Result<Reply<PerNode<VersionOut>>, ToolError> {
        let result = self
            .per_node(&args, |api, opts| async move {
                let v = api.version(&opts).await?;
                Ok(VersionOut {
                    os_arch: format!("{}/{}", v.os, v.arch),
                    tag: v.tag,
                    sha: v.sha,
                    platform: v.platform,
                    client_version: env!("CARGO_PKG_VERSION").to_owned(),
                })
            })
            .await;
        self.respond(
            "talos_version",
            result,
            |v| format!("Talos {} ({})", v.tag, v.os_arch),
            Keep::First,
            "pass fewer `nodes`",
        )
    }

    /// One compact health line per node.
    pub(crate) async fn talos_system_stats(
        &self,
        _call: &Call,
        args: TargetArgs,
    ) -> Result<Reply<PerNode<SystemStatsOut>>, ToolError> {
        let result = self
            .per_node(&args, |api, opts| async move {
                let (stat, mem, load) = tokio::join!(
                    api.system_stat(&opts),
                    api.memory(&opts),
                    api.load_avg(&opts)
                );
                let (stat, mem, load) = (stat?, mem?, load?);
                let uptime = stat
                    .boot_time
                    .and_then(|b| std::time::SystemTime::now().duration_since(b).ok())
                    .map_or(0, |d| d.as_secs());
                Ok(SystemStatsOut {
                    uptime_seconds: uptime,
                    cpus: stat.cpus.len(),
                    cpu_busy_percent: (stat.cpu_total.busy_ratio() * 1000.0).round() / 10.0,
                    load: [load.load1, load.load5, load.load15],
                    memory_total_bytes: mem.total,
                    memory_used_bytes: mem.used(),
                    memory_used_percent: percent(mem.used(), mem.total),
                    processes_running: stat.process_running,
                    processes_blocked: stat.process_blocked,
                    processes_created: stat.process_created,
                })
            })
            .await;
        self.respond(
            "talos_system_stats",
            result,
            |s| {
                format!(
                    "up {}h, {} CPUs {}% busy, load {:.2}, memory {}% of {}",
                    s.uptime_seconds / 3600,
                    s.cpus,
                    s.cpu_busy_percent,
                    s.load[0],
                    s.memory_used_percent,
                    bytes(s.memory_total_bytes)
                )
            },
            Keep::First,
            "pass fewer `nodes`",
        )
    }

    /// CPU model and count per node.
    pub(crate) async fn talos_cpu(
        &self,
        _call: &Call,
        args: TargetArgs,
    ) -> Result<Reply<PerNode<CpuOut>>, ToolError> {
        let result = self
            .per_node(&args, |api, opts| async move {
                let cpus = api.cpu_info(&opts).await?;
                let first = cpus.first().cloned().unwrap_or_default();
                Ok(CpuOut {
                    count: cpus.len(),
                    model: first.model_name,
                    mhz: first.mhz,
                    cores_per_package: first.cores,
                })
            })
            .await;
        self.respond(
            "talos_cpu",
            result,
            |c| format!("{} × {} @ {:.0} MHz", c.count, c.model, c.mhz),
            Keep::First,
            "pass fewer `nodes`",
        )
    }

    /// Memory per node.
    pub(crate) async fn talos_memory(
        &self,
        _call: &Call,
        args: TargetArgs,
    ) -> Result<Reply<PerNode<MemoryOut>>, ToolError> {
        let result = self
            .per_node(&args, |api, opts| async move {
                let m = api.memory(&opts).await?;
                Ok(MemoryOut {
                    total: m.total,
                    available: m.available,
                    used: m.used(),
                    used_percent: percent(m.used(), m.total),
                    free: m.free,
                    cached: m.cached,
                    buffers: m.buffers,
                    swap_total: m.swap_total,
                    swap_free: m.swap_free,
                })
            })
            .await;
        self.respond(
            "talos_memory",
            result,
            |m| {
                format!(
                    "{} used of {} ({}%)",
                    bytes(m.used),
                    bytes(m.total),
                    m.used_percent
                )
            },
            Keep::First,
            "pass fewer `nodes`",
        )
    }

    /// Top processes per node.
    pub(crate) async fn talos_processes(
        &self,
        _call: &Call,
        args: ProcessesArgs,
    ) -> Result<Reply<PerNode<ProcessesOut>>, ToolError> {
        let by_memory = args.sort_by.unwrap_or_default() == SortBy::Memory;
        let limit = bounded("limit", args.limit.unwrap_or(20), 1, 200)? as usize;
        let filter = args.filter.map(|f| f.to_lowercase());
        let result = self
            .per_node(&args.target, |api, opts| {
                let filter = filter.clone();
                async move {
                    let mut ps = api.processes(&opts).await?;
                    let total = ps.len();
                    if let Some(f) = &filter {
                        ps.retain(|p| {
                            p.command.to_lowercase().contains(f)
                                || p.args.to_lowercase().contains(f)
                        });
                    }
                    if by_memory {
                        ps.sort_by_key(|p| std::cmp::Reverse(p.resident_memory));
                    } else {
                        ps.sort_by(|a, b| b.cpu_time.total_cmp(&a.cpu_time));
                    }
                    ps.truncate(limit);
                    Ok(ProcessesOut {
                        total,
                        processes: ps
                            .into_iter()
                            .map(|p| ProcessOut {
                                pid: p.pid,
                                command: p.command,
                                state: p.state,
                                threads: p.threads,
                                cpu_seconds: p.cpu_time,
                                resident_bytes: p.resident_memory,
                                args: p.args.chars().take(200).collect(),
                            })
                            .collect(),
                    })
                }
            })
            .await;
        self.respond(
            "talos_processes",
            result,
            |p| {
                let top: Vec<String> = p
                    .processes
                    .iter()
                    .take(3)
                    .map(|x| x.command.clone())
                    .collect();
                format!("{} processes; top: {}", p.total, top.join(", "))
            },
            Keep::First,
            "lower `limit` or add a `filter`",
        )
    }

    /// Block devices per node.
    pub(crate) async fn talos_disks(
        &self,
        _call: &Call,
        args: TargetArgs,
    ) -> Result<Reply<PerNode<Vec<DiskOut>>>, ToolError> {
        let result = self
            .per_node(&args, |api, opts| async move {
                Ok(api
                    .disks(&opts)
                    .await?
                    .into_iter()
                    .map(|d| DiskOut {
                        device: d.device_name,
                        size_bytes: d.size,
                        model: d.model,
                        serial: d.serial,
                        kind: d.kind,
                        system_disk: d.system_disk,
                    })
                    .collect::<Vec<_>>())
            })
            .await;
        self.respond(
            "talos_disks",
            result,
            |ds| {
                ds.iter()
                    .map(|d| format!("{} {}", d.device, bytes(d.size_bytes)))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            Keep::First,
            "pass fewer `nodes`",
        )
    }

    /// Sizes of directories.
    pub(crate) async fn talos_disk_usage(
        &self,
        _call: &Call,
        args: DiskUsageArgs,
    ) -> Result<Reply<PerNode<Vec<UsageOut>>>, ToolError> {
        let checked = bounded("depth", args.depth.unwrap_or(1), 0, 5)
            .and_then(|d| Ok((d, bounded("limit", args.limit.unwrap_or(50), 1, 500)?)));
        let (depth, limit) = match checked {
            Ok(v) => v,
            Err(e) => return Err(e),
        };
        let paths = args
            .paths
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| vec!["/var".into()]);
        // Normalised like file paths, and the same entries refused (the walk would measure,
        // and name, whatever a /proc/<pid>/root link reaches).
        let paths: Result<Vec<String>, _> = paths
            .iter()
            .map(|p| {
                let normal = crate::paths::normalise(p, "paths")?;
                crate::paths::check_normal(&normal)?;
                Ok(normal)
            })
            .collect();
        let paths = match paths {
            Ok(p) => p,
            Err(e) => return Err(e),
        };
        let result = self
            .per_node(&args.target, |api, opts| {
                let paths = paths.clone();
                async move {
                    Ok(api
                        .disk_usage(&opts, paths, depth as i32, limit as usize)
                        .await?
                        .into_iter()
                        .filter(|e| e.name.is_empty() || crate::paths::may_show(&e.name))
                        .map(|e| UsageOut {
                            path: e.name,
                            size_bytes: e.size,
                            error: e.error,
                        })
                        .collect::<Vec<_>>())
                }
            })
            .await;
        self.respond(
            "talos_disk_usage",
            result,
            |u| {
                u.iter()
                    .take(3)
                    .map(|e| format!("{} {}", e.path, bytes(e.size_bytes)))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            Keep::First,
            "lower `depth` or `limit`",
        )
    }

    /// Mounted filesystems.
    pub(crate) async fn talos_mounts(
        &self,
        _call: &Call,
        args: TargetArgs,
    ) -> Result<Reply<PerNode<Vec<MountOut>>>, ToolError> {
        let result = self
            .per_node(&args, |api, opts| async move {
                Ok(api
                    .mounts(&opts)
                    .await?
                    .into_iter()
                    .map(|m| MountOut {
                        used_percent: percent(m.size.saturating_sub(m.available), m.size),
                        filesystem: m.filesystem,
                        mounted_on: m.mounted_on,
                        size_bytes: m.size,
                        available_bytes: m.available,
                    })
                    .collect::<Vec<_>>())
            })
            .await;
        self.respond(
            "talos_mounts",
            result,
            |ms| {
                let fullest = ms
                    .iter()
                    .max_by(|a, b| a.used_percent.total_cmp(&b.used_percent));
                match fullest {
                    Some(m) => format!(
                        "{} mounts; fullest {} at {}%",
                        ms.len(),
                        m.mounted_on,
                        m.used_percent
                    ),
                    None => "no mounts".into(),
                }
            },
            Keep::First,
            "pass fewer `nodes`",
        )
    }

    /// Interfaces, addresses, routes and sockets.
    pub(crate) async fn talos_network(
        &self,
        _call: &Call,
        args: NetworkArgs,
    ) -> Result<Reply<PerNode<NetworkOut>>, ToolError> {
        let include = sections(args.include.as_deref());
        let filter = NetstatFilter::from(args.sockets.unwrap_or_default());
        let port = args.port;
        let result = self
            .per_node(&args.target, |api, opts| async move {
                network(api.as_ref(), &opts, include, filter, port).await
            })
            .await;
        self.respond(
            "talos_network",
            result,
            |n| {
                let mut parts = Vec::new();
                if let Some(i) = &n.interfaces {
                    parts.push(format!("{} interfaces", i.len()));
                }
                if let Some(a) = &n.addresses {
                    parts.push(format!("{} addresses", a.len()));
                }
                if let Some(r) = &n.routes {
                    parts.push(format!("{} routes", r.len()));
                }
                if let Some(s) = &n.sockets {
                    parts.push(format!("{} sockets", s.len()));
                }
                parts.join(", ")
            },
            Keep::First,
            "narrow `include`, or filter sockets by `port`",
        )
    }

    /// Clock and NTP offset.
    pub(crate) async fn talos_time(
        &self,
        _call: &Call,
        args: TargetArgs,
    ) -> Result<Reply<PerNode<TimeOut>>, ToolError> {
        let result = self
            .per_node(&args, |api, opts| async move {
                let t = api.time(&opts).await?;
                Ok(TimeOut {
                    offset_ms: t.offset_seconds().map(|s| (s * 1000.0).round()),
                    local_time: t.local_time.map(rfc3339),
                    remote_time: t.remote_time.map(rfc3339),
                    server: t.server,
                })
            })
            .await;
        self.respond(
            "talos_time",
            result,
            |t| {
                format!(
                    "offset {} ms vs {}",
                    t.offset_ms.map_or("?".into(), |o| o.to_string()),
                    t.server
                )
            },
            Keep::First,
            "pass fewer `nodes`",
        )
    }

    /// Hostnames.
    pub(crate) async fn talos_hostname(
        &self,
        _call: &Call,
        args: TargetArgs,
    ) -> Result<Reply<PerNode<HostnameOut>>, ToolError> {
        let result = self
            .per_node(&args, |api, opts| async move {
                Ok(HostnameOut {
                    hostname: api.hostname(&opts).await?,
                })
            })
            .await;
        self.respond(
            "talos_hostname",
            result,
            |h| h.hostname.clone(),
            Keep::First,
            "pass fewer `nodes`",
        )
    }
}

/// Which sections were asked for, by `Section as usize` (none named: all but sockets). A
/// section named twice is fetched once.
fn sections(include: Option<&[Section]>) -> [bool; 4] {
    let mut has = [false; 4];
    match include {
        Some(list) => list.iter().for_each(|&s| has[s as usize] = true),
        None => has[..3].fill(true),
    }
    has
}

async fn network(
    api: &dyn talos_client::TalosApi,
    opts: &CallOptions,
    include: [bool; 4],
    filter: NetstatFilter,
    port: Option<u32>,
) -> Result<NetworkOut, talos_client::TalosError> {
    let has = |s: Section| include[s as usize];
    let mut out = NetworkOut::default();
    if has(Section::Interfaces) {
        out.interfaces = Some(
            api.network_devices(opts)
                .await?
                .into_iter()
                .map(|d| InterfaceOut {
                    name: d.name,
                    rx_bytes: d.rx_bytes,
                    tx_bytes: d.tx_bytes,
                    rx_errors: d.rx_errors,
                    tx_errors: d.tx_errors,
                    rx_dropped: d.rx_dropped,
                    tx_dropped: d.tx_dropped,
                })
                .collect(),
        );
    }
    for (section, ty) in [
        (Section::Addresses, "AddressStatuses.net.talos.dev"),
        (Section::Routes, "RouteStatuses.net.talos.dev"),
    ] {
        if has(section) {
            let specs = api
                .resource_list(opts, "network", ty, 500)
                .await?
                .into_iter()
                .map(|r| crate::redact::spec_object(&r.spec_yaml))
                .collect();
            if section == Section::Addresses {
                out.addresses = Some(specs);
            } else {
                out.routes = Some(specs);
            }
        }
    }
    if has(Section::Sockets) {
        let host = |ip: &str, port: u32| {
            if ip.contains(':') {
                format!("[{ip}]:{port}")
            } else {
                format!("{ip}:{port}")
            }
        };
        out.sockets = Some(
            api.netstat(opts, filter)
                .await?
                .into_iter()
                .filter(|s| port.is_none_or(|p| s.local_port == p || s.remote_port == p))
                .map(|s| SocketOut {
                    local: host(&s.local_ip, s.local_port),
                    remote: host(&s.remote_ip, s.remote_port),
                    protocol: s.protocol,
                    state: s.state,
                    process: s.process,
                })
                .collect(),
        );
    }
    Ok(out)
}

/// The tools of this module, in listing order.
pub(crate) fn tools() -> Vec<ToolDef> {
    vec![
        tool(
            Toolset::Info,
            "talos_version",
            "Talos version",
            "Talos version of each node (tag, commit, OS/arch, platform) and this server's. Start here to check connectivity.",
        )
        .run(TalosMcp::talos_version)
        .build(),
        tool(
            Toolset::Info,
            "talos_system_stats",
            "System stats",
            "Per-node summary: uptime, CPU count and busy %, load, memory used, process counts.",
        )
        .run(TalosMcp::talos_system_stats)
        .build(),
        tool(
            Toolset::Info,
            "talos_cpu",
            "CPU info",
            "CPU model, count and clock of each node.",
        )
        .run(TalosMcp::talos_cpu)
        .build(),
        tool(
            Toolset::Info,
            "talos_memory",
            "Memory",
            "Memory of each node, bytes: total, available, used, cache, swap.",
        )
        .run(TalosMcp::talos_memory)
        .build(),
        tool(
            Toolset::Info,
            "talos_processes",
            "Processes",
            "Top processes of each node by CPU time or memory.",
        )
        .run(TalosMcp::talos_processes)
        .build(),
        tool(
            Toolset::Info,
            "talos_disks",
            "Disks",
            "Block devices of each node: size, model, serial, type, system disk.",
        )
        .run(TalosMcp::talos_disks)
        .build(),
        tool(
            Toolset::Info,
            "talos_disk_usage",
            "Disk usage",
            "Sizes of directories on each node, like du.",
        )
        .run(TalosMcp::talos_disk_usage)
        .build(),
        tool(
            Toolset::Info,
            "talos_mounts",
            "Mounts",
            "Mounted filesystems of each node: size, free space, use %.",
        )
        .run(TalosMcp::talos_mounts)
        .build(),
        tool(
            Toolset::Info,
            "talos_network",
            "Network",
            "Network of each node: interface counters, addresses, routes, sockets.",
        )
        .run(TalosMcp::talos_network)
        .build(),
        tool(
            Toolset::Info,
            "talos_time",
            "Time",
            "Clock of each node versus its NTP server, offset in ms.",
        )
        .run(TalosMcp::talos_time)
        .build(),
        tool(
            Toolset::Info,
            "talos_hostname",
            "Hostname",
            "Hostname of each node.",
        )
        .run(TalosMcp::talos_hostname)
        .build(),
    ]
}

super::targeted_by_field!(ProcessesArgs, DiskUsageArgs, NetworkArgs);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::registry::Registry;
    use serde_json::{Value, json};

    fn property(tool: &str, name: &str) -> Value {
        let def = Registry::get().find(tool).unwrap();
        def.listing.input_schema["properties"][name].clone()
    }

    #[test]
    fn closed_choices_are_enums_in_the_schema() {
        assert_eq!(
            property("talos_processes", "sort_by")["enum"],
            json!(["cpu", "memory"])
        );
        assert_eq!(
            property("talos_network", "include")["items"]["enum"],
            json!(["interfaces", "addresses", "routes", "sockets"])
        );
        assert_eq!(
            property("talos_network", "sockets")["enum"],
            json!(["listening", "connected", "all"])
        );
    }

    #[test]
    fn aliases_read_as_their_value() {
        let p: ProcessesArgs = serde_json::from_value(json!({"sort_by": "mem"})).unwrap();
        assert_eq!(p.sort_by, Some(SortBy::Memory));
        let n: NetworkArgs = serde_json::from_value(json!({"sockets": "listen"})).unwrap();
        assert_eq!(n.sockets, Some(Sockets::Listening));
    }

    #[test]
    fn sections_default_to_all_but_sockets_and_count_once() {
        assert_eq!(sections(None), [true, true, true, false]);
        assert_eq!(sections(Some(&[])), [false; 4]);
        assert_eq!(
            sections(Some(&[Section::Sockets, Section::Routes, Section::Sockets])),
            [false, false, true, true]
        );
    }
}
