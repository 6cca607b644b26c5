//! `machine.MachineService` of the simulated apid.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prost::Message as _;
use talos_proto::common;
use talos_proto::machine::{self, *};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::data::{self, Rng};
use crate::state::{Admitted, NodeRole, Shared, UpgradeFault};

pub(crate) type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

pub(crate) fn meta(hostname: &str) -> Option<common::Metadata> {
    Some(common::Metadata {
        hostname: hostname.to_owned(),
        error: String::new(),
        status: None,
    })
}

fn ts(t: SystemTime) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp::from(t))
}

/// A stream fed by a task; the task learns the client left when sending fails.
pub(crate) fn channel<T: Send + 'static>() -> (mpsc::Sender<Result<T, Status>>, BoxStream<T>) {
    let (tx, rx) = mpsc::channel(16);
    (
        tx,
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
}

/// Sends `common.Data` chunks, honouring an injected mid-stream abort.
pub(crate) struct DataSink {
    tx: mpsc::Sender<Result<common::Data, Status>>,
    hostname: String,
    sent: usize,
    abort_after: Option<usize>,
}

impl DataSink {
    pub(crate) fn new(tx: mpsc::Sender<Result<common::Data, Status>>, admitted: &Admitted) -> Self {
        Self {
            tx,
            hostname: admitted.hostname.clone(),
            sent: 0,
            abort_after: admitted.abort_after,
        }
    }

    /// Sends one chunk; false when the client is gone or the stream was aborted.
    pub(crate) async fn send(&mut self, bytes: Vec<u8>) -> bool {
        if let Some(limit) = self.abort_after
            && self.sent + bytes.len() > limit
        {
            let _ = self
                .tx
                .send(Err(Status::unavailable(
                    "connection reset by peer (injected fault)",
                )))
                .await;
            return false;
        }
        self.sent += bytes.len();
        self.tx
            .send(Ok(common::Data {
                metadata: meta(&self.hostname),
                bytes,
            }))
            .await
            .is_ok()
    }

    /// Ends the stream with an error.
    pub(crate) async fn fail(&self, status: Status) {
        let _ = self.tx.send(Err(status)).await;
    }

    /// Whether the receiving side has gone away.
    pub(crate) fn closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// The error a long-lived stream ends with when its node goes away mid-stream.
pub(crate) fn node_lost() -> Status {
    Status::unavailable("error reading from server: EOF (the node went away)")
}

/// Emits log-like lines `from..to`, then follows (one new line every 100 ms) if asked, in chunks
/// whose boundaries ignore line ends. The stream ends with `Unavailable` when `alive` turns false
/// (the node rebooted or was cut off, or the simulator stops).
async fn stream_lines(
    mut sink: DataSink,
    (from, to): (usize, usize),
    follow: bool,
    alive: impl Fn() -> bool + Send,
    line: impl Fn(usize) -> String + Send,
) {
    const SIZES: [usize; 4] = [1000, 4096, 1777, 3001];
    let mut buf = Vec::with_capacity(8192);
    let mut next = from;
    let mut turn = 0;
    while next < to {
        if !alive() {
            sink.fail(node_lost()).await;
            return;
        }
        let batch_end = (next + 64).min(to);
        data::render_lines(next, batch_end, &line, &mut buf);
        next = batch_end;
        while buf.len() >= SIZES[turn % SIZES.len()] || (next >= to && !buf.is_empty()) {
            let size = SIZES[turn % SIZES.len()].min(buf.len());
            turn += 1;
            let chunk: Vec<u8> = buf.drain(..size).collect();
            if !sink.send(chunk).await {
                return;
            }
        }
    }
    if follow {
        let mut i = to;
        while !sink.closed() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if !alive() {
                sink.fail(node_lost()).await;
                return;
            }
            let mut out = Vec::new();
            data::render_lines(i, i + 1, &line, &mut out);
            i += 1;
            if !sink.send(out).await {
                return;
            }
        }
    }
}

/// Sends `bytes` in chunks of `chunk` bytes.
async fn stream_bytes(mut sink: DataSink, bytes: Vec<u8>, chunk: usize) {
    for part in bytes.chunks(chunk.max(1)) {
        if !sink.send(part.to_vec()).await {
            return;
        }
    }
}

#[derive(Debug)]
pub(crate) struct MachineApi {
    pub(crate) shared: Arc<Shared>,
}

impl MachineApi {
    /// What the admission layer decided for this request (node, stream fault).
    fn admit<T>(&self, req: &Request<T>) -> Result<Admitted, Status> {
        Admitted::of(req)
    }

    fn node(&self, idx: usize) -> crate::SimNode {
        self.shared.with_node(idx, |n| n.info.clone())
    }

    fn require_control_plane(&self, idx: usize) -> Result<u64, Status> {
        self.shared
            .with_node(idx, |n| n.etcd_member_id)
            .ok_or_else(|| {
                Status::failed_precondition(
                    "etcd is not running on this node: it is not a control plane node",
                )
            })
    }

    /// A control plane whose etcd serves (not after a quorum loss, not before bootstrap).
    fn require_etcd(&self, idx: usize) -> Result<u64, Status> {
        let id = self.require_control_plane(idx)?;
        if !crate::state::lock(&self.shared.etcd).running {
            return Err(Status::unavailable(
                "etcd is not running on this node: etcdserver: no leader (the cluster has lost quorum or was never bootstrapped)",
            ));
        }
        Ok(id)
    }
}

/// Largest snapshot upload the simulated node keeps.
const MAX_UPLOAD: usize = 256 << 20;

#[tonic::async_trait]
impl machine_service_server::MachineService for MachineApi {
    async fn version(&self, req: Request<()>) -> Result<Response<VersionResponse>, Status> {
        let a = self.admit(&req)?;
        let tag = self.shared.with_node(a.idx, |n| n.version.clone());
        Ok(Response::new(VersionResponse {
            messages: vec![Version {
                metadata: meta(&a.hostname),
                version: Some(VersionInfo {
                    sha: format!("{:08x}", data::seed(&tag) as u32),
                    tag,
                    built: "2025-11-01T10:00:00Z".into(),
                    go_version: "go1.24.9".into(),
                    os: "linux".into(),
                    arch: "amd64".into(),
                }),
                platform: Some(PlatformInfo {
                    name: "metal".into(),
                    mode: "metal".into(),
                }),
                features: Some(FeaturesInfo { rbac: true }),
            }],
        }))
    }

    async fn hostname(&self, req: Request<()>) -> Result<Response<HostnameResponse>, Status> {
        let a = self.admit(&req)?;
        Ok(Response::new(HostnameResponse {
            messages: vec![Hostname {
                metadata: meta(&a.hostname),
                hostname: a.hostname,
            }],
        }))
    }

