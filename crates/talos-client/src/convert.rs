//! Conversions from generated protobuf messages into the client's own types.

use std::time::{Duration, SystemTime};

use talos_proto::{common, cosi, machine, storage, time as ptime};

use crate::types::*;

pub(crate) fn timestamp(ts: Option<prost_types::Timestamp>) -> Option<SystemTime> {
    ts.and_then(|t| SystemTime::try_from(t).ok())
}

fn non_empty(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}

pub(crate) fn version(v: machine::Version) -> VersionInfo {
    let info = v.version.unwrap_or_default();
    VersionInfo {
        tag: info.tag,
        sha: info.sha,
        built: info.built,
        go_version: info.go_version,
        os: info.os,
        arch: info.arch,
        platform: v.platform.as_ref().and_then(|p| non_empty(p.name.clone())),
        platform_mode: v.platform.and_then(|p| non_empty(p.mode)),
        rbac: v.features.map(|f| f.rbac),
    }
}

fn cpu_times(c: machine::CpuStat) -> CpuTimes {
    CpuTimes {
        user: c.user,
        nice: c.nice,
        system: c.system,
        idle: c.idle,
        iowait: c.iowait,
        irq: c.irq,
        soft_irq: c.soft_irq,
        steal: c.steal,
    }
}

pub(crate) fn system_stat(s: machine::SystemStat) -> SystemStat {
    SystemStat {
        boot_time: (s.boot_time > 0)
            .then(|| SystemTime::UNIX_EPOCH + Duration::from_secs(s.boot_time)),
        cpu_total: s.cpu_total.map(cpu_times).unwrap_or_default(),
        cpus: s.cpu.into_iter().map(cpu_times).collect(),
        irq_total: s.irq_total,
        context_switches: s.context_switches,
        process_created: s.process_created,
        process_running: s.process_running,
        process_blocked: s.process_blocked,
    }
}

pub(crate) fn cpu_info(c: machine::CpuInfo) -> CpuInfo {
    CpuInfo {
        processor: c.processor,
        vendor_id: c.vendor_id,
        model_name: c.model_name,
        mhz: c.cpu_mhz,
        cores: c.cpu_cores,
        siblings: c.siblings,
        cache_size: c.cache_size,
    }
}

pub(crate) fn memory(m: machine::MemInfo) -> MemoryInfo {
    let kib = |v: u64| v.saturating_mul(1024);
    MemoryInfo {
        total: kib(m.memtotal),
        free: kib(m.memfree),
        available: kib(m.memavailable),
        buffers: kib(m.buffers),
        cached: kib(m.cached),
        swap_total: kib(m.swaptotal),
        swap_free: kib(m.swapfree),
        shmem: kib(m.shmem),
        slab: kib(m.slab),
    }
}

pub(crate) fn load_avg(l: machine::LoadAvg) -> LoadAvg {
    LoadAvg {
        load1: l.load1,
        load5: l.load5,
        load15: l.load15,
    }
}

pub(crate) fn disk_stat(d: machine::DiskStat) -> DiskStat {
    DiskStat {
        name: d.name,
        reads: d.read_completed,
        read_bytes: d.read_sectors.saturating_mul(512),
        writes: d.write_completed,
        written_bytes: d.write_sectors.saturating_mul(512),
        io_in_progress: d.io_in_progress,
        io_time: Duration::from_millis(d.io_time_ms),
    }
}

pub(crate) fn disk_usage(d: machine::DiskUsageInfo) -> DiskUsageEntry {
    DiskUsageEntry {
        name: d.name,
        size: u64::try_from(d.size).unwrap_or(0),
        error: non_empty(d.error),
    }
}

pub(crate) fn mount(m: machine::MountStat) -> MountInfo {
    MountInfo {
        filesystem: m.filesystem,
        size: m.size,
        available: m.available,
        mounted_on: m.mounted_on,
    }
}

