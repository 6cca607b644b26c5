//! The Talos API as domain traits — [`NodeInfo`], [`Files`], [`Workloads`], [`Logs`],
//! [`Cluster`], [`Etcd`], [`Lifecycle`], [`Resources`] — and [`TalosApi`], the supertrait every
//! type implementing all of them has.
//!
//! Each domain trait has its own mockall mock with the `mock` feature (`MockNodeInfo`,
//! `MockEtcd`, …) for code that needs one domain; `MockTalosApi` implements every domain at once,
//! and so [`TalosApi`], for code that takes the whole API.

use async_trait::async_trait;

use crate::error::Result;
use crate::kubeconfig::Kubeconfig;
use crate::options::CallOptions;
use crate::types::*;

/// Node information: versions, hardware, kernel counters, network.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait NodeInfo: Send + Sync {
    /// Talos version of the node.
    async fn version(&self, opts: &CallOptions) -> Result<VersionInfo>;
    /// The node's hostname.
    async fn hostname(&self, opts: &CallOptions) -> Result<String>;
    /// Kernel statistics: CPU times, processes, boot time.
    async fn system_stat(&self, opts: &CallOptions) -> Result<SystemStat>;
    /// CPU models and clocks.
    async fn cpu_info(&self, opts: &CallOptions) -> Result<Vec<CpuInfo>>;
    /// Memory in bytes.
    async fn memory(&self, opts: &CallOptions) -> Result<MemoryInfo>;
    /// Load averages.
    async fn load_avg(&self, opts: &CallOptions) -> Result<LoadAvg>;
    /// Block device I/O counters.
    async fn disk_stats(&self, opts: &CallOptions) -> Result<Vec<DiskStat>>;
    /// Mounted filesystems with sizes.
    async fn mounts(&self, opts: &CallOptions) -> Result<Vec<MountInfo>>;
    /// Block devices (StorageService).
    async fn disks(&self, opts: &CallOptions) -> Result<Vec<DiskInfo>>;
    /// Network interface counters.
    async fn network_devices(&self, opts: &CallOptions) -> Result<Vec<NetDevice>>;
    /// Sockets of the host network namespace.
    async fn netstat(&self, opts: &CallOptions, filter: NetstatFilter) -> Result<Vec<SocketInfo>>;
    /// Processes.
    async fn processes(&self, opts: &CallOptions) -> Result<Vec<ProcessInfo>>;
    /// Time and NTP offset.
    async fn time(&self, opts: &CallOptions) -> Result<TimeInfo>;
}

/// The node's filesystem: listings, file contents, disk usage.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait Files: Send + Sync {
    /// Sizes of `paths` (recursing `depth` levels), at most `limit` entries.
    async fn disk_usage(
        &self,
        opts: &CallOptions,
        paths: Vec<String>,
        depth: i32,
        limit: usize,
    ) -> Result<Vec<DiskUsageEntry>>;
    /// Lists a directory (at most `limit` entries).
    async fn list_files(
        &self,
        opts: &CallOptions,
        root: &str,
        depth: i32,
        limit: usize,
    ) -> Result<Vec<FileInfo>>;
    /// Reads a file, keeping at most `max_bytes`.
    async fn read_file(
        &self,
        opts: &CallOptions,
        path: &str,
        max_bytes: usize,
    ) -> Result<FileContent>;
}

/// Containers, images and Talos services.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait Workloads: Send + Sync {
    /// Containers in a namespace.
    async fn containers(
        &self,
        opts: &CallOptions,
        namespace: ContainerNamespace,
    ) -> Result<Vec<ContainerInfo>>;
    /// Container resource use in a namespace.
    async fn container_stats(
        &self,
        opts: &CallOptions,
        namespace: ContainerNamespace,
    ) -> Result<Vec<ContainerStats>>;
    /// Talos services with state and health.
    async fn services(&self, opts: &CallOptions) -> Result<Vec<ServiceInfo>>;
    /// Starts, stops or restarts a service (a write: never retried).
    async fn service_action(
        &self,
        opts: &CallOptions,
        id: &str,
        action: ServiceAction,
    ) -> Result<String>;
    /// Cached container images in a namespace (`ImageService.List`, falling back to
    /// `MachineService.ImageList` on older nodes).
    async fn images(
        &self,
        opts: &CallOptions,
        namespace: ContainerNamespace,
    ) -> Result<Vec<ImageInfo>>;
    /// Pulls an image into the node's cache (a write).
    async fn image_pull(
        &self,
        opts: &CallOptions,
        namespace: ContainerNamespace,
        reference: &str,
    ) -> Result<String>;
}

