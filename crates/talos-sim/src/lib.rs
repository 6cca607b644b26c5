//! A simulated Talos `apid` for tests, benchmarks and the demo — and a test kit for other
//! projects' tests.
//!
//! [`SimCluster::start`] (or [`SimCluster::builder`]) binds a loopback port and serves the Talos
//! API subset of `talos-proto` over real gRPC with mutual TLS (TLS 1.3, client certificates
//! required, roles taken from the certificate like apid). Behind the one endpoint live N virtual
//! nodes (control planes and workers); the `node` request metadata picks which one answers,
//! exactly as apid proxies calls. Node addresses are labels in 127.0.0.0/8: no traffic ever goes
//! to them. Data is plausible and deterministic per node; state changes (reboots, service
//! actions, etcd membership, applied configs, upgrades) are kept in memory.
//!
//! # Using it in tests
//!
//! - **Start** a cluster: [`SimCluster::builder`] sets the name, node counts, the Talos version
//!   (for all nodes and per node) and a machine-config patch; several clusters can run in one
//!   process, each with its own CA, endpoint and (when named differently) secrets.
//! - **Connect**: [`SimCluster::context`] gives a resolved `talos_config::Context` for a client
//!   certificate of any role; [`SimCluster::talosconfig`] the YAML, [`SimCluster::write_talosconfig`]
//!   a 0600 file, and [`SimCluster::fleet_talosconfig`] one file with a context per cluster.
//! - **Inject faults** per node with [`SimCluster::set_fault`] ([`Fault`]: unavailable, latency,
//!   stall, a gRPC status, a stream cut short), [`SimCluster::set_upgrade_fault`],
//!   [`SimCluster::set_legacy_api`], and for the endpoint [`SimCluster::set_cert_fault`];
//!   [`SimCluster::clear_faults`] undoes them all.
//! - **Observe** what each node received: [`SimCluster::received`] (method paths, and for
//!   mutating calls what was asked — modes, ids, image references, a fingerprint of applied
//!   configuration bytes), [`SimCluster::calls`] (counts by method), and the node state
//!   ([`SimCluster::version`], [`SimCluster::is_up`], [`SimCluster::boot_id`], …).
//! - **Roles**: every RPC passes one admission layer ([`admission`]) that checks the caller's
//!   role against apid's method table ([`admission::RULES`]); a reader gets `PermissionDenied`
//!   on changes, an operator on admin-only methods.
//!
//! ```
//! use talos_client::prelude::*; // the domain traits (NodeInfo, Lifecycle, …)
//! use talos_client::{CallOptions, GrpcTalosClient};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let sim = talos_sim::SimCluster::builder()
//!     .control_planes(1)
//!     .workers(1)
//!     .version("v1.11.5")
//!     .node_version("talos-worker-1", "v1.10.7")
//!     .start()
//!     .await?;
//! let client = GrpcTalosClient::new(&sim.context("os:reader")?)?;
//! let worker = client.version(&CallOptions::node("talos-worker-1")).await?;
//! assert_eq!(worker.tag, "v1.10.7");
//!
//! // A reader may not reboot; the refused call is still recorded.
//! let refused = client.reboot(&CallOptions::node("talos-worker-1"), Default::default()).await;
//! assert!(refused.is_err());
//! assert!(sim.received("talos-worker-1").iter().any(|c| c.method.ends_with("/Reboot")));
//! sim.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! Modules: [`pki`] makes the certificates, [`admission`] decides who may call what, `tls` the
//! server TLS and accept loop, `state` the cluster model, `data` the generated content, `machine`
//! and `services` the gRPC services.

pub mod admission;
pub mod archive;
mod builder;
mod data;
pub use data::PLANTED_SECRETS;
pub mod etcd_db;
mod machine;
pub mod pki;
mod services;
mod state;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use builder::SimBuilder;
pub use state::{CertFault, Fault, NodeRole, ReceivedCall, SimNode, UpgradeFault};

/// The name of the cluster (and talosconfig context) [`SimConfig::default`] makes.
pub const DEFAULT_CLUSTER: &str = "talos-sim";

/// Errors from starting or using a simulated cluster.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Certificates could not be generated.
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TLS could not be configured.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The configuration asks for something impossible.
    #[error("invalid simulator configuration: {0}")]
    Config(String),
}

/// Which TLS versions the simulated endpoint offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServerTlsMode {
    /// TLS 1.3 only, like a current apid.
    #[default]
    Tls13,
    /// TLS 1.2 only: a server a Talos client must refuse.
    Tls12Only,
}