pub(crate) fn net_device(n: machine::NetDev) -> NetDevice {
    NetDevice {
        name: n.name,
        rx_bytes: n.rx_bytes,
        rx_packets: n.rx_packets,
        rx_errors: n.rx_errors,
        rx_dropped: n.rx_dropped,
        tx_bytes: n.tx_bytes,
        tx_packets: n.tx_packets,
        tx_errors: n.tx_errors,
        tx_dropped: n.tx_dropped,
    }
}

pub(crate) fn socket(c: machine::ConnectRecord) -> SocketInfo {
    let state = machine::connect_record::State::try_from(c.state)
        .map(|s| s.as_str_name().to_owned())
        .unwrap_or_else(|_| c.state.to_string());
    SocketInfo {
        protocol: c.l4proto,
        local_ip: c.localip,
        local_port: c.localport,
        remote_ip: c.remoteip,
        remote_port: c.remoteport,
        state,
        pid: c.process.as_ref().map(|p| p.pid).filter(|p| *p != 0),
        process: c.process.and_then(|p| non_empty(p.name)),
        netns: non_empty(c.netns),
    }
}

pub(crate) fn process(p: machine::ProcessInfo) -> ProcessInfo {
    ProcessInfo {
        pid: p.pid,
        ppid: p.ppid,
        state: p.state,
        threads: p.threads,
        cpu_time: p.cpu_time,
        virtual_memory: p.virtual_memory,
        resident_memory: p.resident_memory,
        command: p.command,
        executable: p.executable,
        args: p.args,
    }
}

pub(crate) fn container(c: machine::ContainerInfo) -> ContainerInfo {
    ContainerInfo {
        namespace: c.namespace,
        id: c.id,
        uid: c.uid,
        image: c.image,
        pid: c.pid,
        status: c.status,
        pod_id: c.pod_id,
        name: c.name,
    }
}

pub(crate) fn container_stats(s: machine::Stat) -> ContainerStats {
    ContainerStats {
        namespace: s.namespace,
        id: s.id,
        pod_id: s.pod_id,
        name: s.name,
        memory_usage: s.memory_usage,
        cpu_usage: s.cpu_usage,
    }
}

pub(crate) fn service(s: machine::ServiceInfo) -> ServiceInfo {
    let health = s.health.unwrap_or_default();
    ServiceInfo {
        id: s.id,
        state: s.state,
        events: s
            .events
            .map(|e| e.events)
            .unwrap_or_default()
            .into_iter()
            .map(|e| ServiceEvent {
                message: e.msg,
                state: e.state,
                time: timestamp(e.ts),
            })
            .collect(),
        health: ServiceHealth {
            unknown: health.unknown,
            healthy: health.healthy,
            last_message: health.last_message,
            last_change: timestamp(health.last_change),
        },
    }
}

pub(crate) fn time_info(t: ptime::Time) -> TimeInfo {
    TimeInfo {
        server: t.server,
        local_time: timestamp(t.localtime),
        remote_time: timestamp(t.remotetime),
    }
}

pub(crate) fn file_info(f: machine::FileInfo) -> FileInfo {
    FileInfo {
        name: f.name,
        relative_name: f.relative_name,
        size: u64::try_from(f.size).unwrap_or(0),
        mode: f.mode,
        modified: u64::try_from(f.modified)
            .ok()
            .filter(|m| *m > 0)
            .map(|m| SystemTime::UNIX_EPOCH + Duration::from_secs(m)),
        is_dir: f.is_dir,
        link: non_empty(f.link),
        error: non_empty(f.error),
    }
}

pub(crate) fn etcd_member(m: machine::EtcdMember) -> EtcdMember {
    EtcdMember {
        id: m.id,
        hostname: m.hostname,
        peer_urls: m.peer_urls,
        client_urls: m.client_urls,
        is_learner: m.is_learner,
    }
}