/// Logs, the kernel ring buffer and machine events.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait Logs: Send + Sync {
    /// Ids that have logs (services and containers).
    async fn log_sources(&self, opts: &CallOptions) -> Result<Vec<String>>;
    /// Log lines of a service or container, read with bounded memory.
    async fn logs(
        &self,
        opts: &CallOptions,
        source: &LogSource,
        limits: &StreamLimits,
    ) -> Result<LogLines>;
    /// Kernel ring buffer, read with bounded memory.
    async fn dmesg(&self, opts: &CallOptions, limits: &StreamLimits) -> Result<LogLines>;
    /// Machine events, bounded by count and idle time.
    async fn events(
        &self,
        opts: &CallOptions,
        request: &EventsRequest,
    ) -> Result<Vec<MachineEvent>>;
}

/// Cluster-wide services: the health check and the admin kubeconfig.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait Cluster: Send + Sync {
    /// Runs the cluster health check, collecting its progress.
    async fn health_check(
        &self,
        opts: &CallOptions,
        request: &HealthCheckRequest,
    ) -> Result<Vec<HealthProgress>>;
    /// The admin kubeconfig, unpacked. Secret.
    async fn kubeconfig(&self, opts: &CallOptions) -> Result<Kubeconfig>;
}

/// The node's etcd member: membership, status, alarms, maintenance and snapshots.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait Etcd: Send + Sync {
    /// etcd members as seen by the node.
    async fn etcd_members(&self, opts: &CallOptions) -> Result<Vec<EtcdMember>>;
    /// Status of the node's etcd member.
    async fn etcd_status(&self, opts: &CallOptions) -> Result<EtcdMemberStatus>;
    /// Active etcd alarms.
    async fn etcd_alarms(&self, opts: &CallOptions) -> Result<Vec<EtcdAlarm>>;
    /// Disarms etcd alarms (a write).
    async fn etcd_alarm_disarm(&self, opts: &CallOptions) -> Result<Vec<EtcdAlarm>>;
    /// Defragments the node's etcd member (a write).
    async fn etcd_defragment(&self, opts: &CallOptions) -> Result<()>;
    /// Streams the node's etcd snapshot into `out`, chunk by chunk (flushed at the end), failing
    /// once more than `max_bytes` arrive; returns the size and SHA-256 of what was written. Where
    /// the bytes go (files, permissions, naming, syncing) is the caller's business: pass a
    /// second handle of a file to keep one for `sync_all`.
    async fn etcd_snapshot(
        &self,
        opts: &CallOptions,
        out: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
        max_bytes: u64,
    ) -> Result<SnapshotInfo>;
    /// Uploads a snapshot for disaster recovery (`EtcdRecover`, client streaming), read from
    /// `source` in bounded chunks; returns the size and SHA-256 of what was sent. A read error
    /// aborts the upload. A write: never retried.
    async fn etcd_recover(
        &self,
        opts: &CallOptions,
        source: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    ) -> Result<SnapshotInfo>;
    /// `Bootstrap`: starts etcd on the node as a new single-member cluster, or, with
    /// `recover_etcd`, restores it from the uploaded snapshot. A write.
    async fn bootstrap(&self, opts: &CallOptions, request: BootstrapRequest) -> Result<()>;
    /// Makes the node's member give up leadership; returns the new leader's name when known.
    async fn etcd_forfeit_leadership(&self, opts: &CallOptions) -> Result<String>;
    /// Removes the node's member from etcd.
    async fn etcd_leave_cluster(&self, opts: &CallOptions) -> Result<()>;
    /// Removes another member by id.
    async fn etcd_remove_member(&self, opts: &CallOptions, member_id: u64) -> Result<()>;
}

