//! `GrpcTalosClient`: the native gRPC/mTLS implementation of [`TalosApi`].

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

use crate::api::TalosApi;
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
/// use talos_client::{CallOptions, GrpcTalosClient, TalosApi};
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
        ProtoClients {
            channel: self.inner.pipeline.preferred_channel(),
            max_decoding: self.inner.pipeline.settings.max_decoding_message_size,
        }
    }

    fn pipeline(&self) -> &Pipeline {
        &self.inner.pipeline
    }

    fn max_decoding(&self) -> usize {
        self.inner.pipeline.settings.max_decoding_message_size
    }

    fn machine(&self, channel: Channel) -> MachineServiceClient<Channel> {
        MachineServiceClient::new(channel).max_decoding_message_size(self.max_decoding())
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

/// Generated gRPC clients on a managed channel (see [`GrpcTalosClient::proto`]).
#[derive(Debug, Clone)]
pub struct ProtoClients {
    channel: Channel,
    max_decoding: usize,
}

impl ProtoClients {
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

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Size of the chunks a recovery upload sends.
const UPLOAD_CHUNK: usize = 64 * 1024;

/// The chunks of a recovery upload as the request stream: a concrete type over a bounded
/// channel that a reader task fills.
struct Chunks(tokio::sync::mpsc::Receiver<common::Data>);

impl futures_util::Stream for Chunks {
    type Item = common::Data;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<common::Data>> {
        self.0.poll_recv(cx)
    }
}

type Source = Box<dyn tokio::io::AsyncRead + Send + Unpin>;

/// A snapshot upload as the pipeline's request: the source can be taken once (a client stream
/// cannot be replayed on another endpoint); what was sent is counted and hashed on the way.
#[derive(Clone)]
struct Upload {
    source: Arc<std::sync::Mutex<Option<Source>>>,
    progress: Arc<std::sync::Mutex<(u64, ring::digest::Context)>>,
    failed: Arc<std::sync::Mutex<Option<tokio::sync::oneshot::Sender<std::io::Error>>>>,
}

impl Upload {
    fn new(source: Source) -> Self {
        Self {
            source: Arc::new(std::sync::Mutex::new(Some(source))),
            progress: Arc::new(std::sync::Mutex::new((
                0,
                ring::digest::Context::new(&ring::digest::SHA256),
            ))),
            failed: Arc::default(),
        }
    }

    /// Starts reading the source into a bounded channel (two chunks ahead at most) and returns
    /// the request stream; `None` when the source was already taken. A read error is reported
    /// through `failed` and the stream never ends cleanly (the caller drops the call).
    fn start(&self) -> Option<Chunks> {
        use tokio::io::AsyncReadExt as _;
        let mut source = self
            .source
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()?;
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let (progress, failed) = (self.progress.clone(), self.failed.clone());
        tokio::spawn(async move {
            loop {
                let mut buf = vec![0u8; UPLOAD_CHUNK];
                let mut filled = 0;
                // Whole chunks (short reads are normal for files and pipes).
                while filled < UPLOAD_CHUNK {
                    match source.read(&mut buf[filled..]).await {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) => {
                            let tx_failed = failed
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .take();
                            if let Some(report) = tx_failed {
                                let _ = report.send(e);
                            }
                            // Keep the stream open until the call is dropped.
                            tx.closed().await;
                            return;
                        }
                    }
                }
                if filled == 0 {
                    return;
                }
                buf.truncate(filled);
                {
                    let mut p = progress
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    p.0 += filled as u64;
                    p.1.update(&buf);
                }
                let chunk = common::Data {
                    metadata: None,
                    bytes: buf,
                };
                if tx.send(chunk).await.is_err() {
                    return;
                }
            }
        });
        Some(Chunks(rx))
    }
}

/// A unary `MachineService` call through the pipeline; evaluates to `(response, target)`.
macro_rules! machine_unary {
    ($self:ident, $opts:expr, $kind:expr, $req:expr, $method:ident) => {
        $self
            .pipeline()
            .unary(
                Rpc::new("machine.MachineService", stringify!($method)),
                $opts,
                $kind,
                $req,
                |ch, req| {
                    let mut c = $self.machine(ch);
                    async move { c.$method(req).await }
                },
            )
            .await?
    };
}

/// Opens a server-streaming `MachineService` call; evaluates to `(stream, target)`.
macro_rules! machine_stream {
    ($self:ident, $opts:expr, $kind:expr, $req:expr, $method:ident) => {
        $self
            .pipeline()
            .open_stream(
                Rpc::new("machine.MachineService", stringify!($method)),
                $opts,
                $kind,
                $req,
                |ch, req| {
                    let mut c = $self.machine(ch);
                    async move { c.$method(req).await }
                },
            )
            .await?
    };
}

#[async_trait]
impl TalosApi for GrpcTalosClient {
    async fn version(&self, opts: &CallOptions) -> Result<VersionInfo> {
        let (resp, target) = machine_unary!(self, opts, CallKind::Read, (), version);
        Ok(convert::version(single(resp.messages, &target)?))
    }

    async fn hostname(&self, opts: &CallOptions) -> Result<String> {
        let (resp, target) = machine_unary!(self, opts, CallKind::Read, (), hostname);
        Ok(single(resp.messages, &target)?.hostname)
    }

    async fn system_stat(&self, opts: &CallOptions) -> Result<SystemStat> {
        let (resp, target) = machine_unary!(self, opts, CallKind::Read, (), system_stat);
        Ok(convert::system_stat(single(resp.messages, &target)?))
    }

    async fn cpu_info(&self, opts: &CallOptions) -> Result<Vec<CpuInfo>> {
        let (resp, target) = machine_unary!(self, opts, CallKind::Read, (), cpu_info);
        Ok(single(resp.messages, &target)?
            .cpu_info
            .into_iter()
            .map(convert::cpu_info)
            .collect())
    }

    async fn memory(&self, opts: &CallOptions) -> Result<MemoryInfo> {
        let (resp, target) = machine_unary!(self, opts, CallKind::Read, (), memory);
        Ok(convert::memory(
            single(resp.messages, &target)?.meminfo.unwrap_or_default(),
        ))
    }

    async fn load_avg(&self, opts: &CallOptions) -> Result<LoadAvg> {
        let (resp, target) = machine_unary!(self, opts, CallKind::Read, (), load_avg);
        Ok(convert::load_avg(single(resp.messages, &target)?))
    }

    async fn disk_stats(&self, opts: &CallOptions) -> Result<Vec<DiskStat>> {
        let (resp, target) = machine_unary!(self, opts, CallKind::Read, (), disk_stats);
        Ok(single(resp.messages, &target)?
            .devices
            .into_iter()
            .map(convert::disk_stat)
            .collect())
    }

    async fn disk_usage(
        &self,
        opts: &CallOptions,
        paths: Vec<String>,
        depth: i32,
        limit: usize,
    ) -> Result<Vec<DiskUsageEntry>> {
        let request = machine::DiskUsageRequest {
            recursion_depth: depth,
            all: false,
            threshold: 0,
            paths,
        };
        let (mut stream, target) = machine_stream!(self, opts, CallKind::Read, request, disk_usage);
        let idle = self.pipeline().idle_timeout(opts);
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(item) = self.pipeline().next(&mut stream, &target, idle).await? else {
                break;
            };
            check_metadata(item.metadata.as_ref(), &target)?;
            out.push(convert::disk_usage(item));
        }
        Ok(out)
    }

    async fn mounts(&self, opts: &CallOptions) -> Result<Vec<MountInfo>> {
        let (resp, target) = machine_unary!(self, opts, CallKind::Read, (), mounts);
        Ok(single(resp.messages, &target)?
            .stats
            .into_iter()
            .map(convert::mount)
            .collect())
    }

    async fn disks(&self, opts: &CallOptions) -> Result<Vec<DiskInfo>> {
        let max = self.max_decoding();
        let (resp, target) = self
            .pipeline()
            .unary(
                Rpc::new("storage.StorageService", "disks"),
                opts,
                CallKind::Read,
                (),
                |ch, req| {
                    let mut c = StorageServiceClient::new(ch).max_decoding_message_size(max);
                    async move { c.disks(req).await }
                },
            )
            .await?;
        Ok(single(resp.messages, &target)?
            .disks
            .into_iter()
            .map(convert::disk)
            .collect())
    }

    async fn network_devices(&self, opts: &CallOptions) -> Result<Vec<NetDevice>> {
        let (resp, target) = machine_unary!(self, opts, CallKind::Read, (), network_device_stats);
        Ok(single(resp.messages, &target)?
            .devices
            .into_iter()
            .map(convert::net_device)
            .collect())
    }

    async fn netstat(&self, opts: &CallOptions, filter: NetstatFilter) -> Result<Vec<SocketInfo>> {
        use machine::netstat_request::{Feature, Filter, L4proto, NetNs};
        let request = machine::NetstatRequest {
            filter: match filter {
                NetstatFilter::All => Filter::All,
                NetstatFilter::Connected => Filter::Connected,
                NetstatFilter::Listening => Filter::Listening,
            } as i32,
            feature: Some(Feature { pid: true }),
            l4proto: Some(L4proto {
                tcp: true,
                tcp6: true,
                udp: true,
                udp6: true,
                ..Default::default()
            }),
            netns: Some(NetNs {
                hostnetwork: true,
                ..Default::default()
            }),
        };
        let (resp, target) = machine_unary!(self, opts, CallKind::Read, request, netstat);
        Ok(single(resp.messages, &target)?
            .connectrecord
            .into_iter()
            .map(convert::socket)
            .collect())
    }

    async fn processes(&self, opts: &CallOptions) -> Result<Vec<ProcessInfo>> {
        let (resp, target) = machine_unary!(self, opts, CallKind::Read, (), processes);
        Ok(single(resp.messages, &target)?
            .processes
            .into_iter()
            .map(convert::process)
            .collect())
    }

    async fn time(&self, opts: &CallOptions) -> Result<TimeInfo> {
        let max = self.max_decoding();
        let (resp, target) = self
            .pipeline()
            .unary(
                Rpc::new("time.TimeService", "time"),
                opts,
                CallKind::Read,
                (),
                |ch, req| {
                    let mut c = TimeServiceClient::new(ch).max_decoding_message_size(max);
                    async move { c.time(req).await }
                },
            )
            .await?;
        Ok(convert::time_info(single(resp.messages, &target)?))
    }

    async fn containers(
        &self,
        opts: &CallOptions,
        namespace: ContainerNamespace,
    ) -> Result<Vec<ContainerInfo>> {
        let (driver, _) = convert::containerd_namespace(namespace);
        let request = machine::ContainersRequest {
            namespace: namespace.as_str().to_owned(),
            driver: driver as i32,
        };
        let (resp, target) = machine_unary!(self, opts, CallKind::Read, request, containers);
        Ok(single(resp.messages, &target)?
            .containers
            .into_iter()
            .map(convert::container)
            .collect())
    }

    async fn container_stats(
        &self,
        opts: &CallOptions,
        namespace: ContainerNamespace,
    ) -> Result<Vec<ContainerStats>> {
        let (driver, _) = convert::containerd_namespace(namespace);
        let request = machine::StatsRequest {
            namespace: namespace.as_str().to_owned(),
            driver: driver as i32,
        };
        let (resp, target) = machine_unary!(self, opts, CallKind::Read, request, stats);
        Ok(single(resp.messages, &target)?
            .stats
            .into_iter()
            .map(convert::container_stats)
            .collect())
    }

    async fn services(&self, opts: &CallOptions) -> Result<Vec<ServiceInfo>> {
        let (resp, target) = machine_unary!(self, opts, CallKind::Read, (), service_list);
        Ok(single(resp.messages, &target)?
            .services
            .into_iter()
            .map(convert::service)
            .collect())
    }

    async fn service_action(
        &self,
        opts: &CallOptions,
        id: &str,
        action: ServiceAction,
    ) -> Result<String> {
        let id = id.to_owned();
        Ok(match action {
            ServiceAction::Start => {
                let req = machine::ServiceStartRequest { id };
                let (resp, target) =
                    machine_unary!(self, opts, CallKind::Write, req, service_start);
                single(resp.messages, &target)?.resp
            }
            ServiceAction::Stop => {
                let req = machine::ServiceStopRequest { id };
                let (resp, target) = machine_unary!(self, opts, CallKind::Write, req, service_stop);
                single(resp.messages, &target)?.resp
            }
            ServiceAction::Restart => {
                let req = machine::ServiceRestartRequest { id };
                let (resp, target) =
                    machine_unary!(self, opts, CallKind::Write, req, service_restart);
                single(resp.messages, &target)?.resp
            }
        })
    }

    async fn images(
        &self,
        opts: &CallOptions,
        namespace: ContainerNamespace,
    ) -> Result<Vec<ImageInfo>> {
        let (driver, ns) = convert::containerd_namespace(namespace);
        let max = self.max_decoding();
        let request = machine::ImageServiceListRequest {
            containerd: Some(common::ContainerdInstance {
                driver: driver as i32,
                namespace: ns as i32,
            }),
        };
        let opened = self
            .pipeline()
            .open_stream(
                Rpc::new("machine.ImageService", "list"),
                opts,
                CallKind::Read,
                request,
                |ch, req| {
                    let mut c = ImageServiceClient::new(ch).max_decoding_message_size(max);
                    async move { c.list(req).await }
                },
            )
            .await;
        let idle = self.pipeline().idle_timeout(opts);
        let mut out = Vec::new();
        match opened {
            Ok((mut stream, target)) => {
                while let Some(img) = self.pipeline().next(&mut stream, &target, idle).await? {
                    out.push(ImageInfo {
                        name: img.name,
                        digest: img.digest,
                        size: u64::try_from(img.size).unwrap_or(0),
                        created: convert::timestamp(img.created_at),
                    });
                }
            }
            // Nodes before ImageService: the MachineService API.
            Err(TalosError::Api {
                code: crate::Code::Unimplemented,
                ..
            }) => {
                let request = machine::ImageListRequest {
                    namespace: ns as i32,
                };
                let (mut stream, target) =
                    machine_stream!(self, opts, CallKind::Read, request, image_list);
                while let Some(img) = self.pipeline().next(&mut stream, &target, idle).await? {
                    check_metadata(img.metadata.as_ref(), &target)?;
                    out.push(ImageInfo {
                        name: img.name,
                        digest: img.digest,
                        size: u64::try_from(img.size).unwrap_or(0),
                        created: convert::timestamp(img.created_at),
                    });
                }
            }
            Err(e) => return Err(e),
        }
        Ok(out)
    }

    async fn image_pull(
        &self,
        opts: &CallOptions,
        namespace: ContainerNamespace,
        reference: &str,
    ) -> Result<String> {
        let (driver, ns) = convert::containerd_namespace(namespace);
        let max = self.max_decoding();
        let request = machine::ImageServicePullRequest {
            containerd: Some(common::ContainerdInstance {
                driver: driver as i32,
                namespace: ns as i32,
            }),
            image_ref: reference.to_owned(),
        };
        let opened = self
            .pipeline()
            .open_stream(
                Rpc::new("machine.ImageService", "pull"),
                opts,
                CallKind::Write,
                request,
                |ch, req| {
                    let mut c = ImageServiceClient::new(ch).max_decoding_message_size(max);
                    async move { c.pull(req).await }
                },
            )
            .await;
        match opened {
            Ok((mut stream, target)) => {
                // Pulls report progress until the final name; give them the idle timeout per step.
                let idle = self.pipeline().idle_timeout(opts);
                let mut name = String::new();
                while let Some(msg) = self.pipeline().next(&mut stream, &target, idle).await? {
                    if let Some(machine::image_service_pull_response::Response::Name(n)) =
                        msg.response
                    {
                        name = n;
                    }
                }
                Ok(if name.is_empty() {
                    reference.to_owned()
                } else {
                    name
                })
            }
            Err(TalosError::Api {
                code: crate::Code::Unimplemented,
                ..
            }) => {
                let request = machine::ImagePullRequest {
                    namespace: ns as i32,
                    reference: reference.to_owned(),
                };
                let (resp, target) =
                    machine_unary!(self, opts, CallKind::Write, request, image_pull);
                single(resp.messages, &target)?;
                Ok(reference.to_owned())
            }
            Err(e) => Err(e),
        }
    }

    async fn log_sources(&self, opts: &CallOptions) -> Result<Vec<String>> {
        let (resp, target) = machine_unary!(self, opts, CallKind::Read, (), logs_containers);
        Ok(single(resp.messages, &target)?.ids)
    }

    async fn logs(
        &self,
        opts: &CallOptions,
        source: &LogSource,
        limits: &StreamLimits,
    ) -> Result<LogLines> {
        let (driver, _) = convert::containerd_namespace(source.namespace);
        let request = machine::LogsRequest {
            namespace: source.namespace.as_str().to_owned(),
            id: source.id.clone(),
            driver: driver as i32,
            follow: limits.follow_for.is_some(),
            tail_lines: limits
                .tail
                .map_or(-1, |t| i32::try_from(t).unwrap_or(i32::MAX)),
        };
        let (stream, target) = machine_stream!(self, opts, CallKind::Read, request, logs);
        self.read_lines(stream, &target, opts, limits, limits.max_lines)
            .await
    }

    async fn dmesg(&self, opts: &CallOptions, limits: &StreamLimits) -> Result<LogLines> {
        let request = machine::DmesgRequest {
            follow: limits.follow_for.is_some(),
            tail: false,
        };
        let (stream, target) = machine_stream!(self, opts, CallKind::Read, request, dmesg);
        // Dmesg has no server-side tail: apply it to what is kept.
        let max_lines = limits
            .tail
            .map_or(limits.max_lines, |t| limits.max_lines.min(t as usize));
        self.read_lines(stream, &target, opts, limits, max_lines)
            .await
    }

    async fn events(
        &self,
        opts: &CallOptions,
        request: &EventsRequest,
    ) -> Result<Vec<MachineEvent>> {
        let proto = machine::EventsRequest {
            tail_events: request.tail_events.unwrap_or(0),
            tail_id: String::new(),
            tail_seconds: request.tail_seconds.unwrap_or(0),
            with_actor_id: request.actor_id.clone().unwrap_or_default(),
        };
        let (mut stream, target) = machine_stream!(self, opts, CallKind::Read, proto, events);
        // The stream never ends by itself: stop at the count, or when it goes quiet.
        let idle = request
            .idle
            .unwrap_or_else(|| self.pipeline().idle_timeout(opts));
        let mut out = Vec::new();
        while out.len() < request.max_events.max(1) {
            match self.pipeline().next(&mut stream, &target, idle).await {
                Ok(Some(event)) => {
                    check_metadata(event.metadata.as_ref(), &target)?;
                    out.push(convert::event(event));
                }
                Ok(None) | Err(TalosError::Timeout { .. }) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    async fn health_check(
        &self,
        opts: &CallOptions,
        request: &HealthCheckRequest,
    ) -> Result<Vec<HealthProgress>> {
        let max = self.max_decoding();
        let proto = cluster::HealthCheckRequest {
            wait_timeout: prost_types::Duration::try_from(request.wait_timeout).ok(),
            cluster_info: Some(cluster::ClusterInfo {
                control_plane_nodes: request.control_plane_nodes.clone(),
                worker_nodes: request.worker_nodes.clone(),
                force_endpoint: request.force_endpoint.clone().unwrap_or_default(),
            }),
        };
        let (mut stream, target) = self
            .pipeline()
            .open_stream(
                Rpc::new("cluster.ClusterService", "health_check"),
                opts,
                CallKind::Read,
                proto,
                |ch, req| {
                    let mut c = ClusterServiceClient::new(ch).max_decoding_message_size(max);
                    async move { c.health_check(req).await }
                },
            )
            .await?;
        // The check may legitimately take up to wait_timeout between messages.
        let idle = self
            .pipeline()
            .idle_timeout(opts)
            .max(request.wait_timeout + Duration::from_secs(5));
        let mut out = Vec::new();
        while let Some(progress) = self.pipeline().next(&mut stream, &target, idle).await? {
            out.push(HealthProgress {
                message: progress.message,
                error: progress.metadata.map(|m| m.error).filter(|e| !e.is_empty()),
            });
        }
        Ok(out)
    }

    async fn list_files(
        &self,
        opts: &CallOptions,
        root: &str,
        depth: i32,
        limit: usize,
    ) -> Result<Vec<FileInfo>> {
        let request = machine::ListRequest {
            root: root.to_owned(),
            recurse: depth > 1,
            recursion_depth: depth,
            types: Vec::new(),
            report_xattrs: false,
        };
        let (mut stream, target) = machine_stream!(self, opts, CallKind::Read, request, list);
        let idle = self.pipeline().idle_timeout(opts);
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(item) = self.pipeline().next(&mut stream, &target, idle).await? else {
                break;
            };
            check_metadata(item.metadata.as_ref(), &target)?;
            out.push(convert::file_info(item));
        }
        Ok(out)
    }

    async fn read_file(
        &self,
        opts: &CallOptions,
        path: &str,
        max_bytes: usize,
    ) -> Result<FileContent> {
        let request = machine::ReadRequest {
            path: path.to_owned(),
        };
        let (stream, target) = machine_stream!(self, opts, CallKind::Read, request, read);
        let (data, truncated) = self.read_bytes(stream, &target, opts, max_bytes).await?;
        Ok(FileContent { data, truncated })
    }

    async fn kubeconfig(&self, opts: &CallOptions) -> Result<Kubeconfig> {
        let (stream, target) = machine_stream!(self, opts, CallKind::Read, (), kubeconfig);
        let (archive, truncated) = self
            .read_bytes(stream, &target, opts, MAX_KUBECONFIG_ARCHIVE)
            .await?;
        if truncated {
            return Err(TalosError::Protocol {
                target,
                message: "kubeconfig archive is larger than 8 MiB".into(),
            });
        }
        kubeconfig::unpack(&archive).map_err(|message| TalosError::Protocol { target, message })
    }

    async fn etcd_members(&self, opts: &CallOptions) -> Result<Vec<EtcdMember>> {
        let request = machine::EtcdMemberListRequest { query_local: false };
        let (resp, target) = machine_unary!(self, opts, CallKind::Read, request, etcd_member_list);
        Ok(single(resp.messages, &target)?
            .members
            .into_iter()
            .map(convert::etcd_member)
            .collect())
    }

    async fn etcd_status(&self, opts: &CallOptions) -> Result<EtcdMemberStatus> {
        let (resp, target) = machine_unary!(self, opts, CallKind::Read, (), etcd_status);
        Ok(convert::etcd_status(
            single(resp.messages, &target)?
                .member_status
                .unwrap_or_default(),
        ))
    }

    async fn etcd_alarms(&self, opts: &CallOptions) -> Result<Vec<EtcdAlarm>> {
        let (resp, target) = machine_unary!(self, opts, CallKind::Read, (), etcd_alarm_list);
        Ok(single(resp.messages, &target)?
            .member_alarms
            .into_iter()
            .map(convert::etcd_alarm)
            .collect())
    }

    async fn etcd_alarm_disarm(&self, opts: &CallOptions) -> Result<Vec<EtcdAlarm>> {
        let (resp, target) = machine_unary!(self, opts, CallKind::Write, (), etcd_alarm_disarm);
        Ok(single(resp.messages, &target)?
            .member_alarms
            .into_iter()
            .map(convert::etcd_alarm)
            .collect())
    }

    async fn etcd_defragment(&self, opts: &CallOptions) -> Result<()> {
        let (resp, target) = machine_unary!(self, opts, CallKind::Write, (), etcd_defragment);
        single(resp.messages, &target)?;
        Ok(())
    }

    async fn etcd_snapshot(
        &self,
        opts: &CallOptions,
        mut out: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
        max_bytes: u64,
    ) -> Result<SnapshotInfo> {
        let local = |what: &str, e: std::io::Error| TalosError::Local {
            message: format!("{what} the snapshot: {e}"),
        };
        let (mut stream, target) = self
            .pipeline()
            .open_stream(
                Rpc::new("machine.MachineService", "etcd_snapshot"),
                opts,
                CallKind::Read,
                machine::EtcdSnapshotRequest {},
                |ch, req| {
                    let mut c = self.machine(ch);
                    async move { c.etcd_snapshot(req).await }
                },
            )
            .await?;
        let idle = self.pipeline().idle_timeout(opts);
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        let mut size = 0u64;
        while let Some(data) = self.pipeline().next(&mut stream, &target, idle).await? {
            check_metadata(data.metadata.as_ref(), &target)?;
            size += data.bytes.len() as u64;
            if size > max_bytes {
                return Err(TalosError::Local {
                    message: format!(
                        "the snapshot from {} exceeds the limit of {max_bytes} bytes; nothing more was read",
                        target.node.as_deref().unwrap_or("the endpoint")
                    ),
                });
            }
            digest.update(&data.bytes);
            out.write_all(&data.bytes)
                .await
                .map_err(|e| local("cannot write", e))?;
        }
        out.flush().await.map_err(|e| local("cannot write", e))?;
        Ok(SnapshotInfo {
            size,
            sha256: hex(digest.finish().as_ref()),
        })
    }

    async fn etcd_recover(
        &self,
        opts: &CallOptions,
        source: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    ) -> Result<SnapshotInfo> {
        let upload = Upload::new(source);
        let progress = upload.progress.clone();
        let (failed_tx, failed_rx) = tokio::sync::oneshot::channel();
        upload
            .failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .replace(failed_tx);
        let call = self.pipeline().unary(
            Rpc::new("machine.MachineService", "etcd_recover"),
            opts,
            CallKind::Write,
            upload,
            |ch, req| {
                let mut c = self.machine(ch);
                let (metadata, extensions, upload) = req.into_parts();
                let chunks = upload.start();
                async move {
                    let Some(chunks) = chunks else {
                        return Err(tonic::Status::aborted(
                            "the snapshot upload had already begun through another endpoint; run the recovery again",
                        ));
                    };
                    c.etcd_recover(tonic::Request::from_parts(metadata, extensions, chunks))
                        .await
                }
            },
        );
        // A read error ends the call at once (dropping it resets the stream), so the node never
        // takes a cut-off upload for a whole one.
        let (resp, target) = tokio::select! {
            result = call => result?,
            Ok(e) = failed_rx => {
                return Err(TalosError::Local { message: format!("cannot read the snapshot to upload: {e}") });
            }
        };
        single(resp.messages, &target)?;
        let (size, digest) = std::mem::replace(
            &mut *progress
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            (0, ring::digest::Context::new(&ring::digest::SHA256)),
        );
        Ok(SnapshotInfo {
            size,
            sha256: hex(digest.finish().as_ref()),
        })
    }

    async fn bootstrap(&self, opts: &CallOptions, request: BootstrapRequest) -> Result<()> {
        let request = machine::BootstrapRequest {
            recover_etcd: request.recover_etcd,
            recover_skip_hash_check: request.recover_skip_hash_check,
        };
        let (resp, target) = machine_unary!(self, opts, CallKind::Write, request, bootstrap);
        single(resp.messages, &target)?;
        Ok(())
    }

    async fn etcd_forfeit_leadership(&self, opts: &CallOptions) -> Result<String> {
        let (resp, target) = self
            .pipeline()
            .unary(
                Rpc::new("machine.MachineService", "etcd_forfeit_leadership"),
                opts,
                CallKind::Write,
                machine::EtcdForfeitLeadershipRequest {},
                |ch, req| {
                    let mut c = self.machine(ch);
                    async move { c.etcd_forfeit_leadership(req).await }
                },
            )
            .await?;
        Ok(single(resp.messages, &target)?.member)
    }

    async fn etcd_leave_cluster(&self, opts: &CallOptions) -> Result<()> {
        let (resp, target) = self
            .pipeline()
            .unary(
                Rpc::new("machine.MachineService", "etcd_leave_cluster"),
                opts,
                CallKind::Write,
                machine::EtcdLeaveClusterRequest {},
                |ch, req| {
                    let mut c = self.machine(ch);
                    async move { c.etcd_leave_cluster(req).await }
                },
            )
            .await?;
        single(resp.messages, &target)?;
        Ok(())
    }

    async fn etcd_remove_member(&self, opts: &CallOptions, member_id: u64) -> Result<()> {
        let request = machine::EtcdRemoveMemberByIdRequest { member_id };
        let (resp, target) = machine_unary!(
            self,
            opts,
            CallKind::Write,
            request,
            etcd_remove_member_by_id
        );
        single(resp.messages, &target)?;
        Ok(())
    }

    async fn apply_configuration(
        &self,
        opts: &CallOptions,
        request: &ApplyConfigRequest,
    ) -> Result<ApplyConfigResult> {
        let proto = machine::ApplyConfigurationRequest {
            data: request.config.clone(),
            // Always explicit: 0 on the wire is the deprecated REBOOT mode.
            mode: convert::apply_mode_to_proto(request.mode) as i32,
            dry_run: request.dry_run,
            try_mode_timeout: request
                .try_timeout
                .and_then(|d| prost_types::Duration::try_from(d).ok()),
        };
        // A dry run changes nothing, so it may be retried like a read.
        let kind = if request.dry_run {
            CallKind::Read
        } else {
            CallKind::Write
        };
        let (resp, target) = machine_unary!(self, opts, kind, proto, apply_configuration);
        let item = single(resp.messages, &target)?;
        Ok(ApplyConfigResult {
            mode: convert::apply_mode_from_proto(item.mode),
            mode_details: item.mode_details,
            warnings: item.warnings,
        })
    }

    async fn reboot(&self, opts: &CallOptions, mode: RebootMode) -> Result<ActionAck> {
        let request = machine::RebootRequest {
            mode: match mode {
                RebootMode::Default => machine::reboot_request::Mode::Default,
                RebootMode::Powercycle => machine::reboot_request::Mode::Powercycle,
            } as i32,
        };
        let (resp, target) = machine_unary!(self, opts, CallKind::Write, request, reboot);
        Ok(ActionAck {
            actor_id: single(resp.messages, &target)?.actor_id,
            ack: String::new(),
        })
    }

    async fn shutdown(&self, opts: &CallOptions, force: bool) -> Result<ActionAck> {
        let (resp, target) = self
            .pipeline()
            .unary(
                Rpc::new("machine.MachineService", "shutdown"),
                opts,
                CallKind::Write,
                machine::ShutdownRequest { force },
                |ch, req| {
                    let mut c = self.machine(ch);
                    async move { c.shutdown(req).await }
                },
            )
            .await?;
        Ok(ActionAck {
            actor_id: single(resp.messages, &target)?.actor_id,
            ack: String::new(),
        })
    }

    async fn reset(&self, opts: &CallOptions, request: &ResetRequest) -> Result<ActionAck> {
        let proto = machine::ResetRequest {
            graceful: request.graceful,
            reboot: request.reboot,
            system_partitions_to_wipe: request
                .system_partitions_to_wipe
                .iter()
                .map(|label| machine::ResetPartitionSpec {
                    label: label.clone(),
                    wipe: true,
                })
                .collect(),
            user_disks_to_wipe: request.user_disks_to_wipe.clone(),
            mode: machine::reset_request::WipeMode::All as i32,
        };
        let (resp, target) = machine_unary!(self, opts, CallKind::Write, proto, reset);
        Ok(ActionAck {
            actor_id: single(resp.messages, &target)?.actor_id,
            ack: String::new(),
        })
    }

    async fn upgrade(&self, opts: &CallOptions, request: &UpgradeRequest) -> Result<ActionAck> {
        let proto = machine::UpgradeRequest {
            image: request.image.clone(),
            preserve: request.preserve,
            stage: request.stage,
            force: request.force,
            reboot_mode: match request.reboot_mode {
                RebootMode::Default => machine::upgrade_request::RebootMode::Default,
                RebootMode::Powercycle => machine::upgrade_request::RebootMode::Powercycle,
            } as i32,
        };
        let (resp, target) = machine_unary!(self, opts, CallKind::Write, proto, upgrade);
        let item = single(resp.messages, &target)?;
        Ok(ActionAck {
            actor_id: item.actor_id,
            ack: item.ack,
        })
    }

    async fn lifecycle_upgrade(
        &self,
        opts: &CallOptions,
        image: &str,
    ) -> Result<UpgradeProgressStream> {
        let max = self.max_decoding();
        let proto = machine::LifecycleServiceUpgradeRequest {
            containerd: Some(common::ContainerdInstance {
                driver: common::ContainerDriver::Containerd as i32,
                namespace: common::ContainerdNamespace::NsSystem as i32,
            }),
            source: Some(machine::InstallArtifactsSource {
                image_name: image.to_owned(),
            }),
        };
        let (stream, target) = self
            .pipeline()
            .open_stream(
                Rpc::new("machine.LifecycleService", "upgrade"),
                opts,
                CallKind::Write,
                proto,
                |ch, req| {
                    let mut c = LifecycleServiceClient::new(ch).max_decoding_message_size(max);
                    async move { c.upgrade(req).await }
                },
            )
            .await?;
        let idle = self.pipeline().idle_timeout(opts);
        Ok(upgrade_progress(self.clone(), stream, target, idle))
    }

    async fn rollback(&self, opts: &CallOptions) -> Result<ActionAck> {
        let (resp, target) = machine_unary!(
            self,
            opts,
            CallKind::Write,
            machine::RollbackRequest {},
            rollback
        );
        single(resp.messages, &target)?;
        Ok(ActionAck::default())
    }

    async fn resource_get(
        &self,
        opts: &CallOptions,
        namespace: &str,
        resource_type: &str,
        id: &str,
    ) -> Result<Resource> {
        let max = self.max_decoding();
        let request = cosi::resource::GetRequest {
            namespace: namespace.to_owned(),
            r#type: resource_type.to_owned(),
            id: id.to_owned(),
            options: None,
        };
        let (resp, target) = self
            .pipeline()
            .unary(
                Rpc::new("cosi.resource.State", "get"),
                opts,
                CallKind::Read,
                request,
                |ch, req| {
                    let mut c = StateClient::new(ch).max_decoding_message_size(max);
                    async move { c.get(req).await }
                },
            )
            .await?;
        resp.resource
            .map(convert::resource)
            .ok_or_else(|| TalosError::NotFound {
                target,
                message: format!("{resource_type} {namespace}/{id}"),
            })
    }

    async fn resource_list(
        &self,
        opts: &CallOptions,
        namespace: &str,
        resource_type: &str,
        limit: usize,
    ) -> Result<Vec<Resource>> {
        let max = self.max_decoding();
        let request = cosi::resource::ListRequest {
            namespace: namespace.to_owned(),
            r#type: resource_type.to_owned(),
            options: None,
        };
        let (mut stream, target) = self
            .pipeline()
            .open_stream(
                Rpc::new("cosi.resource.State", "list"),
                opts,
                CallKind::Read,
                request,
                |ch, req| {
                    let mut c = StateClient::new(ch).max_decoding_message_size(max);
                    async move { c.list(req).await }
                },
            )
            .await?;
        let idle = self.pipeline().idle_timeout(opts);
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(item) = self.pipeline().next(&mut stream, &target, idle).await? else {
                break;
            };
            if let Some(r) = item.resource {
                out.push(convert::resource(r));
            }
        }
        Ok(out)
    }

    async fn watch(
        &self,
        opts: &CallOptions,
        namespace: &str,
        resource_type: &str,
        id: Option<String>,
        options: WatchOptions,
    ) -> Result<WatchStream> {
        // One watch message larger than this fails while decoding, before it is held in memory.
        let max = self.max_decoding().min(options.max_message_bytes.max(1));
        let request = cosi::resource::WatchRequest {
            namespace: namespace.to_owned(),
            r#type: resource_type.to_owned(),
            id,
            options: Some(cosi::resource::WatchOptions {
                bootstrap_contents: options.bootstrap,
                ..Default::default()
            }),
            api_version: 1,
        };
        let (stream, target) = self
            .pipeline()
            .open_stream(
                Rpc::new("cosi.resource.State", "watch"),
                opts,
                CallKind::Read,
                request,
                |ch, req| {
                    let mut c = StateClient::new(ch).max_decoding_message_size(max);
                    async move { c.watch(req).await }
                },
            )
            .await?;
        Ok(watch_stream(stream, target, &options))
    }

    async fn resource_watch(
        &self,
        opts: &CallOptions,
        namespace: &str,
        resource_type: &str,
        id: Option<String>,
        max_events: usize,
        idle: Duration,
    ) -> Result<Vec<ResourceEvent>> {
        use futures_util::StreamExt as _;
        let options = WatchOptions {
            bootstrap: true,
            max_events,
            max_message_bytes: self.max_decoding(),
            idle: Some(idle),
        };
        let mut stream = self
            .watch(opts, namespace, resource_type, id, options)
            .await?;
        let mut out = Vec::new();
        while let Some(event) = stream.next().await {
            out.push(event?);
        }
        Ok(out)
    }
}

/// What a watch stream carries between polls.
struct WatchState {
    stream: tonic::Streaming<cosi::resource::WatchResponse>,
    target: Target,
    /// Events of the last message not handed out yet (a message may carry several).
    pending: std::collections::VecDeque<Result<ResourceEvent>>,
    delivered: usize,
    max_events: usize,
    idle: Option<Duration>,
    done: bool,
}

/// Turns a watch's message stream into a bounded stream of events: it ends cleanly after
/// `max_events` events or `idle` without a message, and after the first error.
fn watch_stream(
    stream: tonic::Streaming<cosi::resource::WatchResponse>,
    target: Target,
    options: &WatchOptions,
) -> WatchStream {
    let state = WatchState {
        stream,
        target,
        pending: std::collections::VecDeque::new(),
        delivered: 0,
        max_events: options.max_events.max(1),
        idle: options.idle,
        done: false,
    };
    Box::pin(futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if s.done || s.delivered >= s.max_events {
                return None;
            }
            if let Some(item) = s.pending.pop_front() {
                s.delivered += 1;
                s.done = item.is_err();
                return Some((item, s));
            }
            let message = match s.idle {
                Some(idle) => match tokio::time::timeout(idle, s.stream.message()).await {
                    Ok(m) => m,
                    Err(_) => return None, // quiet for as long as asked
                },
                None => s.stream.message().await,
            };
            match message {
                Ok(Some(batch)) => {
                    for event in batch.event {
                        if let Some(error) = event.error.filter(|e| !e.is_empty()) {
                            s.pending.push_back(Err(TalosError::Api {
                                target: s.target.clone(),
                                code: crate::Code::Unknown,
                                message: error,
                            }));
                            break;
                        }
                        s.pending.push_back(Ok(ResourceEvent {
                            kind: convert::resource_event_kind(event.event_type),
                            resource: event.resource.map(convert::resource),
                            old: event.old.map(convert::resource),
                        }));
                    }
                }
                Ok(None) => return None,
                Err(status) => {
                    s.done = true;
                    let after = s.idle.unwrap_or_default();
                    let error = TalosError::from_status(&status, s.target.clone(), after);
                    return Some((Err(error), s));
                }
            }
        }
    }))
}

