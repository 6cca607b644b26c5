//! `GrpcTalosClient`: the native gRPC/mTLS implementation of [`TalosApi`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use talos_config::Context;
use talos_proto::cluster::cluster_service_client::ClusterServiceClient;
use talos_proto::cosi::resource::state_client::StateClient;
use talos_proto::machine::image_service_client::ImageServiceClient;
use talos_proto::machine::lifecycle_service_client::LifecycleServiceClient;
use talos_proto::machine::machine_service_client::MachineServiceClient;
use talos_proto::storage::storage_service_client::StorageServiceClient;
use talos_proto::time::time_service_client::TimeServiceClient;
use talos_proto::{cluster, common, cosi, machine};
use tokio::io::AsyncWriteExt as _;
use tonic::transport::Channel;

use crate::api::{Cluster, Etcd, Files, Lifecycle, Logs, NodeInfo, Resources, Workloads};
use crate::channel::{CallKind, ClientSettings, ClientStats, Pipeline, Rpc};
use crate::convert;
use crate::error::{Result, TalosError, Target};
use crate::kubeconfig::{self, Kubeconfig};
use crate::lines::{LineAssembler, TailBuffer};
use crate::options::CallOptions;
use crate::types::*;

/// Largest gzip'd kubeconfig archive accepted.
const MAX_KUBECONFIG_ARCHIVE: usize = 8 * 1024 * 1024;

/// A Talos API client for one talosconfig context, over gRPC with mutual TLS.
///
/// Cheap to clone; clones share channels. Channels connect on first use and reconnect after
/// failures.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use talos_client::{CallOptions, GrpcTalosClient, NodeInfo};
/// let config = talos_config::TalosConfig::load(None)?;
/// let client = GrpcTalosClient::new(&config.context(None)?)?;
/// let version = client.version(&CallOptions::node("10.5.0.2")).await?;
/// eprintln!("{}", version.tag);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct GrpcTalosClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    context: String,
    nodes: Vec<String>,
    pipeline: Pipeline,
}

impl GrpcTalosClient {
    /// A client with default settings.
    pub fn new(context: &Context) -> Result<Self> {
        Self::with_settings(context, ClientSettings::default())
    }

    /// A client with explicit settings.
    pub fn with_settings(context: &Context, settings: ClientSettings) -> Result<Self> {
        Ok(Self {
            inner: Arc::new(Inner {
                context: context.name().to_owned(),
                nodes: context.nodes().to_vec(),
                pipeline: Pipeline::new(context, settings)?,
            }),
        })
    }

    /// The context this client was built from.
    pub fn context_name(&self) -> &str {
        &self.inner.context
    }

    /// The context's default nodes.
    pub fn default_nodes(&self) -> &[String] {
        &self.inner.nodes
    }

    /// The settings in force.
    pub fn settings(&self) -> &ClientSettings {
        &self.inner.pipeline.settings
    }

    /// What the call pipeline has done so far.
    pub fn stats(&self) -> ClientStats {
        self.inner.pipeline.stats()
    }

    /// The escape hatch: generated clients on the managed channel, for RPCs not wrapped here.
    /// Build requests with [`CallOptions::apply`] so node targeting stays in one place.
    pub fn proto(&self) -> ProtoClients {
        ProtoClients::new(self.inner.pipeline.preferred_channel(), self.max_decoding())
    }

    fn pipeline(&self) -> &Pipeline {
        &self.inner.pipeline
    }

    fn max_decoding(&self) -> usize {
        self.inner.pipeline.settings.max_decoding_message_size
    }

    /// Every unary RPC goes through here: the pipeline (deadline, failover, retries for reads)
    /// with the generated clients built on the channel it picked.
    async fn unary<Req, Resp, F, Fut>(
        &self,
        rpc: Rpc,
        opts: &CallOptions,
        kind: CallKind,
        req: Req,
        call: F,
    ) -> Result<(Resp, Target)>
    where
        Req: Clone,
        F: Fn(ProtoClients, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let max = self.max_decoding();
        self.pipeline()
            .unary(rpc, opts, kind, req, |ch, req| {
                call(ProtoClients::new(ch, max), req)
            })
            .await
    }

    /// Every server stream is opened here, like [`GrpcTalosClient::unary`]; its messages are read
    /// with [`GrpcTalosClient::collect`] or [`Pipeline::next`].
    async fn open_stream<Req, Resp, F, Fut>(
        &self,
        rpc: Rpc,
        opts: &CallOptions,
        kind: CallKind,
        req: Req,
        call: F,
    ) -> Result<(tonic::Streaming<Resp>, Target)>
    where
        Req: Clone,
        F: Fn(ProtoClients, tonic::Request<Req>) -> Fut,
        Fut: Future<
            Output = std::result::Result<tonic::Response<tonic::Streaming<Resp>>, tonic::Status>,
        >,
    {
        let max = self.max_decoding();
        self.pipeline()
            .open_stream(rpc, opts, kind, req, |ch, req| {
                call(ProtoClients::new(ch, max), req)
            })
            .await
    }