/// Changes to the machine: configuration, reboot, shutdown, reset, upgrade, rollback.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait Lifecycle: Send + Sync {
    /// Applies a machine configuration.
    async fn apply_configuration(
        &self,
        opts: &CallOptions,
        request: &ApplyConfigRequest,
    ) -> Result<ApplyConfigResult>;
    /// Reboots the node.
    async fn reboot(&self, opts: &CallOptions, mode: RebootMode) -> Result<ActionAck>;
    /// Shuts the node down.
    async fn shutdown(&self, opts: &CallOptions, force: bool) -> Result<ActionAck>;
    /// Resets (wipes) the node.
    async fn reset(&self, opts: &CallOptions, request: &ResetRequest) -> Result<ActionAck>;
    /// Upgrades Talos on the node with the classic `MachineService.Upgrade` (an acknowledgement;
    /// honours stage, preserve, force and the reboot mode).
    async fn upgrade(&self, opts: &CallOptions, request: &UpgradeRequest) -> Result<ActionAck>;
    /// Starts `LifecycleService.Upgrade` (Talos 1.13+) with the installer `image` (pulled first
    /// with the image service) and returns its progress. A node without the service answers
    /// [`crate::Code::Unimplemented`]: use [`Lifecycle::upgrade`] there.
    async fn lifecycle_upgrade(
        &self,
        opts: &CallOptions,
        image: &str,
    ) -> Result<UpgradeProgressStream>;
    /// Boots the node back into the Talos it ran before its last upgrade.
    async fn rollback(&self, opts: &CallOptions) -> Result<ActionAck>;
}

/// COSI resources: get, list and watch.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait Resources: Send + Sync {
    /// One resource.
    async fn resource_get(
        &self,
        opts: &CallOptions,
        namespace: &str,
        resource_type: &str,
        id: &str,
    ) -> Result<Resource>;
    /// All resources of a type (at most `limit`).
    async fn resource_list(
        &self,
        opts: &CallOptions,
        namespace: &str,
        resource_type: &str,
        limit: usize,
    ) -> Result<Vec<Resource>>;
    /// Watches a type (or one id) as a bounded stream of events (see [`WatchOptions`]). Opening
    /// fails like any call (`Unimplemented`, `PermissionDenied` keep their [`crate::Code`]);
    /// later failures, such as the node going down, end the stream with one error.
    async fn watch(
        &self,
        opts: &CallOptions,
        namespace: &str,
        resource_type: &str,
        id: Option<String>,
        options: WatchOptions,
    ) -> Result<WatchStream>;
    /// Watches a type (or one id) and collects up to `max_events` events, stopping after `idle`
    /// without events.
    async fn resource_watch(
        &self,
        opts: &CallOptions,
        namespace: &str,
        resource_type: &str,
        id: Option<String>,
        max_events: usize,
        idle: std::time::Duration,
    ) -> Result<Vec<ResourceEvent>>;
}

/// The whole Talos API, against one node per call (`opts.node`): every domain trait.
///
/// Implemented by every type that implements all the domain traits (a blanket impl): over gRPC by
/// [`crate::GrpcTalosClient`]; with the `mock` feature by `MockTalosApi` (mockall) for unit tests.
/// Use [`crate::fan_out`] to call many nodes. Works as `Arc<dyn TalosApi>`; the domain methods are
/// callable on it without importing the domain traits.
pub trait TalosApi:
    NodeInfo + Files + Workloads + Logs + Cluster + Etcd + Lifecycle + Resources + Send + Sync
{
}

impl<T> TalosApi for T where
    T: NodeInfo + Files + Workloads + Logs + Cluster + Etcd + Lifecycle + Resources + Send + Sync
{
}