/// How to build the simulated cluster.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Control-plane nodes (run etcd).
    pub control_planes: usize,
    /// Worker nodes.
    pub workers: usize,
    /// Cluster name: the talosconfig context's name, and in the kubeconfig and machine config.
    /// A cluster not named [`DEFAULT_CLUSTER`] has its own secret values in its machine config.
    /// Letters, digits and `-`, at most 63.
    pub cluster_name: String,
    /// Talos version every node reports.
    pub talos_version: String,
    /// Lines in each service or container log (generated lazily, so millions are fine).
    pub log_lines: usize,
    /// Lines in the kernel ring buffer.
    pub dmesg_lines: usize,
    /// How long a rebooting node stays unreachable.
    pub reboot_downtime: Duration,
    /// TLS versions offered.
    pub tls: ServerTlsMode,
    /// Where to listen (port 0 picks a free port).
    pub bind: SocketAddr,
    /// Talos versions of single nodes, by address or hostname, instead of `talos_version`.
    pub node_versions: Vec<(String, String)>,
    /// A YAML mapping merged into every node's machine configuration (mappings merge key by
    /// key; other values replace; `null` removes a key).
    pub machine_config_patch: Option<String>,
    /// Added to every call before its node answers, as the endpoint-to-node round trip of a
    /// real cluster (zero: none). Per-node faults ([`Fault::Latency`]) add to it.
    pub node_latency: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            control_planes: 3,
            workers: 2,
            cluster_name: DEFAULT_CLUSTER.into(),
            talos_version: "v1.11.5".into(),
            log_lines: 2000,
            dmesg_lines: 1000,
            reboot_downtime: Duration::from_secs(2),
            tls: ServerTlsMode::Tls13,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            node_versions: Vec::new(),
            machine_config_patch: None,
            node_latency: Duration::ZERO,
        }
    }
}

/// A running simulated cluster. Clones share the same server.
#[derive(Debug, Clone)]
pub struct SimCluster {
    shared: Arc<state::Shared>,
    endpoint: SocketAddr,
    stop: Arc<std::sync::Mutex<Option<tls::Running>>>,
}

