//! The client's own public types: what callers get back, independent of the generated protobufs.
//!
//! Sizes are bytes (`u64`), times are `SystemTime`/`Duration`. Anything secret has a redacting
//! `Debug`.

use std::time::{Duration, SystemTime};

/// Server version of one node (`MachineService.Version`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VersionInfo {
    /// Release tag, e.g. `v1.11.5`.
    pub tag: String,
    /// Git commit.
    pub sha: String,
    /// Build timestamp as reported.
    pub built: String,
    /// Go toolchain version.
    pub go_version: String,
    /// Operating system (`linux`).
    pub os: String,
    /// CPU architecture (`amd64`, `arm64`).
    pub arch: String,
    /// Platform name (`metal`, `aws`, `container`, …), when reported.
    pub platform: Option<String>,
    /// Platform mode (`metal`, `cloud`, `container`), when reported.
    pub platform_mode: Option<String>,
    /// Whether RBAC is enabled, when reported.
    pub rbac: Option<bool>,
}

/// CPU times (seconds) as in `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CpuTimes {
    /// User time.
    pub user: f64,
    /// Niced user time.
    pub nice: f64,
    /// System time.
    pub system: f64,
    /// Idle time.
    pub idle: f64,
    /// I/O wait.
    pub iowait: f64,
    /// Hard interrupts.
    pub irq: f64,
    /// Soft interrupts.
    pub soft_irq: f64,
    /// Stolen by the hypervisor.
    pub steal: f64,
}

impl CpuTimes {
    /// Total time accounted.
    pub fn total(&self) -> f64 {
        self.user
            + self.nice
            + self.system
            + self.idle
            + self.iowait
            + self.irq
            + self.soft_irq
            + self.steal
    }

    /// Share of time not idle (0.0–1.0) since boot.
    pub fn busy_ratio(&self) -> f64 {
        let total = self.total();
        if total > 0.0 {
            1.0 - (self.idle + self.iowait) / total
        } else {
            0.0
        }
    }
}

/// Kernel statistics of one node (`MachineService.SystemStat`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SystemStat {
    /// When the node booted.
    pub boot_time: Option<SystemTime>,
    /// Sum over CPUs.
    pub cpu_total: CpuTimes,
    /// Per CPU.
    pub cpus: Vec<CpuTimes>,
    /// Interrupts since boot.
    pub irq_total: u64,
    /// Context switches since boot.
    pub context_switches: u64,
    /// Processes created since boot.
    pub process_created: u64,
    /// Processes running now.
    pub process_running: u64,
    /// Processes blocked on I/O now.
    pub process_blocked: u64,
}

/// One logical CPU (`MachineService.CPUInfo`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CpuInfo {
    /// Processor number.
    pub processor: u32,
    /// Vendor id.
    pub vendor_id: String,
    /// Model name.
    pub model_name: String,
    /// Current clock (MHz).
    pub mhz: f64,
    /// Cores in the package.
    pub cores: u32,
    /// Siblings (threads) in the package.
    pub siblings: u32,
    /// Cache size as reported (e.g. `512 KB`).
    pub cache_size: String,
}

/// Memory of one node in bytes (`MachineService.Memory`; the kernel reports kB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryInfo {
    /// Total RAM.
    pub total: u64,
    /// Completely unused RAM.
    pub free: u64,
    /// RAM available for new work without swapping.
    pub available: u64,
    /// Buffers.
    pub buffers: u64,
    /// Page cache.
    pub cached: u64,
    /// Total swap.
    pub swap_total: u64,
    /// Free swap.
    pub swap_free: u64,
    /// Shared memory.
    pub shmem: u64,
    /// Kernel slab.
    pub slab: u64,
}

impl MemoryInfo {
    /// RAM in use (total − available).
    pub fn used(&self) -> u64 {
        self.total.saturating_sub(self.available)
    }
}

/// Load averages (`MachineService.LoadAvg`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LoadAvg {
    /// 1-minute load.
    pub load1: f64,
    /// 5-minute load.
    pub load5: f64,
    /// 15-minute load.
    pub load15: f64,
}

/// I/O counters of one block device (`MachineService.DiskStats`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiskStat {
    /// Device name (`sda`, `nvme0n1`).
    pub name: String,
    /// Reads completed.
    pub reads: u64,
    /// Bytes read (sectors × 512).
    pub read_bytes: u64,
    /// Writes completed.
    pub writes: u64,
    /// Bytes written (sectors × 512).
    pub written_bytes: u64,
    /// I/Os in flight.
    pub io_in_progress: u64,
    /// Time spent doing I/O.
    pub io_time: Duration,
}

