//! A simulated Talos `apid` for tests, benchmarks and the demo.
//!
//! [`SimCluster::start`] binds a loopback port and serves the Talos API subset of `talos-proto`
//! over real gRPC with mutual TLS (TLS 1.3, client certificates required, roles taken from the
//! certificate like apid). Behind the one endpoint live N virtual nodes (control planes and
//! workers); the `node` request metadata picks which one answers, exactly as apid proxies calls.
//! Node addresses are labels in 127.0.0.0/8: no traffic ever goes to them.
//!
//! Data is plausible and deterministic per node. State changes (reboots, service actions, etcd
//! membership, applied configs) are kept in memory. Faults can be switched per node at run time
//! ([`Fault`]) and for the endpoint's certificate ([`CertFault`]).
//!
//! Modules: [`pki`] makes the certificates, `tls` the server TLS and accept loop, `state` the
//! cluster model, `data` the generated content, `machine` and `services` the gRPC services.

pub mod archive;
mod data;
pub use data::PLANTED_SECRETS;
mod machine;
pub mod pki;
mod services;
mod state;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use state::{CertFault, Fault, NodeRole, SimNode, UpgradeFault};

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
    /// Cluster name (used in the talosconfig and kubeconfig).
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
    /// Added to every call before its node answers, as the endpoint-to-node round trip of a
    /// real cluster (zero: none). Per-node faults ([`Fault::Latency`]) add to it.
    pub node_latency: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            control_planes: 3,
            workers: 2,
            cluster_name: "talos-sim".into(),
            talos_version: "v1.11.5".into(),
            log_lines: 2000,
            dmesg_lines: 1000,
            reboot_downtime: Duration::from_secs(2),
            tls: ServerTlsMode::Tls13,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
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

    /// A talosconfig (YAML) for this cluster with a fresh client certificate of `role`: context
    /// `talos-sim` (current), this endpoint, every node.
    pub fn talosconfig(&self, role: &str) -> Result<String, SimError> {
        self.talosconfig_with(role, pki::Validity::Current)
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
            "talos-sim",
            &[pki::TalosconfigContext {
                name: "talos-sim",
                endpoints: vec![self.endpoint.to_string()],
                nodes: self.nodes().into_iter().map(|n| n.address).collect(),
                ca_pem: self.shared.pki.ca.cert_pem(),
                client: &client,
            }],
        ))
    }

    /// Sets the fault of one node (by address or hostname). Unknown nodes are ignored.
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

    /// Sets which certificate new TLS connections get.
    pub fn set_cert_fault(&self, fault: CertFault) {
        self.shared.set_cert_fault(fault);
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