pub(crate) fn etcd_status(s: machine::EtcdMemberStatus) -> EtcdMemberStatus {
    EtcdMemberStatus {
        member_id: s.member_id,
        protocol_version: s.protocol_version,
        storage_version: s.storage_version,
        db_size: u64::try_from(s.db_size).unwrap_or(0),
        db_size_in_use: u64::try_from(s.db_size_in_use).unwrap_or(0),
        leader: s.leader,
        raft_index: s.raft_index,
        raft_term: s.raft_term,
        raft_applied_index: s.raft_applied_index,
        errors: s.errors,
        is_learner: s.is_learner,
    }
}

pub(crate) fn etcd_alarm(a: machine::EtcdMemberAlarm) -> EtcdAlarm {
    use machine::etcd_member_alarm::AlarmType;
    EtcdAlarm {
        member_id: a.member_id,
        alarm: match AlarmType::try_from(a.alarm) {
            Ok(AlarmType::None) => EtcdAlarmKind::None,
            Ok(AlarmType::Nospace) => EtcdAlarmKind::NoSpace,
            Ok(AlarmType::Corrupt) => EtcdAlarmKind::Corrupt,
            Err(_) => EtcdAlarmKind::Unknown(a.alarm),
        },
    }
}

pub(crate) fn apply_mode_to_proto(mode: ApplyMode) -> machine::apply_configuration_request::Mode {
    use machine::apply_configuration_request::Mode;
    match mode {
        ApplyMode::Auto => Mode::Auto,
        ApplyMode::NoReboot => Mode::NoReboot,
        ApplyMode::Reboot => Mode::Reboot,
        ApplyMode::Staged => Mode::Staged,
        ApplyMode::Try => Mode::Try,
    }
}

pub(crate) fn apply_mode_from_proto(mode: i32) -> ApplyMode {
    use machine::apply_configuration_request::Mode;
    match Mode::try_from(mode) {
        Ok(Mode::Auto) => ApplyMode::Auto,
        Ok(Mode::NoReboot) => ApplyMode::NoReboot,
        Ok(Mode::Staged) => ApplyMode::Staged,
        Ok(Mode::Try) => ApplyMode::Try,
        Ok(Mode::Reboot) | Err(_) => ApplyMode::Reboot,
    }
}