/// One entry of a disk-usage walk (`MachineService.DiskUsage`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiskUsageEntry {
    /// Path.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Error for this path, if any.
    pub error: Option<String>,
}

/// A mounted filesystem (`MachineService.Mounts`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MountInfo {
    /// Source device or filesystem.
    pub filesystem: String,
    /// Size in bytes.
    pub size: u64,
    /// Available bytes.
    pub available: u64,
    /// Mount point.
    pub mounted_on: String,
}

/// Counters of one network interface (`MachineService.NetworkDeviceStats`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetDevice {
    /// Interface name.
    pub name: String,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Received packets dropped.
    pub rx_dropped: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Transmit errors.
    pub tx_errors: u64,
    /// Sent packets dropped.
    pub tx_dropped: u64,
}

/// Which sockets `netstat` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetstatFilter {
    /// Every socket.
    #[default]
    All,
    /// Connected sockets only.
    Connected,
    /// Listening sockets only.
    Listening,
}

/// One socket (`MachineService.Netstat`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SocketInfo {
    /// Protocol (`tcp`, `tcp6`, `udp`, …).
    pub protocol: String,
    /// Local address.
    pub local_ip: String,
    /// Local port.
    pub local_port: u32,
    /// Remote address.
    pub remote_ip: String,
    /// Remote port.
    pub remote_port: u32,
    /// TCP state (`LISTEN`, `ESTABLISHED`, …).
    pub state: String,
    /// Owning process id, when reported.
    pub pid: Option<u32>,
    /// Owning process name, when reported.
    pub process: Option<String>,
    /// Network namespace, when not the host's.
    pub netns: Option<String>,
}

/// One process (`MachineService.Processes`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProcessInfo {
    /// Process id.
    pub pid: i32,
    /// Parent process id.
    pub ppid: i32,
    /// State letter (`R`, `S`, `D`, …).
    pub state: String,
    /// Threads.
    pub threads: i32,
    /// CPU time consumed (seconds).
    pub cpu_time: f64,
    /// Virtual memory in bytes.
    pub virtual_memory: u64,
    /// Resident memory in bytes.
    pub resident_memory: u64,
    /// Command name.
    pub command: String,
    /// Executable path.
    pub executable: String,
    /// Arguments.
    pub args: String,
}

/// Container namespaces Talos exposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ContainerNamespace {
    /// Talos system services (`system`).
    #[default]
    System,
    /// Kubernetes workloads via CRI (`k8s.io`).
    Cri,
}

impl ContainerNamespace {
    /// The containerd namespace name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::Cri => "k8s.io",
        }
    }
}

/// One container (`MachineService.Containers`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerInfo {
    /// containerd namespace.
    pub namespace: String,
    /// Container id.
    pub id: String,
    /// Pod uid (CRI).
    pub uid: String,
    /// Image reference.
    pub image: String,
    /// Main process id.
    pub pid: u32,
    /// Status (`CONTAINER_RUNNING`, `RUNNING`, …).
    pub status: String,
    /// Pod id (`namespace/pod`), for CRI containers.
    pub pod_id: String,
    /// Container name.
    pub name: String,
}

/// Resource use of one container (`MachineService.Stats`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerStats {
    /// containerd namespace.
    pub namespace: String,
    /// Container id.
    pub id: String,
    /// Pod id.
    pub pod_id: String,
    /// Container name.
    pub name: String,
    /// Memory in bytes.
    pub memory_usage: u64,
    /// Cumulative CPU time in nanoseconds.
    pub cpu_usage: u64,
}

/// One state change of a service.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceEvent {
    /// What happened.
    pub message: String,
    /// The state entered.
    pub state: String,
    /// When.
    pub time: Option<SystemTime>,
}

/// Health of a service.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceHealth {
    /// The service has no health check, or it has not run yet.
    pub unknown: bool,
    /// The last check passed.
    pub healthy: bool,
    /// The last check's message.
    pub last_message: String,
    /// When health last changed.
    pub last_change: Option<SystemTime>,
}

/// A Talos system service (`MachineService.ServiceList`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceInfo {
    /// Service id (`etcd`, `kubelet`, …).
    pub id: String,
    /// State (`Running`, `Finished`, `Waiting`, …).
    pub state: String,
    /// Recent events, oldest first.
    pub events: Vec<ServiceEvent>,
    /// Health.
    pub health: ServiceHealth,
}