impl SimCluster {
    /// Generates the PKI, binds the listener and starts serving.
    pub async fn start(config: SimConfig) -> Result<Self, SimError> {
        if config.control_planes == 0 {
            return Err(SimError::Config(
                "at least one control plane is needed".into(),
            ));
        }
        let name = &config.cluster_name;
        if name.is_empty()
            || name.len() > 63
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(SimError::Config(format!(
                "cluster name {name:?} must be 1 to 63 letters, digits or `-`"
            )));
        }
        let shared = Arc::new(state::Shared::new(config)?);
        let (endpoint, running) = tls::serve(shared.clone(), shared.config.bind).await?;
        tracing::info!(%endpoint, nodes = shared.node_count(), "simulated Talos apid listening");
        Ok(Self {
            shared,
            endpoint,
            stop: Arc::new(std::sync::Mutex::new(Some(running))),
        })
    }

    /// The endpoint to dial (`127.0.0.1:<port>`).
    pub fn endpoint(&self) -> SocketAddr {
        self.endpoint
    }

    /// The virtual nodes, control planes first.
    pub fn nodes(&self) -> Vec<SimNode> {
        self.shared.nodes()
    }

    /// The cluster CA certificate (PEM).
    pub fn ca_pem(&self) -> String {
        self.shared.pki.ca.cert_pem().to_owned()
    }

    /// Issues a client certificate with `role` (e.g. `os:admin`) that the server will honour.
    pub fn client_cert(&self, role: &str) -> Result<pki::IssuedCert, SimError> {
        self.shared.issue_client(role, pki::Validity::Current)
    }

    /// Starts building a cluster (see [`SimBuilder`]).
    pub fn builder() -> SimBuilder {
        SimBuilder::default()
    }

    /// The cluster's name, which is also its talosconfig context's name.
    pub fn name(&self) -> &str {
        &self.shared.config.cluster_name
    }

    /// A talosconfig (YAML) for this cluster with a fresh client certificate of `role`: one
    /// context named after the cluster (current), this endpoint, every node.
    pub fn talosconfig(&self, role: &str) -> Result<String, SimError> {
        self.talosconfig_with(role, pki::Validity::Current)
    }

    /// One talosconfig with a context for each cluster (each with its own CA and a fresh client
    /// certificate of `role`); the first is the current context. Cluster names must differ.
    pub fn fleet_talosconfig(clusters: &[&SimCluster], role: &str) -> Result<String, SimError> {
        let Some(first) = clusters.first() else {
            return Err(SimError::Config("no cluster given".into()));
        };
        let mut names: Vec<&str> = clusters.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        if names.len() != clusters.len() {
            return Err(SimError::Config(
                "clusters in one talosconfig need different names".into(),
            ));
        }
        let clients = clusters
            .iter()
            .map(|c| c.shared.issue_client(role, pki::Validity::Current))
            .collect::<Result<Vec<_>, _>>()?;
        let contexts: Vec<pki::TalosconfigContext<'_>> = clusters
            .iter()
            .zip(&clients)
            .map(|(c, client)| c.context_entry(client))
            .collect();
        Ok(pki::render_talosconfig(first.name(), &contexts))
    }

    /// Writes [`SimCluster::talosconfig`] to `dir/talosconfig`, readable by its owner only
    /// (0600), and returns the path.
    pub fn write_talosconfig(
        &self,
        dir: &std::path::Path,
        role: &str,
    ) -> Result<std::path::PathBuf, SimError> {
        let path = dir.join("talosconfig");
        write_private(&path, &self.talosconfig(role)?)
            .map_err(|e| SimError::Config(format!("cannot write {}: {e}", path.display())))?;
        Ok(path)
    }

    /// The resolved talosconfig context for this cluster with a fresh client certificate of
    /// `role`, ready for a Talos client.
    pub fn context(&self, role: &str) -> Result<talos_config::Context, SimError> {
        let yaml = self.talosconfig(role)?;
        talos_config::TalosConfig::from_yaml(&yaml, "talos-sim")
            .and_then(|c| c.context(Some(self.name())))
            .map_err(|e| SimError::Config(format!("the generated talosconfig: {e}")))
    }

    fn context_entry<'a>(&'a self, client: &'a pki::IssuedCert) -> pki::TalosconfigContext<'a> {
        pki::TalosconfigContext {
            name: self.name(),
            endpoints: vec![self.endpoint.to_string()],
            nodes: self.nodes().into_iter().map(|n| n.address).collect(),
            ca_pem: self.shared.pki.ca.cert_pem(),
            client,
        }
    }

    /// Like [`SimCluster::talosconfig`], with a client certificate of the given validity (an
    /// expired one lets tests check how clients report a rejected certificate).
    pub fn talosconfig_with(
        &self,
        role: &str,
        validity: pki::Validity,
    ) -> Result<String, SimError> {
        let client = self.shared.issue_client(role, validity)?;
        Ok(pki::render_talosconfig(
            self.name(),
            &[self.context_entry(&client)],
        ))
    }

    /// Sets the fault of one node (by address or hostname). Unknown nodes are ignored.
    ///
    /// The faults, each set per node except the certificate's, and all undone by
    /// [`SimCluster::clear_faults`]: [`Fault`] (how the node answers any call: unavailable,
    /// latency, stall, a status, a stream cut short), [`UpgradeFault`]
    /// ([`SimCluster::set_upgrade_fault`]: how upgrades go wrong), the pre-1.13 API
    /// ([`SimCluster::set_legacy_api`]) and [`CertFault`] ([`SimCluster::set_cert_fault`]: the
    /// certificate the endpoint presents).
    pub fn set_fault(&self, node: &str, fault: Fault) {
        self.shared.set_fault(node, fault);
    }

    /// Sets how the node's upgrades go wrong (by address or hostname; unknown nodes are ignored).
    pub fn set_upgrade_fault(&self, node: &str, fault: UpgradeFault) {
        self.shared.with_named(node, |n| n.upgrade_fault = fault);
    }

    /// Makes the node behave like a Talos before 1.13 (`true`): `ImageService` and
    /// `LifecycleService` answer `Unimplemented`, so clients must use the `MachineService` calls.
    pub fn set_legacy_api(&self, node: &str, legacy: bool) {
        self.shared.with_named(node, |n| n.legacy_api = legacy);
    }

    /// The Talos version the node runs now.
    pub fn version(&self, node: &str) -> Option<String> {
        self.shared.with_named(node, |n| n.version.clone())
    }

    /// The version an upgrade staged for the node's next boot.
    pub fn staged_version(&self, node: &str) -> Option<String> {
        self.shared
            .with_named(node, |n| n.staged_version.clone())
            .flatten()
    }

    /// The version the node ran before its last upgrade (what a rollback returns to).
    pub fn previous_version(&self, node: &str) -> Option<String> {
        self.shared
            .with_named(node, |n| n.previous_version.clone())
            .flatten()
    }

    /// The control planes lose etcd quorum: etcd stops serving (status and member calls fail,
    /// the etcd service shows `Failed`) until a recovery (`EtcdRecover` + `Bootstrap` with
    /// `recover_etcd`) on one control plane brings every member back.
    pub fn lose_etcd_quorum(&self) {
        self.shared.lose_etcd_quorum();
    }

    /// etcd as before a new cluster's first `Bootstrap`: no members, not running.
    pub fn unbootstrap_etcd(&self) {
        self.shared.unbootstrap_etcd();
    }

    /// etcd's current revision (a snapshot holds it; it moves on by 100 after each snapshot)
    /// and whether etcd serves.
    pub fn etcd_revision(&self) -> (u64, bool) {
        let etcd = state::lock(&self.shared.etcd);
        (etcd.revision, etcd.running)
    }

    /// Sets which certificate new TLS connections get.
    pub fn set_cert_fault(&self, fault: CertFault) {
        self.shared.set_cert_fault(fault);
    }

    /// Clears every injected fault: each node's [`Fault`], [`UpgradeFault`] and legacy API, and
    /// the endpoint's [`CertFault`]. Nodes that are down (rebooting, powered off) stay down.
    pub fn clear_faults(&self) {
        self.shared.clear_faults();
    }

    /// The calls `node` (address or hostname) received, oldest first, with what each mutating
    /// call asked for ([`ReceivedCall`]); recorded before roles and faults are checked, like
    /// [`SimCluster::calls`]. The newest 4096 are kept.
    pub fn received(&self, node: &str) -> Vec<ReceivedCall> {
        self.shared.received(node)
    }

    /// Requests received for `node` and RPC `method` (e.g. `Version`), counted before faults.
    pub fn calls(&self, node: &str, method: &str) -> u64 {
        self.shared.calls(node, method)
    }

    /// TLS handshakes the endpoint has completed since it started (restarts included). A client
    /// that reuses its connection makes no new one.
    pub fn tls_handshakes(&self) -> u64 {
        self.shared.handshakes()
    }

    /// The node's current boot id.
    pub fn boot_id(&self, node: &str) -> Option<String> {
        self.shared.boot_id(node)
    }

    /// Whether the node answers now (not rebooting, not shut down).
    pub fn is_up(&self, node: &str) -> bool {
        self.shared.is_up(node)
    }

    /// Restarts the endpoint as an apid restart would look to clients: it stops serving (see
    /// [`SimCluster::shutdown`]: open streams end with `Unavailable`, stalled calls are released),
    /// keeps the port closed for `down_for`, then serves again on the same port with the same
    /// state, certificates and faults. Clones of this handle see the restarted server.
    pub async fn restart(&self, down_for: Duration) -> Result<(), SimError> {
        let taken = self.stop.lock().ok().and_then(|mut guard| guard.take());
        if let Some(running) = taken {
            self.shared.stop();
            stop_running(running).await;
        }
        tokio::time::sleep(down_for).await;
        self.shared.resume();
        let (_, running) = tls::serve(self.shared.clone(), self.endpoint).await?;
        if let Ok(mut guard) = self.stop.lock() {
            *guard = Some(running);
        }
        tracing::info!(endpoint = %self.endpoint, "simulated apid restarted");
        Ok(())
    }

    /// Stops serving: no new connections, open streams end with `Unavailable` (as when apid goes
    /// away), stalled calls are released, and connections close once their calls are done
    /// (forcibly after a few seconds). Clones of this handle see the same stopped server.
    pub async fn shutdown(self) {
        let taken = self.stop.lock().ok().and_then(|mut guard| guard.take());
        if let Some(running) = taken {
            self.shared.stop();
            stop_running(running).await;
        }
    }
}

/// The fingerprint [`ReceivedCall::detail`] gives for bytes a call carried (applied
/// configurations): 64-bit FNV-1a, as 16 hex digits. It identifies content without showing it.
pub fn fingerprint(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// Writes `body` to `path`, created or truncated, readable by its owner only (on Unix).
fn write_private(path: &std::path::Path, body: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    // An existing file keeps its mode on open: narrow it too.
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(body.as_bytes())
}

/// Stops the accept loop and the server, waiting a few seconds for open calls to end.
async fn stop_running(running: tls::Running) {
    running.accept.abort();
    let _ = running.stop.send(());
    let mut task = running.task;
    if tokio::time::timeout(Duration::from_secs(5), &mut task)
        .await
        .is_err()
    {
        tracing::warn!("simulated apid did not stop within 5 s; aborting it");
        task.abort();
    }
}