    async fn system_stat(&self, req: Request<()>) -> Result<Response<SystemStatResponse>, Status> {
        let a = self.admit(&req)?;
        let booted = self.shared.with_node(a.idx, |n| n.booted_at);
        let up = SystemTime::now()
            .duration_since(booted)
            .unwrap_or_default()
            .as_secs_f64();
        let mut r = Rng::new(&a.hostname);
        let busy = 0.05 + (r.below(30) as f64) / 100.0;
        let cpu = |share: f64| CpuStat {
            user: up * busy * 0.6 * share,
            nice: 0.0,
            system: up * busy * 0.3 * share,
            idle: up * (1.0 - busy) * share,
            iowait: up * busy * 0.1 * share,
            irq: 0.0,
            soft_irq: up * 0.001 * share,
            steal: 0.0,
            guest: 0.0,
            guest_nice: 0.0,
        };
        Ok(Response::new(SystemStatResponse {
            messages: vec![SystemStat {
                metadata: meta(&a.hostname),
                boot_time: booted
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs(),
                cpu_total: Some(cpu(4.0)),
                cpu: (0..4).map(|_| cpu(1.0)).collect(),
                irq_total: (up * 900.0) as u64,
                irq: vec![],
                context_switches: (up * 4000.0) as u64,
                process_created: (up * 3.0) as u64,
                process_running: 1 + r.below(4),
                process_blocked: r.below(2),
                soft_irq_total: (up * 300.0) as u64,
                soft_irq: None,
            }],
        }))
    }

    async fn cpu_info(&self, req: Request<()>) -> Result<Response<CpuInfoResponse>, Status> {
        let a = self.admit(&req)?;
        let cpus = (0..4)
            .map(|i| CpuInfo {
                processor: i,
                vendor_id: "AuthenticAMD".into(),
                model_name: "AMD EPYC 7763 64-Core Processor".into(),
                cpu_mhz: 2445.406,
                cache_size: "512 KB".into(),
                siblings: 4,
                cpu_cores: 4,
                core_id: i.to_string(),
                flags: vec!["fpu".into(), "sse4_2".into(), "avx2".into()],
                ..Default::default()
            })
            .collect();
        Ok(Response::new(CpuInfoResponse {
            messages: vec![CpUsInfo {
                metadata: meta(&a.hostname),
                cpu_info: cpus,
            }],
        }))
    }

    async fn memory(&self, req: Request<()>) -> Result<Response<MemoryResponse>, Status> {
        let a = self.admit(&req)?;
        let mut r = Rng::new(&a.hostname);
        let total = 8 * 1024 * 1024; // kB
        let available = total / 4 + r.below(total / 2);
        Ok(Response::new(MemoryResponse {
            messages: vec![Memory {
                metadata: meta(&a.hostname),
                meminfo: Some(MemInfo {
                    memtotal: total,
                    memfree: available / 2,
                    memavailable: available,
                    buffers: 120_000,
                    cached: available / 3,
                    shmem: 40_000,
                    slab: 200_000,
                    ..Default::default()
                }),
            }],
        }))
    }

    async fn load_avg(&self, req: Request<()>) -> Result<Response<LoadAvgResponse>, Status> {
        let a = self.admit(&req)?;
        let mut r = Rng::new(&a.hostname);
        let base = r.below(300) as f64 / 100.0;
        Ok(Response::new(LoadAvgResponse {
            messages: vec![LoadAvg {
                metadata: meta(&a.hostname),
                load1: base + 0.12,
                load5: base,
                load15: base * 0.9,
            }],
        }))
    }

    async fn disk_stats(&self, req: Request<()>) -> Result<Response<DiskStatsResponse>, Status> {
        let a = self.admit(&req)?;
        let mut r = Rng::new(&a.hostname);
        let dev = |name: &str, r: &mut Rng| DiskStat {
            name: name.into(),
            read_completed: 10_000 + r.below(100_000),
            read_sectors: 1_000_000 + r.below(10_000_000),
            write_completed: 50_000 + r.below(500_000),
            write_sectors: 5_000_000 + r.below(50_000_000),
            io_time_ms: 100_000 + r.below(1_000_000),
            ..Default::default()
        };
        let devices = vec![dev("sda", &mut r), dev("sda1", &mut r), dev("sda6", &mut r)];
        Ok(Response::new(DiskStatsResponse {
            messages: vec![DiskStats {
                metadata: meta(&a.hostname),
                total: None,
                devices,
            }],
        }))
    }

    type DiskUsageStream = BoxStream<DiskUsageInfo>;