/// What a service action did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceAction {
    /// Start.
    Start,
    /// Stop.
    Stop,
    /// Restart.
    Restart,
}

/// Where log lines come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSource {
    /// containerd namespace: `system` for Talos services, `k8s.io` for Kubernetes containers.
    pub namespace: ContainerNamespace,
    /// Service or container id.
    pub id: String,
}

impl LogSource {
    /// A Talos service's log (`machined`, `etcd`, `kubelet`, …).
    pub fn service(id: impl Into<String>) -> Self {
        Self {
            namespace: ContainerNamespace::System,
            id: id.into(),
        }
    }

    /// A Kubernetes container's log (CRI).
    pub fn container(id: impl Into<String>) -> Self {
        Self {
            namespace: ContainerNamespace::Cri,
            id: id.into(),
        }
    }
}

/// How much of a log-like stream to read and keep. Memory stays within `max_lines`/`max_bytes`
/// whatever the stream's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamLimits {
    /// Ask the server for only the last N lines (`None`: everything it has).
    pub tail: Option<u32>,
    /// Keep following new lines until `follow_for` elapses.
    pub follow_for: Option<Duration>,
    /// Keep at most this many (newest) lines.
    pub max_lines: usize,
    /// Keep at most this many bytes of (newest) lines.
    pub max_bytes: usize,
    /// Keep only lines containing this text (case-insensitive), applied while streaming.
    pub grep: Option<String>,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            tail: Some(100),
            follow_for: None,
            max_lines: 10_000,
            max_bytes: 1024 * 1024,
            grep: None,
        }
    }
}

/// Lines read from a log-like stream, newest kept.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogLines {
    /// Kept lines, oldest first.
    pub lines: Vec<String>,
    /// Matching lines dropped to stay within the limits (oldest first).
    pub dropped_lines: u64,
    /// Lines read in total (before grep).
    pub lines_read: u64,
    /// Bytes received.
    pub bytes_read: u64,
    /// The most line text held at once (shows the memory bound held).
    pub peak_buffer_bytes: usize,
}

/// What to ask of the `Events` stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventsRequest {
    /// Replay the last N events.
    pub tail_events: Option<i32>,
    /// Replay events of the last N seconds.
    pub tail_seconds: Option<i32>,
    /// Only events of this actor.
    pub actor_id: Option<String>,
    /// Stop after this many events.
    pub max_events: usize,
    /// Stop when no event arrived for this long (default: the client's stream idle timeout).
    pub idle: Option<Duration>,
}

/// A machine event (`MachineService.Events`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MachineEvent {
    /// Event id (sortable).
    pub id: String,
    /// Actor that caused it (e.g. a reboot's id).
    pub actor_id: String,
    /// Payload type, e.g. `machine.SequenceEvent`.
    pub kind: String,
    /// A one-line description of the payload.
    pub summary: String,
}

/// Time as seen by a node (`TimeService.Time`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TimeInfo {
    /// The NTP server queried.
    pub server: String,
    /// The node's clock.
    pub local_time: Option<SystemTime>,
    /// The NTP server's clock.
    pub remote_time: Option<SystemTime>,
}

impl TimeInfo {
    /// local − remote, in seconds (positive: the node is ahead).
    pub fn offset_seconds(&self) -> Option<f64> {
        let (local, remote) = (self.local_time?, self.remote_time?);
        Some(match local.duration_since(remote) {
            Ok(d) => d.as_secs_f64(),
            Err(e) => -e.duration().as_secs_f64(),
        })
    }
}

/// One progress line of a cluster health check.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthProgress {
    /// The check's message.
    pub message: String,
    /// Its error, if it failed.
    pub error: Option<String>,
}

/// Parameters of a cluster health check (`ClusterService.HealthCheck`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthCheckRequest {
    /// How long the server may wait for the cluster to become healthy.
    pub wait_timeout: Duration,
    /// Control-plane node addresses.
    pub control_plane_nodes: Vec<String>,
    /// Worker node addresses.
    pub worker_nodes: Vec<String>,
    /// Kubernetes API endpoint to check (optional).
    pub force_endpoint: Option<String>,
}

/// A file or directory (`MachineService.List`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileInfo {
    /// Full path.
    pub name: String,
    /// Path relative to the listing root.
    pub relative_name: String,
    /// Size in bytes.
    pub size: u64,
    /// Unix mode bits.
    pub mode: u32,
    /// Modification time.
    pub modified: Option<SystemTime>,
    /// Is a directory.
    pub is_dir: bool,
    /// Symlink target.
    pub link: Option<String>,
    /// Error reading this entry.
    pub error: Option<String>,
}