    /// The one stream-collecting helper: reads messages within the idle timeout, maps each with
    /// `each` (which may skip one with `None` or fail the call), and stops after `limit` kept
    /// items — dropping the stream then cancels it.
    async fn collect<M, T>(
        &self,
        stream: &mut tonic::Streaming<M>,
        target: &Target,
        idle: Duration,
        limit: usize,
        mut each: impl FnMut(M) -> Result<Option<T>>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(message) = self.pipeline().next(stream, target, idle).await? else {
                break;
            };
            if let Some(item) = each(message)? {
                out.push(item);
            }
        }
        Ok(out)
    }

    /// Reads a `common.Data` stream into bounded lines.
    async fn read_lines(
        &self,
        mut stream: tonic::Streaming<common::Data>,
        target: &Target,
        opts: &CallOptions,
        limits: &StreamLimits,
        max_lines: usize,
    ) -> Result<LogLines> {
        let idle = self.pipeline().idle_timeout(opts);
        let deadline = limits.follow_for.map(|d| tokio::time::Instant::now() + d);
        let needle = limits.grep.as_ref().map(|g| g.to_lowercase());
        let mut assembler = LineAssembler::default();
        let mut tail = TailBuffer::new(max_lines, limits.max_bytes);
        let mut lines_read = 0u64;
        let mut bytes_read = 0u64;
        let mut keep = |line: String, tail: &mut TailBuffer| {
            lines_read += 1;
            if needle
                .as_ref()
                .is_none_or(|n| line.to_lowercase().contains(n))
            {
                tail.push(line);
            }
        };
        loop {
            let next = self.pipeline().next(&mut stream, target, idle);
            let message = match deadline {
                Some(at) => match tokio::time::timeout_at(at, next).await {
                    Ok(m) => m?,
                    Err(_) => break, // followed for as long as asked
                },
                None => next.await?,
            };
            let Some(data) = message else { break };
            check_metadata(data.metadata.as_ref(), target)?;
            bytes_read += data.bytes.len() as u64;
            assembler.push(&data.bytes, |line| keep(line, &mut tail));
        }
        assembler.finish(|line| keep(line, &mut tail));
        Ok(LogLines {
            dropped_lines: tail.dropped(),
            peak_buffer_bytes: tail.peak_bytes(),
            lines: tail.into_lines(),
            lines_read,
            bytes_read,
        })
    }

    /// Reads a `common.Data` stream into memory, failing beyond `max` bytes unless `truncate`.
    async fn read_bytes(
        &self,
        mut stream: tonic::Streaming<common::Data>,
        target: &Target,
        opts: &CallOptions,
        max: usize,
    ) -> Result<(Vec<u8>, bool)> {
        let idle = self.pipeline().idle_timeout(opts);
        let mut out = Vec::new();
        while let Some(data) = self.pipeline().next(&mut stream, target, idle).await? {
            check_metadata(data.metadata.as_ref(), target)?;
            let room = max - out.len();
            if data.bytes.len() > room {
                out.extend_from_slice(&data.bytes[..room]);
                return Ok((out, true)); // dropping the stream cancels it
            }
            out.extend_from_slice(&data.bytes);
        }
        Ok((out, false))
    }
}

/// Generated gRPC clients on a managed channel (see [`GrpcTalosClient::proto`]): the one place
/// they are built, for the client's own calls too.
#[derive(Debug, Clone)]
pub struct ProtoClients {
    channel: Channel,
    max_decoding: usize,
}

impl ProtoClients {
    fn new(channel: Channel, max_decoding: usize) -> Self {
        Self {
            channel,
            max_decoding,
        }
    }

    /// Lowers the largest message the clients decode (a watch bounds each event this way).
    fn max_decoding(mut self, max: usize) -> Self {
        self.max_decoding = self.max_decoding.min(max);
        self
    }