/// Reads a lifecycle upgrade stream lazily: each message within the idle timeout, then
/// [`bounded_progress`].
fn upgrade_progress(
    client: GrpcTalosClient,
    stream: tonic::Streaming<machine::LifecycleServiceUpgradeResponse>,
    target: crate::error::Target,
    idle: std::time::Duration,
) -> UpgradeProgressStream {
    let raw_target = target.clone();
    let raw = futures_util::stream::unfold(
        (client, stream, raw_target, false),
        move |(client, mut stream, target, failed)| async move {
            if failed {
                return None;
            }
            match client.pipeline().next(&mut stream, &target, idle).await {
                Ok(Some(msg)) => Some((Ok(msg), (client, stream, target, false))),
                Ok(None) => None,
                Err(e) => Some((Err(e), (client, stream, target, true))),
            }
        },
    );
    bounded_progress(raw, target)
}

/// Turns raw lifecycle responses into progress: lines clipped to [`MAX_UPGRADE_MESSAGE_BYTES`],
/// at most [`MAX_UPGRADE_MESSAGES`] items (then one error and the end), ending after the exit
/// code or the first error.
fn bounded_progress(
    raw: impl futures_util::Stream<Item = Result<machine::LifecycleServiceUpgradeResponse>>
    + Send
    + 'static,
    target: crate::error::Target,
) -> UpgradeProgressStream {
    use futures_util::StreamExt as _;
    struct State<S> {
        raw: std::pin::Pin<Box<S>>,
        target: crate::error::Target,
        read: usize,
        done: bool,
    }
    let state = State {
        raw: Box::pin(raw),
        target,
        read: 0,
        done: false,
    };
    Box::pin(futures_util::stream::unfold(state, |mut st| async move {
        use machine::lifecycle_service_install_progress::Response;
        loop {
            if st.done {
                return None;
            }
            if st.read >= MAX_UPGRADE_MESSAGES {
                st.done = true;
                let err = TalosError::Protocol {
                    target: st.target.clone(),
                    message: format!(
                        "the upgrade stream sent more than {MAX_UPGRADE_MESSAGES} progress messages; stopped reading (the upgrade itself may still be running)"
                    ),
                };
                return Some((Err(err), st));
            }
            let msg = match st.raw.next().await {
                Some(Ok(msg)) => msg,
                None => return None,
                Some(Err(e)) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
            };
            st.read += 1;
            match msg.progress.and_then(|p| p.response) {
                Some(Response::Message(m)) => {
                    return Some((Ok(UpgradeProgress::Message(clip(m))), st));
                }
                Some(Response::ExitCode(code)) => {
                    st.done = true;
                    return Some((Ok(UpgradeProgress::ExitCode(code)), st));
                }
                None => {}
            }
        }
    }))
}