/// File contents read with a cap.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileContent {
    /// The first `max_bytes` bytes.
    pub data: Vec<u8>,
    /// Whether the file was longer than the cap.
    pub truncated: bool,
}

/// An etcd member (`MachineService.EtcdMemberList`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EtcdMember {
    /// Member id.
    pub id: u64,
    /// Member hostname.
    pub hostname: String,
    /// Peer URLs.
    pub peer_urls: Vec<String>,
    /// Client URLs.
    pub client_urls: Vec<String>,
    /// Learner (non-voting) member.
    pub is_learner: bool,
}

/// Status of the etcd member on one node (`MachineService.EtcdStatus`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EtcdMemberStatus {
    /// This member's id.
    pub member_id: u64,
    /// etcd protocol version.
    pub protocol_version: String,
    /// Storage version, when reported.
    pub storage_version: String,
    /// Database size in bytes.
    pub db_size: u64,
    /// Database bytes in use.
    pub db_size_in_use: u64,
    /// The leader's member id.
    pub leader: u64,
    /// Raft index.
    pub raft_index: u64,
    /// Raft term.
    pub raft_term: u64,
    /// Raft applied index.
    pub raft_applied_index: u64,
    /// Errors reported by the member.
    pub errors: Vec<String>,
    /// Learner.
    pub is_learner: bool,
}

/// An etcd alarm kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EtcdAlarmKind {
    /// No alarm.
    None,
    /// Space quota exhausted.
    NoSpace,
    /// Data corruption detected.
    Corrupt,
    /// A value this client does not know.
    Unknown(i32),
}

/// An alarm raised by an etcd member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EtcdAlarm {
    /// The member.
    pub member_id: u64,
    /// The alarm.
    pub alarm: EtcdAlarmKind,
}

/// Bytes an etcd snapshot download or recovery upload moved: how many and their hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Bytes transferred.
    pub size: u64,
    /// Hex SHA-256 of the bytes transferred.
    pub sha256: String,
}

/// What `Bootstrap` starts: a new cluster's etcd, or a recovery from an uploaded snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BootstrapRequest {
    /// Restore etcd from the snapshot uploaded with [`crate::TalosApi::etcd_recover`].
    pub recover_etcd: bool,
    /// Accept a snapshot without etcd's trailing hash (a copied database file).
    pub recover_skip_hash_check: bool,
}

/// How `ApplyConfiguration` applies a config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyMode {
    /// Apply without reboot if possible, else reboot.
    Auto,
    /// Apply without reboot; fail if a reboot is needed.
    NoReboot,
    /// Apply and reboot.
    Reboot,
    /// Store for the next boot.
    Staged,
    /// Apply, and roll back after `try_timeout` unless confirmed.
    Try,
}

/// Parameters of `ApplyConfiguration`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApplyConfigRequest {
    /// The machine config YAML (secret: never logged).
    pub config: Vec<u8>,
    /// The mode; always sent explicitly (0 on the wire is the deprecated REBOOT).
    pub mode: ApplyMode,
    /// Only report what would change.
    pub dry_run: bool,
    /// Rollback delay for `Try`.
    pub try_timeout: Option<Duration>,
}

impl std::fmt::Debug for ApplyConfigRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApplyConfigRequest")
            .field(
                "config",
                &format_args!("[redacted; {} bytes]", self.config.len()),
            )
            .field("mode", &self.mode)
            .field("dry_run", &self.dry_run)
            .field("try_timeout", &self.try_timeout)
            .finish()
    }
}

/// What `ApplyConfiguration` reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyConfigResult {
    /// The mode the node used.
    pub mode: ApplyMode,
    /// The node's summary (includes the diff on dry run).
    pub mode_details: String,
    /// Warnings about the config.
    pub warnings: Vec<String>,
}

/// How to reboot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RebootMode {
    /// Normal reboot (kexec when enabled).
    #[default]
    Default,
    /// Full power cycle (no kexec).
    Powercycle,
}

/// What a lifecycle action (reboot, shutdown, reset, upgrade) returned.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ActionAck {
    /// The actor id, to follow the action in events.
    pub actor_id: String,
    /// Acknowledgement text, when the API returns one.
    pub ack: String,
}

