//! [`SimBuilder`]: a simulated cluster described step by step.

use std::net::SocketAddr;
use std::time::Duration;

use crate::{ServerTlsMode, SimCluster, SimConfig, SimError};

/// Describes a simulated cluster and starts it; every setting has [`SimConfig::default`]'s value
/// until set. Several clusters can run in one process, each with its own CA and endpoint.
///
/// ```no_run
/// # async fn demo() -> Result<(), talos_sim::SimError> {
/// let prod = talos_sim::SimCluster::builder()
///     .name("prod")
///     .control_planes(3)
///     .workers(2)
///     .version("v1.11.5")
///     .node_version("talos-worker-2", "v1.10.7")
///     .machine_config_patch("cluster:\n  network:\n    cni:\n      name: none\n")
///     .start()
///     .await?;
/// # drop(prod); Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct SimBuilder {
    config: SimConfig,
}

impl SimBuilder {
    /// The cluster's name, also its talosconfig context's (default `talos-sim`). Clusters with
    /// other names get secret values of their own.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.cluster_name = name.into();
        self
    }

    /// Control-plane nodes (default 3; at least 1).
    pub fn control_planes(mut self, n: usize) -> Self {
        self.config.control_planes = n;
        self
    }

    /// Worker nodes (default 2).
    pub fn workers(mut self, n: usize) -> Self {
        self.config.workers = n;
        self
    }

    /// The Talos version every node runs unless set per node (default `v1.11.5`).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.config.talos_version = version.into();
        self
    }

    /// The Talos version one node (address or hostname) runs.
    pub fn node_version(mut self, node: impl Into<String>, version: impl Into<String>) -> Self {
        self.config
            .node_versions
            .push((node.into(), version.into()));
        self
    }

    /// A YAML mapping merged into every node's machine configuration; see
    /// [`SimConfig::machine_config_patch`].
    pub fn machine_config_patch(mut self, yaml: impl Into<String>) -> Self {
        self.config.machine_config_patch = Some(yaml.into());
        self
    }

    /// Lines in each service or container log.
    pub fn log_lines(mut self, n: usize) -> Self {
        self.config.log_lines = n;
        self
    }

    /// How long a rebooting node stays unreachable.
    pub fn reboot_downtime(mut self, downtime: Duration) -> Self {
        self.config.reboot_downtime = downtime;
        self
    }

    /// Delay added to every call before its node answers (the endpoint-to-node round trip of a
    /// real cluster; default none).
    pub fn node_latency(mut self, latency: Duration) -> Self {
        self.config.node_latency = latency;
        self
    }

    /// The TLS versions offered.
    pub fn tls(mut self, mode: ServerTlsMode) -> Self {
        self.config.tls = mode;
        self
    }

    /// Where to listen (default `127.0.0.1:0`, a free port).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.config.bind = addr;
        self
    }

    /// The configuration built so far.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Starts the cluster ([`SimCluster::start`]).
    pub async fn start(self) -> Result<SimCluster, SimError> {
        SimCluster::start(self.config).await
    }
}