/// Clips a progress line to [`MAX_UPGRADE_MESSAGE_BYTES`] on a character boundary.
fn clip(mut line: String) -> String {
    if line.len() > MAX_UPGRADE_MESSAGE_BYTES {
        let mut end = MAX_UPGRADE_MESSAGE_BYTES;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push('…');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Upgrade progress lines are clipped on a character boundary; short ones are kept as sent.
    #[test]
    fn progress_lines_are_clipped_on_char_boundaries() {
        assert_eq!(clip("installing".into()), "installing");
        let long = "é".repeat(MAX_UPGRADE_MESSAGE_BYTES);
        let clipped = clip(long);
        assert!(clipped.len() <= MAX_UPGRADE_MESSAGE_BYTES + '…'.len_utf8());
        assert!(clipped.ends_with('…'));
        let exact = "a".repeat(MAX_UPGRADE_MESSAGE_BYTES);
        assert_eq!(clip(exact.clone()), exact);
    }

    fn line(
        r: machine::lifecycle_service_install_progress::Response,
    ) -> Result<machine::LifecycleServiceUpgradeResponse> {
        Ok(machine::LifecycleServiceUpgradeResponse {
            progress: Some(machine::LifecycleServiceInstallProgress { response: Some(r) }),
        })
    }

    async fn collect(
        raw: Vec<Result<machine::LifecycleServiceUpgradeResponse>>,
    ) -> Vec<Result<UpgradeProgress>> {
        use futures_util::StreamExt as _;
        bounded_progress(futures_util::stream::iter(raw), Target::default())
            .collect()
            .await
    }

    /// A node that never stops talking is cut off after the bound with one error.
    #[tokio::test]
    async fn progress_is_bounded_in_count_and_ends_after_the_exit_code() {
        use machine::lifecycle_service_install_progress::Response as R;
        let chatty: Vec<_> = (0..MAX_UPGRADE_MESSAGES + 500)
            .map(|i| line(R::Message(format!("line {i} {}", "x".repeat(4000)))))
            .collect();
        let items = collect(chatty).await;
        assert_eq!(items.len(), MAX_UPGRADE_MESSAGES + 1);
        assert!(items[..MAX_UPGRADE_MESSAGES].iter().all(|i| matches!(
            i,
            Ok(UpgradeProgress::Message(m)) if m.len() <= MAX_UPGRADE_MESSAGE_BYTES + 3
        )));
        let last = items.last().unwrap().as_ref().unwrap_err();
        assert_eq!(last.kind(), crate::ErrorKind::Protocol, "{last}");

        // Nothing is read after the exit code; empty items are skipped.
        let items = collect(vec![
            Ok(machine::LifecycleServiceUpgradeResponse { progress: None }),
            line(R::Message("installing".into())),
            line(R::ExitCode(0)),
            line(R::Message("after the end".into())),
        ])
        .await;
        let items: Vec<UpgradeProgress> = items.into_iter().map(|i| i.unwrap()).collect();
        assert_eq!(
            items,
            [
                UpgradeProgress::Message("installing".into()),
                UpgradeProgress::ExitCode(0)
            ]
        );
    }
}