/// Parameters of `Reset`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResetRequest {
    /// Leave etcd and drain cleanly first.
    pub graceful: bool,
    /// Reboot afterwards (instead of powering off).
    pub reboot: bool,
    /// System partition labels to wipe (empty: all).
    pub system_partitions_to_wipe: Vec<String>,
    /// User disks to wipe.
    pub user_disks_to_wipe: Vec<String>,
}

/// Parameters of `Upgrade`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpgradeRequest {
    /// Installer image reference.
    pub image: String,
    /// Keep ephemeral data.
    pub preserve: bool,
    /// Stage the upgrade for the next reboot.
    pub stage: bool,
    /// Skip etcd health checks.
    pub force: bool,
    /// Reboot mode after the upgrade.
    pub reboot_mode: RebootMode,
}

/// One item of a `LifecycleService.Upgrade` progress stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpgradeProgress {
    /// A progress line from the installer (clipped to [`MAX_UPGRADE_MESSAGE_BYTES`]).
    Message(String),
    /// The installer's exit code: 0 is success; the stream ends after it.
    ExitCode(i32),
}

/// Longest progress line kept from an upgrade stream; longer ones are clipped.
pub const MAX_UPGRADE_MESSAGE_BYTES: usize = 1024;

/// Most progress items read from one upgrade stream; past it the stream ends with an error.
pub const MAX_UPGRADE_MESSAGES: usize = 1000;

/// The progress of a `LifecycleService.Upgrade`, read lazily with the idle timeout per item and
/// bounded by [`MAX_UPGRADE_MESSAGES`] and [`MAX_UPGRADE_MESSAGE_BYTES`].
pub type UpgradeProgressStream = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = crate::Result<UpgradeProgress>> + Send + 'static>,
>;

/// A container image in the node's cache.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageInfo {
    /// Image reference.
    pub name: String,
    /// Content digest.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Creation time.
    pub created: Option<SystemTime>,
}

/// A block device (`StorageService.Disks`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiskInfo {
    /// Device path (`/dev/sda`).
    pub device_name: String,
    /// Size in bytes.
    pub size: u64,
    /// Model.
    pub model: String,
    /// Serial number.
    pub serial: String,
    /// Kind (`HDD`, `SSD`, `NVME`, `SD`, …).
    pub kind: String,
    /// Bus path.
    pub bus_path: String,
    /// Whether it is the Talos system disk.
    pub system_disk: bool,
    /// WWID.
    pub wwid: String,
}

/// A COSI resource (`cosi.resource.State`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resource {
    /// Namespace.
    pub namespace: String,
    /// Fully qualified type, e.g. `Members.cluster.talos.dev`.
    pub resource_type: String,
    /// Id.
    pub id: String,
    /// Version.
    pub version: String,
    /// Phase (`running`, `tearing down`).
    pub phase: String,
    /// Owning controller.
    pub owner: String,
    /// Creation time.
    pub created: Option<SystemTime>,
    /// Last update.
    pub updated: Option<SystemTime>,
    /// Labels.
    pub labels: Vec<(String, String)>,
    /// The spec as YAML text.
    pub spec_yaml: String,
}

/// A change seen by a COSI watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceEvent {
    /// `created`, `updated`, `destroyed`, `bootstrapped`, `errored`.
    pub kind: String,
    /// The resource after the change (absent for some kinds).
    pub resource: Option<Resource>,
    /// The resource before the change, when the node sends it (updates, destructions).
    pub old: Option<Resource>,
}

/// Bounds and behaviour of a COSI watch ([`crate::Resources::watch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchOptions {
    /// Send the current contents first (for a whole type, followed by a `bootstrapped` event).
    pub bootstrap: bool,
    /// The stream ends cleanly after this many events (at least 1).
    pub max_events: usize,
    /// Largest encoded watch message accepted, enforced while decoding (capped by the client's
    /// own decoding limit); a larger message fails the stream.
    pub max_message_bytes: usize,
    /// The stream ends cleanly after this long without a message; `None` waits for as long as
    /// the caller keeps polling (the caller bounds the wait).
    pub idle: Option<std::time::Duration>,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            bootstrap: true,
            max_events: 10_000,
            max_message_bytes: 1024 * 1024,
            idle: None,
        }
    }
}

/// The events of a COSI watch, in order: bounded by [`WatchOptions`], ended by the first error
/// (after which nothing follows). Dropping it cancels the watch.
pub type WatchStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = crate::Result<ResourceEvent>> + Send>>;