#[cfg(any(test, feature = "mock"))]
mockall::mock! {
    /// Every domain trait at once, and so [`TalosApi`]: the mock for code that takes the whole API.
    pub TalosApi {}
    #[async_trait]
    impl NodeInfo for TalosApi {
        async fn version(&self, opts: &CallOptions) -> Result<VersionInfo>;
        async fn hostname(&self, opts: &CallOptions) -> Result<String>;
        async fn system_stat(&self, opts: &CallOptions) -> Result<SystemStat>;
        async fn cpu_info(&self, opts: &CallOptions) -> Result<Vec<CpuInfo>>;
        async fn memory(&self, opts: &CallOptions) -> Result<MemoryInfo>;
        async fn load_avg(&self, opts: &CallOptions) -> Result<LoadAvg>;
        async fn disk_stats(&self, opts: &CallOptions) -> Result<Vec<DiskStat>>;
        async fn mounts(&self, opts: &CallOptions) -> Result<Vec<MountInfo>>;
        async fn disks(&self, opts: &CallOptions) -> Result<Vec<DiskInfo>>;
        async fn network_devices(&self, opts: &CallOptions) -> Result<Vec<NetDevice>>;
        async fn netstat(&self, opts: &CallOptions, filter: NetstatFilter) -> Result<Vec<SocketInfo>>;
        async fn processes(&self, opts: &CallOptions) -> Result<Vec<ProcessInfo>>;
        async fn time(&self, opts: &CallOptions) -> Result<TimeInfo>;
    }
    #[async_trait]
    impl Files for TalosApi {
        async fn disk_usage(
            &self,
            opts: &CallOptions,
            paths: Vec<String>,
            depth: i32,
            limit: usize,
        ) -> Result<Vec<DiskUsageEntry>>;
        async fn list_files(
            &self,
            opts: &CallOptions,
            root: &str,
            depth: i32,
            limit: usize,
        ) -> Result<Vec<FileInfo>>;
        async fn read_file(
            &self,
            opts: &CallOptions,
            path: &str,
            max_bytes: usize,
        ) -> Result<FileContent>;
    }
    #[async_trait]
    impl Workloads for TalosApi {
        async fn containers(
            &self,
            opts: &CallOptions,
            namespace: ContainerNamespace,
        ) -> Result<Vec<ContainerInfo>>;
        async fn container_stats(
            &self,
            opts: &CallOptions,
            namespace: ContainerNamespace,
        ) -> Result<Vec<ContainerStats>>;
        async fn services(&self, opts: &CallOptions) -> Result<Vec<ServiceInfo>>;
        async fn service_action(
            &self,
            opts: &CallOptions,
            id: &str,
            action: ServiceAction,
        ) -> Result<String>;
        async fn images(
            &self,
            opts: &CallOptions,
            namespace: ContainerNamespace,
        ) -> Result<Vec<ImageInfo>>;
        async fn image_pull(
            &self,
            opts: &CallOptions,
            namespace: ContainerNamespace,
            reference: &str,
        ) -> Result<String>;
    }
    #[async_trait]
    impl Logs for TalosApi {
        async fn log_sources(&self, opts: &CallOptions) -> Result<Vec<String>>;
        async fn logs(
            &self,
            opts: &CallOptions,
            source: &LogSource,
            limits: &StreamLimits,
        ) -> Result<LogLines>;
        async fn dmesg(&self, opts: &CallOptions, limits: &StreamLimits) -> Result<LogLines>;
        async fn events(
            &self,
            opts: &CallOptions,
            request: &EventsRequest,
        ) -> Result<Vec<MachineEvent>>;
    }
    #[async_trait]
    impl Cluster for TalosApi {
        async fn health_check(
            &self,
            opts: &CallOptions,
            request: &HealthCheckRequest,
        ) -> Result<Vec<HealthProgress>>;
        async fn kubeconfig(&self, opts: &CallOptions) -> Result<Kubeconfig>;
    }
    #[async_trait]
    impl Etcd for TalosApi {
        async fn etcd_members(&self, opts: &CallOptions) -> Result<Vec<EtcdMember>>;
        async fn etcd_status(&self, opts: &CallOptions) -> Result<EtcdMemberStatus>;
        async fn etcd_alarms(&self, opts: &CallOptions) -> Result<Vec<EtcdAlarm>>;
        async fn etcd_alarm_disarm(&self, opts: &CallOptions) -> Result<Vec<EtcdAlarm>>;
        async fn etcd_defragment(&self, opts: &CallOptions) -> Result<()>;
        async fn etcd_snapshot(
            &self,
            opts: &CallOptions,
            out: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
            max_bytes: u64,
        ) -> Result<SnapshotInfo>;
        async fn etcd_recover(
            &self,
            opts: &CallOptions,
            source: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
        ) -> Result<SnapshotInfo>;
        async fn bootstrap(&self, opts: &CallOptions, request: BootstrapRequest) -> Result<()>;
        async fn etcd_forfeit_leadership(&self, opts: &CallOptions) -> Result<String>;
        async fn etcd_leave_cluster(&self, opts: &CallOptions) -> Result<()>;
        async fn etcd_remove_member(&self, opts: &CallOptions, member_id: u64) -> Result<()>;
    }
    #[async_trait]
    impl Lifecycle for TalosApi {
        async fn apply_configuration(
            &self,
            opts: &CallOptions,
            request: &ApplyConfigRequest,
        ) -> Result<ApplyConfigResult>;
        async fn reboot(&self, opts: &CallOptions, mode: RebootMode) -> Result<ActionAck>;
        async fn shutdown(&self, opts: &CallOptions, force: bool) -> Result<ActionAck>;
        async fn reset(&self, opts: &CallOptions, request: &ResetRequest) -> Result<ActionAck>;
        async fn upgrade(&self, opts: &CallOptions, request: &UpgradeRequest) -> Result<ActionAck>;
        async fn lifecycle_upgrade(
            &self,
            opts: &CallOptions,
            image: &str,
        ) -> Result<UpgradeProgressStream>;
        async fn rollback(&self, opts: &CallOptions) -> Result<ActionAck>;
    }
    #[async_trait]
    impl Resources for TalosApi {
        async fn resource_get(
            &self,
            opts: &CallOptions,
            namespace: &str,
            resource_type: &str,
            id: &str,
        ) -> Result<Resource>;
        async fn resource_list(
            &self,
            opts: &CallOptions,
            namespace: &str,
            resource_type: &str,
            limit: usize,
        ) -> Result<Vec<Resource>>;
        async fn watch(
            &self,
            opts: &CallOptions,
            namespace: &str,
            resource_type: &str,
            id: Option<String>,
            options: WatchOptions,
        ) -> Result<WatchStream>;
        async fn resource_watch(
            &self,
            opts: &CallOptions,
            namespace: &str,
            resource_type: &str,
            id: Option<String>,
            max_events: usize,
            idle: std::time::Duration,
        ) -> Result<Vec<ResourceEvent>>;
    }

}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::error::{TalosError, Target};
    use crate::fanout::fan_out;

    /// Downstream crates test against `MockTalosApi` exactly like this, through `Arc<dyn TalosApi>`.
    #[tokio::test]
    async fn mock_works_behind_a_trait_object() {
        let mut mock = MockTalosApi::new();
        mock.expect_hostname()
            .times(3)
            .returning(|opts| match opts.node.as_deref() {
                Some("10.0.0.2") => Err(TalosError::Timeout {
                    target: Target {
                        endpoint: Some("10.0.0.1:50000".into()),
                        node: Some("10.0.0.2".into()),
                    },
                    after: std::time::Duration::from_secs(1),
                }),
                Some(node) => Ok(format!("host-{node}")),
                None => Ok("endpoint".into()),
            });
        let api: Arc<dyn TalosApi> = Arc::new(mock);
        let nodes = vec![
            "10.0.0.1".to_owned(),
            "10.0.0.2".to_owned(),
            "10.0.0.3".to_owned(),
        ];
        let results = fan_out(&nodes, 2, |node| {
            let api = api.clone();
            async move { api.hostname(&CallOptions::node(node)).await }
        })
        .await;
        assert_eq!(results[0].result.as_ref().unwrap(), "host-10.0.0.1");
        assert_eq!(
            results[1].result.as_ref().unwrap_err().kind(),
            crate::ErrorKind::Timeout
        );
        assert_eq!(results[2].result.as_ref().unwrap(), "host-10.0.0.3");
    }
}