    /// `machine.MachineService`.
    pub fn machine(&self) -> MachineServiceClient<Channel> {
        MachineServiceClient::new(self.channel.clone()).max_decoding_message_size(self.max_decoding)
    }
    /// `machine.ImageService` (Talos 1.13+).
    pub fn image(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel.clone()).max_decoding_message_size(self.max_decoding)
    }
    /// `machine.LifecycleService` (Talos 1.13+).
    pub fn lifecycle(&self) -> LifecycleServiceClient<Channel> {
        LifecycleServiceClient::new(self.channel.clone())
            .max_decoding_message_size(self.max_decoding)
    }
    /// `cluster.ClusterService`.
    pub fn cluster(&self) -> ClusterServiceClient<Channel> {
        ClusterServiceClient::new(self.channel.clone()).max_decoding_message_size(self.max_decoding)
    }
    /// `storage.StorageService`.
    pub fn storage(&self) -> StorageServiceClient<Channel> {
        StorageServiceClient::new(self.channel.clone()).max_decoding_message_size(self.max_decoding)
    }
    /// `time.TimeService`.
    pub fn time(&self) -> TimeServiceClient<Channel> {
        TimeServiceClient::new(self.channel.clone()).max_decoding_message_size(self.max_decoding)
    }
    /// `cosi.resource.State`.
    pub fn resources(&self) -> StateClient<Channel> {
        StateClient::new(self.channel.clone()).max_decoding_message_size(self.max_decoding)
    }
}

/// An error reported inside a response item (apid puts proxy failures there).
fn check_metadata(metadata: Option<&common::Metadata>, target: &Target) -> Result<()> {
    match metadata {
        Some(m) if !m.error.is_empty() => Err(TalosError::Api {
            target: target.clone(),
            code: crate::Code::Unknown,
            message: m.error.clone(),
        }),
        _ => Ok(()),
    }
}

/// Response items that carry `common.Metadata`.
trait WithMetadata {
    fn meta(&self) -> Option<&common::Metadata>;
}

macro_rules! with_metadata {
    ($($ty:ty),* $(,)?) => {
        $(impl WithMetadata for $ty {
            fn meta(&self) -> Option<&common::Metadata> {
                self.metadata.as_ref()
            }
        })*
    };
}

with_metadata!(
    machine::Version,
    machine::Hostname,
    machine::SystemStat,
    machine::CpUsInfo,
    machine::Memory,
    machine::LoadAvg,
    machine::DiskStats,
    machine::Mounts,
    machine::NetworkDeviceStats,
    machine::Netstat,
    machine::Process,
    machine::Container,
    machine::Stats,
    machine::ServiceList,
    machine::ServiceStart,
    machine::ServiceStop,
    machine::ServiceRestart,
    machine::LogsContainer,
    machine::EtcdMembers,
    machine::EtcdStatus,
    machine::EtcdAlarm,
    machine::EtcdAlarmDisarm,
    machine::EtcdDefragment,
    machine::EtcdForfeitLeadership,
    machine::EtcdLeaveCluster,
    machine::EtcdRemoveMemberById,
    machine::EtcdRecover,
    machine::Bootstrap,
    machine::ApplyConfiguration,
    machine::Reboot,
    machine::Shutdown,
    machine::Reset,
    machine::Upgrade,
    machine::Rollback,
    machine::ImagePull,
    talos_proto::storage::Disks,
    talos_proto::time::Time,
);

/// The one item a node-targeted call returns (apid proxies 1:1), with its metadata checked.
fn single<T: WithMetadata>(messages: Vec<T>, target: &Target) -> Result<T> {
    let item = messages
        .into_iter()
        .next()
        .ok_or_else(|| TalosError::Protocol {
            target: target.clone(),
            message: "the response holds no message".into(),
        })?;
    check_metadata(item.meta(), target)?;
    Ok(item)
}

/// The full gRPC name of the service a [`ProtoClients`] accessor builds.
macro_rules! service {
    (machine) => {
        "machine.MachineService"
    };
    (image) => {
        "machine.ImageService"
    };
    (lifecycle) => {
        "machine.LifecycleService"
    };
    (cluster) => {
        "cluster.ClusterService"
    };
    (storage) => {
        "storage.StorageService"
    };
    (time) => {
        "time.TimeService"
    };
    (resources) => {
        "cosi.resource.State"
    };
}

/// A unary call `service.method` through [`GrpcTalosClient::unary`]; a future of
/// `(response, target)`.
macro_rules! unary {
    ($self:ident, $opts:expr, $kind:expr, $req:expr, $svc:ident . $method:ident) => {
        $self.unary(
            Rpc::new(service!($svc), stringify!($method)),
            $opts,
            $kind,
            $req,
            |c, req| async move { c.$svc().$method(req).await },
        )
    };
}

/// Opens the server stream `service.method` through [`GrpcTalosClient::open_stream`]; a future
/// of `(stream, target)`.
macro_rules! stream {
    ($self:ident, $opts:expr, $kind:expr, $req:expr, $svc:ident . $method:ident) => {
        $self.open_stream(
            Rpc::new(service!($svc), stringify!($method)),
            $opts,
            $kind,
            $req,
            |c, req| async move { c.$svc().$method(req).await },
        )
    };
}

mod cluster_service;
mod etcd;
mod files;
mod lifecycle;
mod logs;
mod node;
mod resources;
mod workloads;