    async fn disk_usage(
        &self,
        req: Request<DiskUsageRequest>,
    ) -> Result<Response<Self::DiskUsageStream>, Status> {
        let a = self.admit(&req)?;
        let paths = req.into_inner().paths;
        let paths = if paths.is_empty() {
            vec!["/var".to_owned()]
        } else {
            paths
        };
        let (tx, stream) = channel();
        tokio::spawn(async move {
            for root in paths {
                for (child, size) in [
                    ("", 0u64),
                    ("/log", 48 << 20),
                    ("/lib", 2 << 30),
                    ("/lib/containerd", (1 << 30) + 512),
                ] {
                    let name = format!("{}{child}", root.trim_end_matches('/'));
                    let item = DiskUsageInfo {
                        metadata: meta(&a.hostname),
                        size: i64::try_from(size + 4096).unwrap_or(i64::MAX),
                        relative_name: name
                            .trim_start_matches(&root)
                            .trim_start_matches('/')
                            .to_owned(),
                        name,
                        error: String::new(),
                    };
                    if tx.send(Ok(item)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn mounts(&self, req: Request<()>) -> Result<Response<MountsResponse>, Status> {
        let a = self.admit(&req)?;
        let gib = 1u64 << 30;
        let stats = [
            ("/dev/sda6", 90 * gib, 61 * gib, "/var"),
            ("/dev/sda5", 100 << 20, 80 << 20, "/system/state"),
            ("/dev/sda1", 100 << 20, 90 << 20, "/boot/EFI"),
            ("overlay", 90 * gib, 61 * gib, "/etc/cni"),
        ]
        .into_iter()
        .map(|(fs, size, avail, on)| MountStat {
            filesystem: fs.into(),
            size,
            available: avail,
            mounted_on: on.into(),
        })
        .collect();
        Ok(Response::new(MountsResponse {
            messages: vec![Mounts {
                metadata: meta(&a.hostname),
                stats,
            }],
        }))
    }

    async fn network_device_stats(
        &self,
        req: Request<()>,
    ) -> Result<Response<NetworkDeviceStatsResponse>, Status> {
        let a = self.admit(&req)?;
        let mut r = Rng::new(&a.hostname);
        let dev = |name: &str, r: &mut Rng| NetDev {
            name: name.into(),
            rx_bytes: 1_000_000 + r.below(10_000_000_000),
            rx_packets: 10_000 + r.below(10_000_000),
            tx_bytes: 1_000_000 + r.below(10_000_000_000),
            tx_packets: 10_000 + r.below(10_000_000),
            rx_errors: 0,
            rx_dropped: r.below(5),
            ..Default::default()
        };
        let devices = vec![
            dev("lo", &mut r),
            dev("eth0", &mut r),
            dev("flannel.1", &mut r),
            dev("cni0", &mut r),
        ];
        Ok(Response::new(NetworkDeviceStatsResponse {
            messages: vec![NetworkDeviceStats {
                metadata: meta(&a.hostname),
                total: None,
                devices,
            }],
        }))
    }

    async fn netstat(
        &self,
        req: Request<NetstatRequest>,
    ) -> Result<Response<NetstatResponse>, Status> {
        let a = self.admit(&req)?;
        let node = self.node(a.idx);
        let filter = req.get_ref().filter;
        use machine::connect_record::State as S;
        let mut records = vec![
            ("tcp6", "::", 50000, S::Listen, 1, "apid"),
            ("tcp", "127.0.0.1", 10248, S::Listen, 2, "kubelet"),
            ("tcp6", "::", 10250, S::Listen, 2, "kubelet"),
        ];
        if node.role == NodeRole::ControlPlane {
            records.push(("tcp6", "::", 50001, S::Listen, 3, "trustd"));
            records.push(("tcp", &*node.address, 2379, S::Listen, 4, "etcd"));
            records.push(("tcp", &*node.address, 2380, S::Listen, 4, "etcd"));
            records.push(("tcp6", "::", 6443, S::Listen, 5, "kube-apiserver"));
        }
        let mut out: Vec<ConnectRecord> = records
            .into_iter()
            .map(|(proto, ip, port, state, pid, name)| ConnectRecord {
                l4proto: proto.into(),
                localip: ip.into(),
                localport: port,
                remoteip: if proto == "tcp6" {
                    "::".into()
                } else {
                    "0.0.0.0".into()
                },
                remoteport: 0,
                state: state as i32,
                process: Some(connect_record::Process {
                    pid: 1000 + pid,
                    name: name.into(),
                }),
                ..Default::default()
            })
            .collect();
        out.push(ConnectRecord {
            l4proto: "tcp".into(),
            localip: node.address.clone(),
            localport: 50000,
            remoteip: "127.0.0.1".into(),
            remoteport: 43122,
            state: S::Established as i32,
            process: Some(connect_record::Process {
                pid: 1001,
                name: "apid".into(),
            }),
            ..Default::default()
        });
        let out = out
            .into_iter()
            .filter(|c| match netstat_request::Filter::try_from(filter) {
                Ok(netstat_request::Filter::Listening) => c.state == S::Listen as i32,
                Ok(netstat_request::Filter::Connected) => c.state != S::Listen as i32,
                _ => true,
            })
            .collect();
        Ok(Response::new(NetstatResponse {
            messages: vec![Netstat {
                metadata: meta(&a.hostname),
                connectrecord: out,
            }],
        }))
    }

    async fn processes(&self, req: Request<()>) -> Result<Response<ProcessesResponse>, Status> {
        let a = self.admit(&req)?;
        let node = self.node(a.idx);
        let mut r = Rng::new(&format!("{}/ps", a.hostname));
        let mut names = vec![
            ("/sbin/init", "machined"),
            ("/sbin/apid", "apid"),
            ("/sbin/syslogd", "syslogd"),
            ("/sbin/auditd", "auditd"),
            ("/bin/containerd", "containerd"),
            ("/usr/local/bin/kubelet", "kubelet"),
            ("/sbin/udevd", "udevd"),
            ("/sbin/dashboard", "dashboard"),
            ("/usr/local/bin/kube-proxy", "kube-proxy"),
            ("/opt/bin/flanneld", "flanneld"),
            ("/pause", "pause"),
            ("/pause", "pause"),
            ("/bin/containerd-shim-runc-v2", "containerd-shim"),
            ("/bin/containerd-shim-runc-v2", "containerd-shim"),
        ];
        if node.role == NodeRole::ControlPlane {
            names.extend([
                ("/sbin/trustd", "trustd"),
                ("/usr/local/bin/etcd", "etcd"),
                ("/usr/local/bin/kube-apiserver", "kube-apiserver"),
                (
                    "/usr/local/bin/kube-controller-manager",
                    "kube-controller-manager",
                ),
                ("/usr/local/bin/kube-scheduler", "kube-scheduler"),
            ]);
        } else {
            names.push(("/coredns", "coredns"));
        }
        let processes = names
            .into_iter()
            .enumerate()
            .map(|(i, (exe, cmd))| ProcessInfo {
                pid: if i == 0 { 1 } else { 100 + i as i32 * 37 },
                ppid: if i == 0 { 0 } else { 1 },
                state: if r.below(10) == 0 {
                    "R".into()
                } else {
                    "S".into()
                },
                threads: 1 + r.below(40) as i32,
                cpu_time: r.below(100_000) as f64 / 10.0,
                virtual_memory: (100 << 20) + r.below(2 << 30),
                resident_memory: (10 << 20) + r.below(800 << 20),
                command: cmd.into(),
                executable: exe.into(),
                args: format!("{exe} --log-level=info"),
                label: String::new(),
            })
            .collect();
        Ok(Response::new(ProcessesResponse {
            messages: vec![Process {
                metadata: meta(&a.hostname),
                processes,
            }],
        }))
    }

    async fn containers(
        &self,
        req: Request<ContainersRequest>,
    ) -> Result<Response<ContainersResponse>, Status> {
        let a = self.admit(&req)?;
        let node = self.node(a.idx);
        let ns = req.into_inner().namespace;
        let containers = data::containers(&node, &ns)
            .into_iter()
            .map(|c| ContainerInfo {
                namespace: ns.clone(),
                uid: if c.pod_id.is_empty() {
                    String::new()
                } else {
                    format!("{:x}", data::seed(&c.pod_id))
                },
                internal_id: c.internal_id,
                id: c.id,
                image: c.image,
                pid: c.pid,
                status: if ns == "system" {
                    "RUNNING".into()
                } else {
                    "CONTAINER_RUNNING".into()
                },
                pod_id: c.pod_id,
                name: c.name,
                network_namespace: String::new(),
            })
            .collect();
        Ok(Response::new(ContainersResponse {
            messages: vec![Container {
                metadata: meta(&a.hostname),
                containers,
            }],
        }))
    }

    async fn stats(&self, req: Request<StatsRequest>) -> Result<Response<StatsResponse>, Status> {
        let a = self.admit(&req)?;
        let node = self.node(a.idx);
        let ns = req.into_inner().namespace;
        let mut r = Rng::new(&format!("{}/stats", a.hostname));
        let stats = data::containers(&node, &ns)
            .into_iter()
            .map(|c| Stat {
                namespace: ns.clone(),
                id: c.id,
                memory_usage: (20 << 20) + r.below(600 << 20),
                cpu_usage: r.below(900_000_000_000),
                pod_id: c.pod_id,
                name: c.name,
            })
            .collect();
        Ok(Response::new(StatsResponse {
            messages: vec![Stats {
                metadata: meta(&a.hostname),
                stats,
            }],
        }))
    }

    async fn service_list(
        &self,
        req: Request<()>,
    ) -> Result<Response<ServiceListResponse>, Status> {
        let a = self.admit(&req)?;
        let services = self.shared.with_node(a.idx, |n| {
            n.services
                .iter()
                .map(|(id, s)| ServiceInfo {
                    id: id.clone(),
                    state: s.state.clone(),
                    events: Some(ServiceEvents {
                        events: s
                            .events
                            .iter()
                            .map(|(state, msg, t)| ServiceEvent {
                                msg: msg.clone(),
                                state: state.clone(),
                                ts: ts(*t),
                            })
                            .collect(),
                    }),
                    health: Some(ServiceHealth {
                        unknown: s.state != "Running",
                        healthy: s.healthy && s.state == "Running",
                        last_message: String::new(),
                        last_change: s.events.last().and_then(|e| ts(e.2)),
                    }),
                })
                .collect()
        });
        Ok(Response::new(ServiceListResponse {
            messages: vec![ServiceList {
                metadata: meta(&a.hostname),
                services,
            }],
        }))
    }

    async fn service_start(
        &self,
        req: Request<ServiceStartRequest>,
    ) -> Result<Response<ServiceStartResponse>, Status> {
        let a = self.admit(&req)?;
        let id = req.into_inner().id;
        self.shared.note(&a, format!("id={id}"));
        let resp = self.change_service(&a, &id, "Running", "Service started")?;
        Ok(Response::new(ServiceStartResponse {
            messages: vec![ServiceStart {
                metadata: meta(&a.hostname),
                resp,
            }],
        }))
    }

    async fn service_stop(
        &self,
        req: Request<ServiceStopRequest>,
    ) -> Result<Response<ServiceStopResponse>, Status> {
        let a = self.admit(&req)?;
        let id = req.into_inner().id;
        self.shared.note(&a, format!("id={id}"));
        let resp = self.change_service(&a, &id, "Finished", "Service stopped")?;
        Ok(Response::new(ServiceStopResponse {
            messages: vec![ServiceStop {
                metadata: meta(&a.hostname),
                resp,
            }],
        }))
    }

    async fn service_restart(
        &self,
        req: Request<ServiceRestartRequest>,
    ) -> Result<Response<ServiceRestartResponse>, Status> {
        let a = self.admit(&req)?;
        let id = req.into_inner().id;
        self.shared.note(&a, format!("id={id}"));
        let resp = self.change_service(&a, &id, "Running", "Service restarted")?;
        Ok(Response::new(ServiceRestartResponse {
            messages: vec![ServiceRestart {
                metadata: meta(&a.hostname),
                resp,
            }],
        }))
    }

    type LogsStream = BoxStream<common::Data>;

    async fn logs(&self, req: Request<LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        let a = self.admit(&req)?;
        let node = self.node(a.idx);
        let r = req.into_inner();
        let known = if r.namespace == "system" || r.namespace.is_empty() {
            self.shared
                .with_node(a.idx, |n| n.services.contains_key(&r.id))
        } else {
            data::containers(&node, &r.namespace)
                .iter()
                .any(|c| c.matches(&r.id))
        };
        if !known {
            return Err(Status::not_found(format!(
                "log \"{}\" was not registered",
                r.id
            )));
        }
        let total = self.shared.config.log_lines;
        let from = if r.tail_lines < 0 {
            0
        } else {
            total.saturating_sub(r.tail_lines as usize)
        };
        let (tx, stream) = channel();
        let sink = DataSink::new(tx, &a);
        let (id, host) = (r.id, a.hostname.clone());
        let (shared, idx) = (self.shared.clone(), a.idx);
        tokio::spawn(stream_lines(
            sink,
            (from, total),
            r.follow,
            move || shared.reachable(idx),
            move |i| data::log_line(&id, &host, i),
        ));
        Ok(Response::new(stream))
    }

    async fn logs_containers(
        &self,
        req: Request<()>,
    ) -> Result<Response<LogsContainersResponse>, Status> {
        let a = self.admit(&req)?;
        let node = self.node(a.idx);
        let mut ids: Vec<String> = self
            .shared
            .with_node(a.idx, |n| n.services.keys().cloned().collect());
        ids.extend(data::containers(&node, "k8s.io").into_iter().map(|c| c.id));
        Ok(Response::new(LogsContainersResponse {
            messages: vec![LogsContainer {
                metadata: meta(&a.hostname),
                ids,
            }],
        }))
    }

    type DmesgStream = BoxStream<common::Data>;

    async fn dmesg(
        &self,
        req: Request<DmesgRequest>,
    ) -> Result<Response<Self::DmesgStream>, Status> {
        let a = self.admit(&req)?;
        let r = req.into_inner();
        let total = self.shared.config.dmesg_lines;
        let from = if r.tail { total } else { 0 };
        let (tx, stream) = channel();
        let sink = DataSink::new(tx, &a);
        let host = a.hostname.clone();
        let (shared, idx) = (self.shared.clone(), a.idx);
        tokio::spawn(stream_lines(
            sink,
            (from, total),
            r.follow,
            move || shared.reachable(idx),
            move |i| data::dmesg_line(&host, i),
        ));
        Ok(Response::new(stream))
    }

    type EventsStream = BoxStream<Event>;

    async fn events(
        &self,
        req: Request<EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        let a = self.admit(&req)?;
        let r = req.into_inner();
        let (history, mut live) = self
            .shared
            .with_node(a.idx, |n| (n.events.clone(), n.event_tx.subscribe()));
        let history: Vec<_> = history
            .into_iter()
            .filter(|e| r.with_actor_id.is_empty() || e.actor_id == r.with_actor_id)
            .collect();
        // Past events: all (negative), the newest n, those after a known id, or (with
        // tail_seconds) everything kept; none by default.
        let skip = if !r.tail_id.is_empty() {
            history
                .iter()
                .position(|e| e.id == r.tail_id)
                .map_or(0, |i| i + 1)
        } else {
            match r.tail_events {
                n if n < 0 => 0,
                0 if r.tail_seconds > 0 => 0,
                n => history.len().saturating_sub(n as usize),
            }
        };
        let (tx, stream) = channel();
        let host = a.hostname.clone();
        let actor_filter = r.with_actor_id;
        let (shared, idx) = (self.shared.clone(), a.idx);
        tokio::spawn(async move {
            let to_event = |e: crate::state::EventRecord| Event {
                metadata: meta(&host),
                data: Some(prost_types::Any {
                    type_url: e.type_url,
                    value: e.payload,
                }),
                id: e.id,
                actor_id: e.actor_id,
            };
            for e in history.into_iter().skip(skip) {
                if tx.send(Ok(to_event(e))).await.is_err() {
                    return;
                }
            }
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    () = tx.closed() => return,
                    _ = tick.tick() => {
                        // The node went down: its events stream breaks, as apid's proxy does.
                        if !shared.reachable(idx) {
                            let _ = tx.send(Err(node_lost())).await;
                            return;
                        }
                    }
                    next = live.recv() => match next {
                        Ok(e) if actor_filter.is_empty() || e.actor_id == actor_filter => {
                            if tx.send(Ok(to_event(e))).await.is_err() {
                                return;
                            }
                        }
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                }
            }
        });
        Ok(Response::new(stream))
    }

    type ListStream = BoxStream<FileInfo>;

    async fn list(&self, req: Request<ListRequest>) -> Result<Response<Self::ListStream>, Status> {
        let a = self.admit(&req)?;
        let r = req.into_inner();
        let files = self.files(a.idx);
        let root = r.root.trim_end_matches('/').to_owned();
        let root = if root.is_empty() {
            "/".to_owned()
        } else {
            root
        };
        // Looked up where the kernel would take the path; named as asked.
        let real = through_proc_links(&root);
        let is_dir = files.iter().any(|(p, _)| {
            p.starts_with(&format!("{}/", real.trim_end_matches('/'))) || real == "/"
        });
        if !is_dir && !files.iter().any(|(p, _)| *p == real) {
            return Err(Status::not_found(format!(
                "lstat {root}: no such file or directory"
            )));
        }
        let depth = if r.recurse {
            r.recursion_depth.max(1) as usize
        } else {
            1
        };
        let mut entries: Vec<FileInfo> = Vec::new();
        let prefix = format!("{}/", root.trim_end_matches('/'));
        let real_prefix = format!("{}/", real.trim_end_matches('/'));
        let mut seen = std::collections::BTreeSet::new();
        entries.push(FileInfo {
            metadata: meta(&a.hostname),
            name: root.clone(),
            relative_name: ".".into(),
            is_dir,
            mode: if is_dir { 0o40755 } else { 0o100644 },
            ..Default::default()
        });
        for (path, content) in &files {
            let Some(rest) = path.strip_prefix(&real_prefix) else {
                continue;
            };
            let parts: Vec<&str> = rest.split('/').collect();
            for level in 1..=parts.len().min(depth) {
                let rel = parts[..level].join("/");
                if !seen.insert(rel.clone()) {
                    continue;
                }
                let dir = level < parts.len();
                entries.push(FileInfo {
                    metadata: meta(&a.hostname),
                    name: format!("{prefix}{rel}"),
                    relative_name: rel,
                    size: if dir { 4096 } else { content.len() as i64 },
                    mode: if dir { 0o40755 } else { 0o100644 },
                    modified: 1_764_000_000,
                    is_dir: dir,
                    ..Default::default()
                });
            }
        }
        let (tx, stream) = channel();
        tokio::spawn(async move {
            for e in entries {
                if tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(stream))
    }

    type ReadStream = BoxStream<common::Data>;

    async fn read(&self, req: Request<ReadRequest>) -> Result<Response<Self::ReadStream>, Status> {
        let a = self.admit(&req)?;
        let path = req.into_inner().path;
        let real = through_proc_links(&path);
        let content = self
            .files(a.idx)
            .into_iter()
            .find(|(p, _)| *p == real)
            .map(|(_, c)| c)
            .ok_or_else(|| Status::not_found(format!("open {path}: no such file or directory")))?;
        let (tx, stream) = channel();
        tokio::spawn(stream_bytes(
            DataSink::new(tx, &a),
            content.into_bytes(),
            4096,
        ));
        Ok(Response::new(stream))
    }

    type KubeconfigStream = BoxStream<common::Data>;

    async fn kubeconfig(
        &self,
        req: Request<()>,
    ) -> Result<Response<Self::KubeconfigStream>, Status> {
        let a = self.admit(&req)?;
        if self.require_control_plane(a.idx).is_err() {
            return Err(Status::failed_precondition(
                "kubeconfig is only available on control plane nodes",
            ));
        }
        let kubeconfig = data::kubeconfig(&self.shared.config.cluster_name);
        // Talos leaves out the end-of-archive blocks.
        let archive = crate::archive::pack(&[("kubeconfig", kubeconfig.as_bytes())], false);
        let (tx, stream) = channel();
        tokio::spawn(stream_bytes(DataSink::new(tx, &a), archive, 512));
        Ok(Response::new(stream))
    }

    async fn etcd_member_list(
        &self,
        req: Request<EtcdMemberListRequest>,
    ) -> Result<Response<EtcdMemberListResponse>, Status> {
        let a = self.admit(&req)?;
        self.require_etcd(a.idx)?;
        let addresses: std::collections::HashMap<String, String> = self
            .shared
            .nodes()
            .into_iter()
            .map(|n| (n.hostname, n.address))
            .collect();
        let members = crate::state::lock(&self.shared.etcd)
            .members
            .iter()
            .map(|(id, host)| {
                let addr = addresses.get(host).cloned().unwrap_or_default();
                EtcdMember {
                    id: *id,
                    hostname: host.clone(),
                    peer_urls: vec![format!("https://{addr}:2380")],
                    client_urls: vec![format!("https://{addr}:2379")],
                    is_learner: false,
                }
            })
            .collect();
        Ok(Response::new(EtcdMemberListResponse {
            messages: vec![EtcdMembers {
                metadata: meta(&a.hostname),
                legacy_members: vec![],
                members,
            }],
        }))
    }

    async fn etcd_status(&self, req: Request<()>) -> Result<Response<EtcdStatusResponse>, Status> {
        let a = self.admit(&req)?;
        let id = self.require_etcd(a.idx)?;
        let etcd = crate::state::lock(&self.shared.etcd);
        if !etcd.members.iter().any(|m| m.0 == id) {
            return Err(Status::failed_precondition(
                "etcd member is not part of the cluster",
            ));
        }
        let index = 150_000 + self.shared.calls(&a.hostname, "EtcdStatus");
        let status = EtcdMemberStatus {
            storage_version: "3.6.0".into(),
            member_id: id,
            protocol_version: "3.6.0".into(),
            db_size: 24 << 20,
            db_size_in_use: 17 << 20,
            leader: etcd.leader,
            raft_index: index,
            raft_term: etcd.raft_term,
            raft_applied_index: index,
            errors: etcd
                .alarms
                .iter()
                .filter(|(m, _)| *m == id)
                .map(|_| "memberID:X alarm:NOSPACE".to_owned())
                .collect(),
            is_learner: false,
        };
        Ok(Response::new(EtcdStatusResponse {
            messages: vec![EtcdStatus {
                metadata: meta(&a.hostname),
                member_status: Some(status),
            }],
        }))
    }

    async fn etcd_alarm_list(
        &self,
        req: Request<()>,
    ) -> Result<Response<EtcdAlarmListResponse>, Status> {
        let a = self.admit(&req)?;
        self.require_etcd(a.idx)?;
        let member_alarms = crate::state::lock(&self.shared.etcd)
            .alarms
            .iter()
            .map(|(m, al)| EtcdMemberAlarm {
                member_id: *m,
                alarm: *al,
            })
            .collect();
        Ok(Response::new(EtcdAlarmListResponse {
            messages: vec![EtcdAlarm {
                metadata: meta(&a.hostname),
                member_alarms,
            }],
        }))
    }

    async fn etcd_alarm_disarm(
        &self,
        req: Request<()>,
    ) -> Result<Response<EtcdAlarmDisarmResponse>, Status> {
        let a = self.admit(&req)?;
        self.require_etcd(a.idx)?;
        let member_alarms = std::mem::take(&mut crate::state::lock(&self.shared.etcd).alarms)
            .into_iter()
            .map(|(m, al)| EtcdMemberAlarm {
                member_id: m,
                alarm: al,
            })
            .collect();
        Ok(Response::new(EtcdAlarmDisarmResponse {
            messages: vec![EtcdAlarmDisarm {
                metadata: meta(&a.hostname),
                member_alarms,
            }],
        }))
    }

    async fn etcd_defragment(
        &self,
        req: Request<()>,
    ) -> Result<Response<EtcdDefragmentResponse>, Status> {
        let a = self.admit(&req)?;
        self.require_etcd(a.idx)?;
        Ok(Response::new(EtcdDefragmentResponse {
            messages: vec![EtcdDefragment {
                metadata: meta(&a.hostname),
            }],
        }))
    }

    type EtcdSnapshotStream = BoxStream<common::Data>;

    async fn etcd_snapshot(
        &self,
        req: Request<EtcdSnapshotRequest>,
    ) -> Result<Response<Self::EtcdSnapshotStream>, Status> {
        let a = self.admit(&req)?;
        self.require_etcd(a.idx)?;
        // The store as it is now, in etcd's file format; the cluster keeps writing afterwards.
        let file = {
            let mut etcd = crate::state::lock(&self.shared.etcd);
            let file = crate::etcd_db::snapshot(&self.shared.config.cluster_name, etcd.revision);
            etcd.revision += 100;
            file
        };
        let (tx, stream) = channel();
        tokio::spawn(stream_bytes(DataSink::new(tx, &a), file, 64 * 1024));
        Ok(Response::new(stream))
    }

    async fn etcd_recover(
        &self,
        req: Request<tonic::Streaming<common::Data>>,
    ) -> Result<Response<EtcdRecoverResponse>, Status> {
        let a = self.admit(&req)?;
        self.require_control_plane(a.idx)?;
        if crate::state::lock(&self.shared.etcd).running {
            return Err(Status::failed_precondition(
                "etcd is running on this node: a snapshot can only be uploaded while etcd waits for bootstrap",
            ));
        }
        let mut stream = req.into_inner();
        let mut upload = Vec::new();
        while let Some(chunk) = stream.message().await? {
            if upload.len() + chunk.bytes.len() > MAX_UPLOAD {
                return Err(Status::resource_exhausted("snapshot upload is too large"));
            }
            upload.extend_from_slice(&chunk.bytes);
        }
        if upload.is_empty() {
            return Err(Status::invalid_argument("the snapshot upload is empty"));
        }
        crate::state::lock(&self.shared.etcd)
            .uploads
            .insert(a.idx, upload);
        Ok(Response::new(EtcdRecoverResponse {
            messages: vec![EtcdRecover {
                metadata: meta(&a.hostname),
            }],
        }))
    }

    async fn bootstrap(
        &self,
        req: Request<BootstrapRequest>,
    ) -> Result<Response<BootstrapResponse>, Status> {
        let a = self.admit(&req)?;
        self.require_control_plane(a.idx)?;
        let r = req.into_inner();
        self.shared.note(
            &a,
            format!(
                "recover_etcd={} recover_skip_hash_check={}",
                r.recover_etcd, r.recover_skip_hash_check
            ),
        );
        self.shared
            .bootstrap_etcd(a.idx, r.recover_etcd, r.recover_skip_hash_check)?;
        Ok(Response::new(BootstrapResponse {
            messages: vec![Bootstrap {
                metadata: meta(&a.hostname),
            }],
        }))
    }

    async fn etcd_forfeit_leadership(
        &self,
        req: Request<EtcdForfeitLeadershipRequest>,
    ) -> Result<Response<EtcdForfeitLeadershipResponse>, Status> {
        let a = self.admit(&req)?;
        let id = self.require_etcd(a.idx)?;
        let mut etcd = crate::state::lock(&self.shared.etcd);
        let mut member = String::new();
        if etcd.leader == id
            && let Some((next, host)) = etcd.members.iter().find(|m| m.0 != id).cloned()
        {
            etcd.leader = next;
            etcd.raft_term += 1;
            member = host;
        }
        Ok(Response::new(EtcdForfeitLeadershipResponse {
            messages: vec![EtcdForfeitLeadership {
                metadata: meta(&a.hostname),
                member,
            }],
        }))
    }

    async fn etcd_leave_cluster(
        &self,
        req: Request<EtcdLeaveClusterRequest>,
    ) -> Result<Response<EtcdLeaveClusterResponse>, Status> {
        let a = self.admit(&req)?;
        let id = self.require_etcd(a.idx)?;
        self.shared.tracked(|| {
            {
                let mut etcd = crate::state::lock(&self.shared.etcd);
                etcd.members.retain(|m| m.0 != id);
                if etcd.leader == id {
                    etcd.leader = etcd.members.first().map_or(0, |m| m.0);
                    etcd.raft_term += 1;
                }
            }
            self.shared.with_node(a.idx, |n| {
                if let Some(s) = n.services.get_mut("etcd") {
                    s.state = "Finished".into();
                    s.healthy = false;
                }
            });
        });
        Ok(Response::new(EtcdLeaveClusterResponse {
            messages: vec![EtcdLeaveCluster {
                metadata: meta(&a.hostname),
            }],
        }))
    }

    async fn etcd_remove_member_by_id(
        &self,
        req: Request<EtcdRemoveMemberByIdRequest>,
    ) -> Result<Response<EtcdRemoveMemberByIdResponse>, Status> {
        let a = self.admit(&req)?;
        self.require_etcd(a.idx)?;
        let target = req.into_inner().member_id;
        self.shared.note(&a, format!("member_id={target:x}"));
        self.shared.tracked(|| {
            let mut etcd = crate::state::lock(&self.shared.etcd);
            if !etcd.members.iter().any(|m| m.0 == target) {
                return Err(Status::not_found(format!(
                    "etcdserver: member not found: {target:x}"
                )));
            }
            etcd.members.retain(|m| m.0 != target);
            if etcd.leader == target {
                etcd.leader = etcd.members.first().map_or(0, |m| m.0);
                etcd.raft_term += 1;
            }
            Ok(())
        })?;
        Ok(Response::new(EtcdRemoveMemberByIdResponse {
            messages: vec![EtcdRemoveMemberById {
                metadata: meta(&a.hostname),
            }],
        }))
    }

    async fn apply_configuration(
        &self,
        req: Request<ApplyConfigurationRequest>,
    ) -> Result<Response<ApplyConfigurationResponse>, Status> {
        let a = self.admit(&req)?;
        let r = req.into_inner();
        self.shared.note(
            &a,
            format!(
                "mode={:?} dry_run={} config_bytes={} config_fingerprint={}",
                r.mode(),
                r.dry_run,
                r.data.len(),
                crate::fingerprint(&r.data)
            ),
        );
        let text = String::from_utf8(r.data)
            .map_err(|_| Status::invalid_argument("config is not UTF-8"))?;
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
            .map_err(|e| Status::invalid_argument(format!("failed to parse config: {e}")))?;
        if doc.get("version").and_then(|v| v.as_str()) != Some("v1alpha1")
            || doc.get("machine").is_none()
        {
            return Err(Status::invalid_argument(
                "failed to validate config: not a Talos v1alpha1 machine config (version: v1alpha1 and machine: are required)",
            ));
        }
        use apply_configuration_request::Mode;
        let mode =
            Mode::try_from(r.mode).map_err(|_| Status::invalid_argument("unknown apply mode"))?;
        let old = self.shared.with_node(a.idx, |n| n.machine_config.clone());
        let diff = line_diff(&old, &text);
        let mode_name = mode.as_str_name();
        let details = if r.dry_run {
            format!(
                "Dry run summary:\nApplied configuration with a mode: {mode_name}\nConfig diff:\n\n{diff}"
            )
        } else {
            match mode {
                Mode::Staged => {
                    self.shared
                        .with_node(a.idx, |n| n.staged_config = Some(text));
                    "Staged configuration to be applied after a reboot".to_owned()
                }
                Mode::Reboot => {
                    self.shared.with_node(a.idx, |n| {
                        n.machine_config = text;
                        n.staged_config = None;
                    });
                    let actor = self.shared.next_actor_id();
                    self.shared.reboot(a.idx, &actor);
                    "Applied configuration with a reboot".to_owned()
                }
                Mode::Try => {
                    self.shared.with_node(a.idx, |n| {
                        n.machine_config = text;
                        n.staged_config = None;
                    });
                    let timeout = r.try_mode_timeout.map_or(60, |d| d.seconds);
                    format!(
                        "Applied configuration without a reboot; it will be rolled back in {timeout}s unless applied again"
                    )
                }
                Mode::Auto | Mode::NoReboot => {
                    self.shared.with_node(a.idx, |n| {
                        n.machine_config = text;
                        n.staged_config = None;
                    });
                    "Applied configuration without a reboot".to_owned()
                }
            }
        };
        Ok(Response::new(ApplyConfigurationResponse {
            messages: vec![ApplyConfiguration {
                metadata: meta(&a.hostname),
                warnings: vec![],
                mode: mode as i32,
                mode_details: details,
            }],
        }))
    }

    async fn reboot(
        &self,
        req: Request<RebootRequest>,
    ) -> Result<Response<RebootResponse>, Status> {
        let a = self.admit(&req)?;
        self.shared
            .note(&a, format!("mode={:?}", req.get_ref().mode()));
        let actor = self.shared.next_actor_id();
        self.shared.reboot(a.idx, &actor);
        Ok(Response::new(RebootResponse {
            messages: vec![Reboot {
                metadata: meta(&a.hostname),
                actor_id: actor,
            }],
        }))
    }

    async fn restart(
        &self,
        req: Request<RestartRequest>,
    ) -> Result<Response<RestartResponse>, Status> {
        let a = self.admit(&req)?;
        let r = req.into_inner();
        self.change_service(&a, &r.id, "Running", "Container restarted")
            .or_else(|_| Ok::<_, Status>(String::new()))?;
        Ok(Response::new(RestartResponse {
            messages: vec![Restart {
                metadata: meta(&a.hostname),
            }],
        }))
    }

    async fn shutdown(
        &self,
        req: Request<ShutdownRequest>,
    ) -> Result<Response<ShutdownResponse>, Status> {
        let a = self.admit(&req)?;
        self.shared
            .note(&a, format!("force={}", req.get_ref().force));
        let actor = self.shared.next_actor_id();
        self.shared.push_event(
            a.idx,
            &actor,
            "MachineStatusEvent",
            data::machine_status(data::Stage::ShuttingDown, false),
        );
        self.shared.power_off(a.idx);
        Ok(Response::new(ShutdownResponse {
            messages: vec![Shutdown {
                metadata: meta(&a.hostname),
                actor_id: actor,
            }],
        }))
    }

    async fn reset(&self, req: Request<ResetRequest>) -> Result<Response<ResetResponse>, Status> {
        let a = self.admit(&req)?;
        let r = req.into_inner();
        self.shared
            .note(&a, format!("graceful={} reboot={}", r.graceful, r.reboot));
        let actor = self.shared.next_actor_id();
        self.shared.push_event(
            a.idx,
            &actor,
            "MachineStatusEvent",
            data::machine_status(data::Stage::Resetting, false),
        );
        if r.graceful
            && let Some(id) = self.shared.with_node(a.idx, |n| n.etcd_member_id)
        {
            self.shared.tracked(|| {
                let mut etcd = crate::state::lock(&self.shared.etcd);
                etcd.members.retain(|m| m.0 != id);
                if etcd.leader == id {
                    etcd.leader = etcd.members.first().map_or(0, |m| m.0);
                }
            });
        }
        if r.reboot {
            self.shared.wipe(a.idx);
            self.shared.reboot(a.idx, &actor);
        } else {
            self.shared.power_off(a.idx);
        }
        Ok(Response::new(ResetResponse {
            messages: vec![Reset {
                metadata: meta(&a.hostname),
                actor_id: actor,
            }],
        }))
    }

    async fn upgrade(
        &self,
        req: Request<UpgradeRequest>,
    ) -> Result<Response<UpgradeResponse>, Status> {
        let a = self.admit(&req)?;
        let r = req.into_inner();
        self.shared.note(
            &a,
            format!(
                "image={} stage={} preserve={} force={}",
                r.image, r.stage, r.preserve, r.force
            ),
        );
        if r.image.trim().is_empty() {
            return Err(Status::invalid_argument("installer image is required"));
        }
        let actor = self.shared.next_actor_id();
        upgrade_to(&self.shared, a.idx, &r.image, &actor, r.stage)?;
        Ok(Response::new(UpgradeResponse {
            messages: vec![Upgrade {
                metadata: meta(&a.hostname),
                ack: format!("Upgrade request received: {}", r.image),
                actor_id: actor,
            }],
        }))
    }

    async fn rollback(
        &self,
        req: Request<RollbackRequest>,
    ) -> Result<Response<RollbackResponse>, Status> {
        let a = self.admit(&req)?;
        let (previous, fault) = self
            .shared
            .with_node(a.idx, |n| (n.previous_version.clone(), n.upgrade_fault));
        let Some(previous) = previous else {
            return Err(Status::failed_precondition(
                "cannot roll back: no previous Talos installation was found on the boot disk",
            ));
        };
        if fault != UpgradeFault::OldVersion {
            self.shared
                .with_node(a.idx, |n| n.staged_version = Some(previous));
        }
        let actor = self.shared.next_actor_id();
        boot_after_upgrade(&self.shared, a.idx, &actor);
        Ok(Response::new(RollbackResponse {
            messages: vec![Rollback {
                metadata: meta(&a.hostname),
            }],
        }))
    }

    type ImageListStream = BoxStream<ImageListResponse>;

    async fn image_list(
        &self,
        req: Request<ImageListRequest>,
    ) -> Result<Response<Self::ImageListStream>, Status> {
        let a = self.admit(&req)?;
        let images = self.shared.with_node(a.idx, |n| n.images.clone());
        let (tx, stream) = channel();
        tokio::spawn(async move {
            for name in images {
                let item = ImageListResponse {
                    metadata: meta(&a.hostname),
                    digest: format!(
                        "sha256:{:016x}{:016x}",
                        data::seed(&name),
                        data::seed(&format!("{name}/2"))
                    ),
                    size: (20 << 20) + (data::seed(&name) % (200 << 20)) as i64,
                    created_at: ts(SystemTime::UNIX_EPOCH + Duration::from_secs(1_760_000_000)),
                    name,
                };
                if tx.send(Ok(item)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn image_pull(
        &self,
        req: Request<ImagePullRequest>,
    ) -> Result<Response<ImagePullResponse>, Status> {
        let a = self.admit(&req)?;
        let reference = req.into_inner().reference;
        self.shared.note(&a, format!("reference={reference}"));
        pull_into(&self.shared, a.idx, &reference)?;
        Ok(Response::new(ImagePullResponse {
            messages: vec![ImagePull {
                metadata: meta(&a.hostname),
            }],
        }))
    }
}

impl MachineApi {
    fn change_service(
        &self,
        a: &Admitted,
        id: &str,
        state: &str,
        message: &str,
    ) -> Result<String, Status> {
        let changed = self.shared.tracked(|| {
            self.shared.with_node(a.idx, |n| {
                n.services.get_mut(id).map(|s| {
                    s.state = state.to_owned();
                    s.healthy = state == "Running";
                    s.events
                        .push((state.to_owned(), message.to_owned(), SystemTime::now()));
                    if s.events.len() > 20 {
                        s.events.remove(0);
                    }
                })
            })
        });
        if changed.is_none() {
            return Err(Status::not_found(format!("service \"{id}\" not found")));
        }
        let action = match state {
            "Running" => machine::service_state_event::Action::Running,
            _ => machine::service_state_event::Action::Finished,
        };
        let payload = ServiceStateEvent {
            service: id.to_owned(),
            action: action as i32,
            message: message.to_owned(),
            health: None,
        }
        .encode_to_vec();
        self.shared
            .push_event(a.idx, "", "ServiceStateEvent", payload);
        Ok(format!("Service {id:?} {}", message.to_lowercase()))
    }

    /// The node's tiny virtual filesystem: (path, content).
    fn files(&self, idx: usize) -> Vec<(String, String)> {
        let (node, boot_id, version) = self.shared.with_node(idx, |n| {
            (n.info.clone(), n.boot_id.clone(), n.version.clone())
        });
        vec![
            ("/proc/sys/kernel/random/boot_id".into(), format!("{boot_id}\n")),
            ("/proc/loadavg".into(), "0.42 0.37 0.30 2/612 4211\n".into()),
            ("/proc/meminfo".into(), "MemTotal:        8388608 kB\nMemFree:         2097152 kB\nMemAvailable:    4194304 kB\n".into()),
            ("/proc/cmdline".into(), "talos.platform=metal console=ttyS0 init_on_alloc=1\n".into()),
            ("/etc/os-release".into(), format!("NAME=\"Talos\"\nID=talos\nVERSION_ID={version}\nPRETTY_NAME=\"Talos ({version})\"\n")),
            ("/etc/hostname".into(), format!("{}\n", node.hostname)),
            ("/var/log/audit/kube/kube-apiserver.log".into(), "{\"kind\":\"Event\",\"level\":\"Metadata\"}\n".into()),
            ("/var/log/containers/kube-proxy.log".into(), (0..20).map(|i| data::log_line("kube-proxy", &node.hostname, i) + "\n").collect()),
            ("/sys/class/net/eth0/operstate".into(), "up\n".into()),
            ("/sys/class/net/eth0/mtu".into(), "1500\n".into()),
            ("/var/log/app.log".into(), data::leaky_log(&node.hostname)),
            ("/proc/1/cmdline".into(), "/sbin/init\0".into()),
            ("/proc/1/environ".into(), format!("PATH=/usr/bin:/bin\0HOSTNAME={}\0HTTPS_PROXY=http://machined:SIM-SECRET-ENVIRON-PROXY@proxy.local:3128\0", node.hostname)),
            ("/system/state/config.yaml".into(), self.shared.with_node(idx, |n| n.machine_config.clone())),
        ]
        .into_iter()
        .chain(data::secret_files(&self.shared.config.cluster_name))
        .collect()
    }
}

/// Where the kernel of a real node takes a path through process links: `/proc/<pid>/root/…` and
/// `/proc/<pid>/cwd/…` (also `self`, `thread-self` and `task/<tid>/` forms) reach machined's `/`,
/// and `/proc/<pid>/fd/<n>` is a file machined holds open, its machine config. Talos opens paths
/// as given, so a node serves all of these.
fn through_proc_links(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let ["proc", pid, rest @ ..] = parts.as_slice() else {
        return path.to_owned();
    };
    if !(*pid == "self" || *pid == "thread-self" || pid.bytes().all(|b| b.is_ascii_digit())) {
        return path.to_owned();
    }
    let mut rest = rest;
    while let ["task", _, deeper @ ..] = rest {
        rest = deeper;
    }
    match rest {
        ["root" | "cwd", inner @ ..] => format!("/{}", inner.join("/")),
        ["fd", _] => "/system/state/config.yaml".to_owned(),
        _ => path.to_owned(),
    }
}

/// The Talos version an installer image reference carries (`…/installer:v1.12.0` → `v1.12.0`).
pub(crate) fn installer_version(image: &str) -> Option<String> {
    let name = image.rsplit('/').next()?;
    let tag = name.split('@').next()?.rsplit_once(':')?.1;
    (tag.starts_with('v') && tag[1..].starts_with(|c: char| c.is_ascii_digit()))
        .then(|| tag.to_owned())
}

/// Upgrades a node: the installer's version becomes the node's at the next boot, which happens
/// now unless the upgrade is only staged. The node's [`UpgradeFault`] decides how it goes wrong;
/// with `ImagePullFails` nothing changes and the error says why.
pub(crate) fn upgrade_to(
    shared: &Shared,
    idx: usize,
    image: &str,
    actor: &str,
    stage: bool,
) -> Result<(), Status> {
    let fault = shared.with_node(idx, |n| n.upgrade_fault);
    if fault == UpgradeFault::ImagePullFails {
        return Err(pull_failed(image));
    }
    if fault != UpgradeFault::OldVersion
        && let Some(version) = installer_version(image)
    {
        shared.with_node(idx, |n| n.staged_version = Some(version));
    }
    if !stage {
        boot_after_upgrade(shared, idx, actor);
    }
    Ok(())
}

/// Reboots a node into what an upgrade or rollback staged, honouring its [`UpgradeFault`]: it
/// may never come back, or come back with kubelet unhealthy.
pub(crate) fn boot_after_upgrade(shared: &Shared, idx: usize, actor: &str) {
    let fault = shared.with_node(idx, |n| n.upgrade_fault);
    shared.reboot(idx, actor);
    match fault {
        UpgradeFault::NeverReturns => shared.power_off(idx),
        UpgradeFault::Unhealthy => shared.with_node(idx, |n| {
            if let Some(kubelet) = n.services.get_mut("kubelet") {
                kubelet.healthy = false;
                kubelet.events.push((
                    "Running".into(),
                    "Health check failed: node not ready after upgrade".into(),
                    SystemTime::now(),
                ));
            }
        }),
        UpgradeFault::None | UpgradeFault::ImagePullFails | UpgradeFault::OldVersion => {}
    }
}

/// The error of a pull that the node's `ImagePullFails` fault breaks.
pub(crate) fn pull_failed(reference: &str) -> Status {
    Status::not_found(format!(
        "failed to pull image {reference:?}: not found (injected fault)"
    ))
}

/// Adds an image to a node's cache (shared by MachineService.ImagePull and ImageService.Pull).
pub(crate) fn pull_into(shared: &Shared, idx: usize, reference: &str) -> Result<(), Status> {
    if reference.trim().is_empty() || reference.contains(' ') {
        return Err(Status::invalid_argument(format!(
            "invalid reference format: {reference:?}"
        )));
    }
    if shared.with_node(idx, |n| n.upgrade_fault) == UpgradeFault::ImagePullFails {
        return Err(pull_failed(reference));
    }
    shared.with_node(idx, |n| {
        if !n.images.iter().any(|i| i == reference) {
            n.images.push(reference.to_owned());
        }
    });
    Ok(())
}

/// A minimal line diff: removed lines with `-`, added lines with `+`.
fn line_diff(old: &str, new: &str) -> String {
    let old_lines: std::collections::HashSet<&str> = old.lines().collect();
    let new_lines: std::collections::HashSet<&str> = new.lines().collect();
    let mut out = String::new();
    for l in old.lines().filter(|l| !new_lines.contains(l)) {
        out.push_str("- ");
        out.push_str(l);
        out.push('\n');
    }
    for l in new.lines().filter(|l| !old_lines.contains(l)) {
        out.push_str("+ ");
        out.push_str(l);
        out.push('\n');
    }
    if out.is_empty() {
        out.push_str("No changes.\n");
    }
    out
}