pub(crate) fn disk(d: storage::Disk) -> DiskInfo {
    let kind = storage::disk::DiskType::try_from(d.r#type)
        .map(|t| t.as_str_name().to_owned())
        .unwrap_or_else(|_| "UNKNOWN".to_owned());
    DiskInfo {
        device_name: d.device_name,
        size: d.size,
        model: d.model,
        serial: d.serial,
        kind,
        bus_path: d.bus_path,
        system_disk: d.system_disk,
        wwid: d.wwid,
    }
}

pub(crate) fn resource(r: cosi::resource::Resource) -> Resource {
    let meta = r.metadata.unwrap_or_default();
    let mut labels: Vec<(String, String)> = meta.labels.into_iter().collect();
    labels.sort();
    Resource {
        namespace: meta.namespace,
        resource_type: meta.r#type,
        id: meta.id,
        version: meta.version,
        phase: meta.phase,
        owner: meta.owner,
        created: timestamp(meta.created),
        updated: timestamp(meta.updated),
        labels,
        spec_yaml: r.spec.map(|s| s.yaml_spec).unwrap_or_default(),
    }
}

pub(crate) fn resource_event_kind(kind: i32) -> String {
    cosi::resource::EventType::try_from(kind)
        .map(|k| k.as_str_name().to_ascii_lowercase())
        .unwrap_or_else(|_| format!("unknown({kind})"))
}

pub(crate) fn containerd_namespace(
    ns: ContainerNamespace,
) -> (common::ContainerDriver, common::ContainerdNamespace) {
    match ns {
        ContainerNamespace::System => (
            common::ContainerDriver::Containerd,
            common::ContainerdNamespace::NsSystem,
        ),
        ContainerNamespace::Cri => (
            common::ContainerDriver::Cri,
            common::ContainerdNamespace::NsCri,
        ),
    }
}

/// Decodes a machine event's payload into its kind and a one-line summary.
pub(crate) fn event(e: machine::Event) -> MachineEvent {
    use prost::Message as _;
    let (type_url, value) = e
        .data
        .map(|any| (any.type_url, any.value))
        .unwrap_or_default();
    let kind = type_url.rsplit('/').next().unwrap_or(&type_url).to_owned();
    let summary = match kind.as_str() {
        "machine.SequenceEvent" => {
            machine::SequenceEvent::decode(value.as_slice())
                .ok()
                .map(|ev| {
                    let action = machine::sequence_event::Action::try_from(ev.action)
                        .map(|a| a.as_str_name())
                        .unwrap_or("?");
                    match ev.error {
                        Some(err) if !err.message.is_empty() => {
                            format!("sequence {} {action}: error {}", ev.sequence, err.message)
                        }
                        _ => format!("sequence {} {action}", ev.sequence),
                    }
                })
        }
        "machine.PhaseEvent" => machine::PhaseEvent::decode(value.as_slice())
            .ok()
            .map(|ev| {
                let action = machine::phase_event::Action::try_from(ev.action)
                    .map(|a| a.as_str_name())
                    .unwrap_or("?");
                format!("phase {} {action}", ev.phase)
            }),
        "machine.TaskEvent" => machine::TaskEvent::decode(value.as_slice()).ok().map(|ev| {
            let action = machine::task_event::Action::try_from(ev.action)
                .map(|a| a.as_str_name())
                .unwrap_or("?");
            format!("task {} {action}", ev.task)
        }),
        "machine.ServiceStateEvent" => machine::ServiceStateEvent::decode(value.as_slice())
            .ok()
            .map(|ev| {
                let action = machine::service_state_event::Action::try_from(ev.action)
                    .map(|a| a.as_str_name())
                    .unwrap_or("?");
                format!("service {} {action}: {}", ev.service, ev.message)
            }),
        "machine.MachineStatusEvent" => machine::MachineStatusEvent::decode(value.as_slice())
            .ok()
            .map(|ev| {
                let stage = machine::machine_status_event::MachineStage::try_from(ev.stage)
                    .map(|s| s.as_str_name())
                    .unwrap_or("?");
                let status = ev.status.unwrap_or_default();
                let unmet: Vec<String> = status
                    .unmet_conditions
                    .into_iter()
                    .map(|c| format!("{} ({})", c.name, c.reason))
                    .collect();
                if unmet.is_empty() {
                    format!("machine {stage}, ready={}", status.ready)
                } else {
                    format!(
                        "machine {stage}, ready={}, unmet: {}",
                        status.ready,
                        unmet.join(", ")
                    )
                }
            }),
        "machine.ConfigLoadErrorEvent" => machine::ConfigLoadErrorEvent::decode(value.as_slice())
            .ok()
            .map(|ev| format!("config load error: {}", ev.error)),
        "machine.ConfigValidationErrorEvent" => {
            machine::ConfigValidationErrorEvent::decode(value.as_slice())
                .ok()
                .map(|ev| format!("config validation error: {}", ev.error))
        }
        "machine.AddressEvent" => machine::AddressEvent::decode(value.as_slice())
            .ok()
            .map(|ev| format!("addresses of {}: {}", ev.hostname, ev.addresses.join(", "))),
        "machine.RestartEvent" => machine::RestartEvent::decode(value.as_slice())
            .ok()
            .map(|ev| format!("restart (cmd {})", ev.cmd)),
        _ => None,
    }
    .unwrap_or_else(|| format!("{kind} event"));
    MachineEvent {
        id: e.id,
        actor_id: e.actor_id,
        kind,
        summary,
    }
}
