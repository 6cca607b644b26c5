//! The simulator over real gRPC and mutual TLS, with a bare tonic client: node targeting, roles,
//! faults, reboots, streams, the kubeconfig archive, config application and TLS versions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read as _;
use std::time::{Duration, Instant};

use common::*;
use talos_proto::cluster::cluster_service_client::ClusterServiceClient;
use talos_proto::cosi::resource as cosi;
use talos_proto::machine::machine_service_client::MachineServiceClient;
use talos_proto::machine::{self, apply_configuration_request::Mode};
use talos_sim::{CertFault, Fault, ServerTlsMode, SimCluster, SimConfig};
use tonic::Code;

async fn start(config: SimConfig) -> SimCluster {
    SimCluster::start(config).await.unwrap()
}

fn quick_reboots() -> SimConfig {
    SimConfig {
        reboot_downtime: Duration::from_millis(1500),
        ..SimConfig::default()
    }
}

fn hostname_of(md: Option<&talos_proto::common::Metadata>) -> &str {
    md.map(|m| m.hostname.as_str()).unwrap_or_default()
}

async fn read_file(m: &mut Machine, node: &str, path: &str) -> Result<String, tonic::Status> {
    let stream = m
        .read(to(node, machine::ReadRequest { path: path.into() }))
        .await?
        .into_inner();
    let (parts, end) = chunks(stream).await;
    if let Some(status) = end {
        return Err(status);
    }
    Ok(String::from_utf8(parts.concat()).unwrap())
}

#[tokio::test]
async fn every_node_answers_for_itself() {
    let sim = start(SimConfig::default()).await;
    let mut m = machine(&sim, "os:reader").await;
    for node in sim.nodes() {
        let v = m.version(to(&node.address, ())).await.unwrap().into_inner();
        assert_eq!(v.messages.len(), 1);
        let item = &v.messages[0];
        assert_eq!(hostname_of(item.metadata.as_ref()), node.hostname);
        let info = item.version.as_ref().unwrap();
        assert_eq!(
            (info.tag.as_str(), info.os.as_str(), info.arch.as_str()),
            ("v1.11.5", "linux", "amd64")
        );
        assert_eq!(sim.calls(&node.address, "Version"), 1);
        // Hostnames work as targets too.
        let h = m
            .hostname(to(&node.hostname, ()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(h.messages[0].hostname, node.hostname);
    }
    // Without `node` the endpoint (the first control plane) answers.
    let v = m.version(()).await.unwrap().into_inner();
    assert_eq!(hostname_of(v.messages[0].metadata.as_ref()), "talos-cp-1");
    assert_eq!(sim.calls("talos-cp-1", "Version"), 2);

    // Per-node data differs where it should.
    let procs = |host: &str| {
        let mut m = m.clone();
        let host = host.to_owned();
        async move {
            m.processes(to(&host, ()))
                .await
                .unwrap()
                .into_inner()
                .messages[0]
                .processes
                .iter()
                .map(|p| p.command.clone())
                .collect::<Vec<_>>()
        }
    };
    assert!(procs("talos-cp-1").await.contains(&"etcd".to_owned()));
    assert!(!procs("talos-worker-1").await.contains(&"etcd".to_owned()));
    let ns = m
        .netstat(to("talos-cp-2", machine::NetstatRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let ports: Vec<u32> = ns.messages[0]
        .connectrecord
        .iter()
        .map(|c| c.localport)
        .collect();
    for port in [50000, 50001, 10250, 2379, 2380] {
        assert!(ports.contains(&port), "{port} in {ports:?}");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn unknown_node_is_unavailable_like_the_apid_proxy() {
    let sim = start(SimConfig::default()).await;
    let mut m = machine(&sim, "os:admin").await;
    let status = expect_code(m.version(to("10.9.9.9", ())).await, Code::Unavailable);
    assert!(
        status.message().contains("dial tcp 10.9.9.9:50000"),
        "{status:?}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn roles_follow_apid() {
    let sim = start(quick_reboots()).await;
    let cp = sim.nodes()[0].address.clone();
    let worker = sim.nodes()[4].address.clone();

    let mut reader = machine(&sim, "os:reader").await;
    reader.service_list(to(&cp, ())).await.unwrap();
    let denied = expect_code(
        reader
            .reboot(to(&cp, machine::RebootRequest::default()))
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(denied.message(), "not authorized");
    expect_code(
        read_file(&mut reader, &cp, "/proc/loadavg").await,
        Code::PermissionDenied,
    );
    expect_code(reader.kubeconfig(to(&cp, ())).await, Code::PermissionDenied);
    assert_eq!(sim.calls(&cp, "Reboot"), 1, "denied calls are counted");
    assert!(sim.is_up(&cp));

    let mut operator = machine(&sim, "os:operator").await;
    expect_code(
        operator
            .reset(to(&worker, machine::ResetRequest::default()))
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        operator
            .apply_configuration(to(&worker, machine::ApplyConfigurationRequest::default()))
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        operator
            .etcd_leave_cluster(to(&cp, machine::EtcdLeaveClusterRequest {}))
            .await,
        Code::PermissionDenied,
    );
    operator
        .service_restart(to(
            &worker,
            machine::ServiceRestartRequest {
                id: "kubelet".into(),
            },
        ))
        .await
        .unwrap();
    operator.etcd_defragment(to(&cp, ())).await.unwrap();

    let mut backup = machine(&sim, "os:etcd:backup").await;
    let (snapshot, end) = chunks(
        backup
            .etcd_snapshot(to(&cp, machine::EtcdSnapshotRequest {}))
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    assert!(end.is_none());
    // A genuine etcd snapshot: a bbolt database (meta page magic) and its trailing SHA-256.
    let file: Vec<u8> = snapshot.concat();
    assert_eq!((file.len() - 32) % talos_sim::etcd_db::PAGE_SIZE, 0);
    assert_eq!(&file[16..20], &0xED0C_DAEDu32.to_le_bytes());
    expect_code(backup.version(to(&cp, ())).await, Code::PermissionDenied);

    // COSI: secrets and machine configs are admin-only; writes are refused.
    let mut st = state(&sim, "os:reader").await;
    let get = |ns: &str, ty: &str, id: &str| cosi::GetRequest {
        namespace: ns.into(),
        r#type: ty.into(),
        id: id.into(),
        options: None,
    };
    expect_code(
        st.get(to(
            &cp,
            get("config", "MachineConfigs.config.talos.dev", "v1alpha1"),
        ))
        .await,
        Code::PermissionDenied,
    );
    expect_code(
        st.destroy(to(&cp, cosi::DestroyRequest::default())).await,
        Code::PermissionDenied,
    );
    let mut admin = state(&sim, "os:admin").await;
    let mc = admin
        .get(to(
            &cp,
            get("config", "MachineConfigs.config.talos.dev", "v1alpha1"),
        ))
        .await
        .unwrap()
        .into_inner();
    let yaml = mc.resource.unwrap().spec.unwrap().yaml_spec;
    assert!(yaml.contains("token: SIM-SECRET-BOOTSTRAP-TOKEN"), "{yaml}");
    sim.shutdown().await;
}

#[tokio::test]
async fn reboot_takes_the_node_away_and_back_with_a_new_boot_id() {
    let sim = start(quick_reboots()).await;
    let node = sim.nodes()[1].address.clone();
    let mut m = machine(&sim, "os:admin").await;
    let before = read_file(&mut m, &node, "/proc/sys/kernel/random/boot_id")
        .await
        .unwrap();
    assert_eq!(before.trim(), sim.boot_id(&node).unwrap());

    // A live events stream sees the reboot, then breaks as the node goes down.
    let mut events = m
        .events(to(&node, machine::EventsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let ack = m
        .reboot(to(&node, machine::RebootRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(!ack.messages[0].actor_id.is_empty());
    let first = events.message().await.unwrap().unwrap();
    assert_eq!(
        first.data.as_ref().unwrap().type_url,
        "talos/runtime/machine.MachineStatusEvent"
    );
    let broke = tokio::time::timeout(Duration::from_secs(2), events.message())
        .await
        .unwrap();
    assert_eq!(broke.unwrap_err().code(), Code::Unavailable);

    assert!(!sim.is_up(&node));
    expect_code(m.version(to(&node, ())).await, Code::Unavailable);
    assert!(wait_until(Duration::from_secs(10), || sim.is_up(&node)).await);
    m.version(to(&node, ())).await.unwrap();
    let after = read_file(&mut m, &node, "/proc/sys/kernel/random/boot_id")
        .await
        .unwrap();
    assert_ne!(after, before);
    assert_eq!(after.trim(), sim.boot_id(&node).unwrap());

    // The new boot's events are in the history.
    let mut events = m
        .events(to(
            &node,
            machine::EventsRequest {
                tail_events: -1,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while let Ok(Ok(Some(e))) =
        tokio::time::timeout(Duration::from_millis(300), events.message()).await
    {
        seen.push(e);
    }
    let by_actor = seen
        .iter()
        .filter(|e| e.actor_id == ack.messages[0].actor_id)
        .count();
    assert!(by_actor > 5, "boot events carry the reboot's actor id");
    assert!(seen.iter().all(|e| {
        e.data
            .as_ref()
            .unwrap()
            .type_url
            .starts_with("talos/runtime/machine.")
    }));
    // tail_events picks the newest n; tail_id the ones after it.
    let tail = |n: i32, id: &str| machine::EventsRequest {
        tail_events: n,
        tail_id: id.into(),
        ..Default::default()
    };
    let mut three = m.events(to(&node, tail(3, ""))).await.unwrap().into_inner();
    let mut got = Vec::new();
    while let Ok(Ok(Some(e))) =
        tokio::time::timeout(Duration::from_millis(200), three.message()).await
    {
        got.push(e.id);
    }
    let ids: Vec<String> = seen.iter().map(|e| e.id.clone()).collect();
    assert_eq!(got, ids[ids.len() - 3..]);
    let mut after_id = m
        .events(to(&node, tail(0, &ids[ids.len() - 2])))
        .await
        .unwrap()
        .into_inner();
    let e = tokio::time::timeout(Duration::from_millis(500), after_id.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(e.id, ids[ids.len() - 1]);

    // Shutdown keeps the node down.
    let worker = sim.nodes()[4].address.clone();
    m.shutdown(to(&worker, machine::ShutdownRequest::default()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!sim.is_up(&worker));
    expect_code(m.hostname(to(&worker, ())).await, Code::Unavailable);
    sim.shutdown().await;
}

#[tokio::test]
async fn upgrade_reboots_into_the_installer_version() {
    let sim = start(quick_reboots()).await;
    let node = sim.nodes()[3].address.clone();
    let mut m = machine(&sim, "os:admin").await;
    let ack = m
        .upgrade(to(
            &node,
            machine::UpgradeRequest {
                image: "ghcr.io/siderolabs/installer:v1.12.0".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(ack.messages[0].ack.contains("installer:v1.12.0"));
    assert!(!sim.is_up(&node));
    assert!(wait_until(Duration::from_secs(10), || sim.is_up(&node)).await);
    let v = m.version(to(&node, ())).await.unwrap().into_inner();
    assert_eq!(v.messages[0].version.as_ref().unwrap().tag, "v1.12.0");
    let other = m.version(to("talos-cp-1", ())).await.unwrap().into_inner();
    assert_eq!(other.messages[0].version.as_ref().unwrap().tag, "v1.11.5");
    sim.shutdown().await;
}

#[tokio::test]
async fn faults_are_injected_per_node_and_counted() {
    let sim = start(SimConfig {
        log_lines: 20_000,
        ..SimConfig::default()
    })
    .await;
    let (a, b) = (
        sim.nodes()[0].address.clone(),
        sim.nodes()[1].address.clone(),
    );
    let mut m = machine(&sim, "os:admin").await;

    sim.set_fault(&a, Fault::Latency(Duration::from_millis(300)));
    let t = Instant::now();
    m.version(to(&a, ())).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));
    let t = Instant::now();
    m.version(to(&b, ())).await.unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "other nodes are not slowed"
    );

    sim.set_fault(
        &a,
        Fault::Status {
            code: Code::ResourceExhausted,
            message: "too many requests".into(),
        },
    );
    let s = expect_code(m.memory(to(&a, ())).await, Code::ResourceExhausted);
    assert_eq!(s.message(), "too many requests");

    sim.set_fault("talos-cp-1", Fault::Unavailable);
    expect_code(m.version(to(&a, ())).await, Code::Unavailable);

    sim.set_fault(&a, Fault::Stall);
    let stalled = tokio::time::timeout(Duration::from_millis(300), m.version(to(&a, ()))).await;
    assert!(stalled.is_err(), "a stalled node never answers");

    sim.set_fault(&a, Fault::AbortStreamAfter { bytes: 50_000 });
    let logs = m
        .logs(to(
            &a,
            machine::LogsRequest {
                namespace: "system".into(),
                id: "etcd".into(),
                tail_lines: -1,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let (parts, end) = chunks(logs).await;
    let sent: usize = parts.iter().map(Vec::len).sum();
    assert!(sent > 40_000 && sent <= 50_000, "sent {sent}");
    assert_eq!(end.unwrap().code(), Code::Unavailable);

    sim.set_fault(&a, Fault::None);
    m.version(to(&a, ())).await.unwrap();
    // Every call was counted, whatever the fault did with it (the stalled one included).
    assert_eq!(sim.calls(&a, "Version"), 4);
    assert_eq!(sim.calls(&a, "Memory"), 1);
    assert_eq!(sim.calls(&a, "Logs"), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn log_chunks_split_lines_and_tail_and_follow_work() {
    let sim = start(SimConfig {
        log_lines: 5_000,
        ..SimConfig::default()
    })
    .await;
    let node = "talos-worker-1";
    let mut m = machine(&sim, "os:reader").await;
    let logs = |id: &str, ns: &str, tail: i32, follow: bool| machine::LogsRequest {
        namespace: ns.into(),
        id: id.into(),
        driver: 0,
        follow,
        tail_lines: tail,
    };
    let (parts, end) = chunks(
        m.logs(to(node, logs("kubelet", "system", -1, false)))
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    assert!(end.is_none());
    assert!(parts.len() > 10);
    assert!(
        parts[..parts.len() - 1]
            .iter()
            .any(|p| p.last() != Some(&b'\n')),
        "some chunk ends mid-line"
    );
    let text = String::from_utf8(parts.concat()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5_000);
    assert!(lines.iter().all(|l| l.starts_with("2026-")));
    assert!(lines.iter().any(|l| l.contains("level=error")));
    assert!(lines[4_999].ends_with("seq=4999"));

    let (parts, _) = chunks(
        m.logs(to(node, logs("kubelet", "system", 10, false)))
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    let tail = String::from_utf8(parts.concat()).unwrap();
    assert_eq!(tail.lines().count(), 10);
    assert!(tail.lines().next().unwrap().ends_with("seq=4990"));

    // Kubernetes containers by the id `Containers` reports.
    let cs = m
        .containers(to(
            node,
            machine::ContainersRequest {
                namespace: "k8s.io".into(),
                driver: 1,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let proxy = cs.messages[0]
        .containers
        .iter()
        .find(|c| c.name == "kube-proxy")
        .unwrap();
    assert!(proxy.pod_id.starts_with("kube-system/kube-proxy-"));
    assert_eq!(proxy.id, format!("{}:kube-proxy", proxy.pod_id));
    let (parts, end) = chunks(
        m.logs(to(node, logs(&proxy.id, "k8s.io", 3, false)))
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    assert!(end.is_none() && parts.concat().ends_with(b"seq=4999\n"));
    expect_code(
        m.logs(to(node, logs("no-such-service", "system", 5, false)))
            .await,
        Code::NotFound,
    );

    // Follow: no history (tail 0), new lines about every 100 ms.
    let mut follow = m
        .logs(to(node, logs("apid", "system", 0, true)))
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_millis(450);
    while let Ok(Ok(Some(d))) = tokio::time::timeout_at(deadline.into(), follow.message()).await {
        got.extend(d.bytes);
    }
    let n = String::from_utf8(got).unwrap().lines().count();
    // Loose bounds: a loaded CI machine delays ticks.
    assert!((1..=10).contains(&n), "{n} followed lines");
    drop(follow);

    // Dmesg has its own volume.
    let (parts, _) = chunks(
        m.dmesg(to(node, machine::DmesgRequest::default()))
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    assert_eq!(
        String::from_utf8(parts.concat()).unwrap().lines().count(),
        1_000
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn big_logs_stream_with_bounded_server_memory() {
    let sim = start(SimConfig {
        log_lines: 300_000,
        ..SimConfig::default()
    })
    .await;
    let mut m = machine(&sim, "os:admin").await;
    let mut stream = m
        .logs(to(
            "talos-cp-1",
            machine::LogsRequest {
                namespace: "system".into(),
                id: "etcd".into(),
                tail_lines: -1,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let (mut bytes, mut newlines, mut largest) = (0usize, 0usize, 0usize);
    while let Some(d) = stream.message().await.unwrap() {
        bytes += d.bytes.len();
        largest = largest.max(d.bytes.len());
        newlines += d.bytes.iter().filter(|b| **b == b'\n').count();
    }
    assert_eq!(newlines, 300_000);
    assert!(bytes > 20 << 20, "{bytes} bytes");
    assert!(largest <= 4096);
    sim.shutdown().await;
}

#[tokio::test]
async fn kubeconfig_is_a_gzipped_tar_with_one_file() {
    let sim = start(SimConfig::default()).await;
    let mut m = machine(&sim, "os:admin").await;
    let (parts, end) = chunks(
        m.kubeconfig(to("talos-cp-1", ()))
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    assert!(end.is_none());
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(parts.concat().as_slice())
        .read_to_end(&mut tar)
        .unwrap();
    assert!(tar.len() >= 1024 && tar.len() % 512 == 0);
    let header = &tar[..512];
    let name_end = header.iter().position(|b| *b == 0).unwrap();
    assert_eq!(&header[..name_end], b"kubeconfig");
    assert_eq!(&header[257..262], b"ustar");
    let size_field = std::str::from_utf8(&header[124..135]).unwrap();
    let size = usize::from_str_radix(size_field, 8).unwrap();
    let stored = u32::from_str_radix(std::str::from_utf8(&header[148..154]).unwrap(), 8).unwrap();
    let computed: u32 = header
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(*b)
            }
        })
        .sum();
    assert_eq!(stored, computed, "header checksum");
    let body = std::str::from_utf8(&tar[512..512 + size]).unwrap();
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(body).unwrap();
    assert_eq!(doc["kind"].as_str(), Some("Config"));
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD
        .decode(doc["users"][0]["user"]["client-key-data"].as_str().unwrap())
        .unwrap();
    assert_eq!(key, b"SIM-SECRET-KUBECONFIG-KEY");

    expect_code(
        m.kubeconfig(to("talos-worker-1", ())).await,
        Code::FailedPrecondition,
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn apply_configuration_dry_run_then_for_real() {
    let sim = start(quick_reboots()).await;
    let node = sim.nodes()[4].address.clone();
    let mut m = machine(&sim, "os:admin").await;
    let mut st = state(&sim, "os:admin").await;
    let current = |st: &mut cosi::state_client::StateClient<_>| {
        let mut st = st.clone();
        let node = node.clone();
        async move {
            st.get(to(
                &node,
                cosi::GetRequest {
                    namespace: "config".into(),
                    r#type: "MachineConfigs.config.talos.dev".into(),
                    id: "v1alpha1".into(),
                    options: None,
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .resource
            .unwrap()
            .spec
            .unwrap()
            .yaml_spec
        }
    };
    let apply = |data: &str, mode: Mode, dry_run: bool| machine::ApplyConfigurationRequest {
        data: data.as_bytes().to_vec(),
        mode: mode as i32,
        dry_run,
        try_mode_timeout: None,
    };
    let original = current(&mut st).await;

    expect_code(
        m.apply_configuration(to(&node, apply("machine: [unclosed", Mode::Auto, false)))
            .await,
        Code::InvalidArgument,
    );
    expect_code(
        m.apply_configuration(to(&node, apply("hello: world\n", Mode::Auto, false)))
            .await,
        Code::InvalidArgument,
    );

    let new = original.replace("hostname: talos-worker-2", "hostname: renamed-worker");
    assert_ne!(new, original);
    let dry = m
        .apply_configuration(to(&node, apply(&new, Mode::NoReboot, true)))
        .await
        .unwrap()
        .into_inner();
    let details = &dry.messages[0].mode_details;
    assert!(details.starts_with("Dry run summary"), "{details}");
    assert!(details.contains("Config diff"), "{details}");
    assert!(
        details.contains("+ ") && details.contains("renamed-worker"),
        "{details}"
    );
    assert_eq!(current(&mut st).await, original, "dry run changes nothing");

    m.apply_configuration(to(&node, apply(&new, Mode::NoReboot, false)))
        .await
        .unwrap();
    assert_eq!(current(&mut st).await, new);
    assert!(sim.is_up(&node));

    let staged = new.replace("renamed-worker", "staged-worker");
    m.apply_configuration(to(&node, apply(&staged, Mode::Staged, false)))
        .await
        .unwrap();
    assert_eq!(current(&mut st).await, new, "staged waits for a reboot");
    let before = sim.boot_id(&node).unwrap();
    m.apply_configuration(to(&node, apply(&staged, Mode::Reboot, false)))
        .await
        .unwrap();
    assert!(!sim.is_up(&node), "REBOOT mode reboots");
    assert!(wait_until(Duration::from_secs(10), || sim.is_up(&node)).await);
    assert_ne!(sim.boot_id(&node).unwrap(), before);
    assert_eq!(current(&mut st).await, staged);
    sim.shutdown().await;
}

#[tokio::test]
async fn etcd_lives_on_control_planes() {
    let sim = start(SimConfig::default()).await;
    let mut m = machine(&sim, "os:admin").await;
    expect_code(
        m.etcd_status(to("talos-worker-1", ())).await,
        Code::FailedPrecondition,
    );
    let members = m
        .etcd_member_list(to("talos-cp-1", machine::EtcdMemberListRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .messages
        .remove(0)
        .members;
    assert_eq!(members.len(), 3);
    let status = |m: &Machine, node: &'static str| {
        let mut m = m.clone();
        async move {
            m.etcd_status(to(node, ()))
                .await
                .unwrap()
                .into_inner()
                .messages
                .remove(0)
                .member_status
                .unwrap()
        }
    };
    let s1 = status(&m, "talos-cp-1").await;
    assert_eq!(s1.leader, s1.member_id, "the first control plane leads");
    assert!(s1.db_size >= s1.db_size_in_use && s1.raft_index > 0);
    let moved = m
        .etcd_forfeit_leadership(to("talos-cp-1", machine::EtcdForfeitLeadershipRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.messages[0].member, "talos-cp-2");
    let s2 = status(&m, "talos-cp-2").await;
    assert_eq!(s2.leader, s2.member_id);
    assert!(s2.raft_term > s1.raft_term);
    m.etcd_remove_member_by_id(to(
        "talos-cp-1",
        machine::EtcdRemoveMemberByIdRequest {
            member_id: members[2].id,
        },
    ))
    .await
    .unwrap();
    let left = m
        .etcd_member_list(to("talos-cp-1", machine::EtcdMemberListRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(left.messages[0].members.len(), 2);
    let alarms = m.etcd_alarm_list(to("talos-cp-1", ())).await.unwrap();
    assert!(alarms.into_inner().messages[0].member_alarms.is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn cosi_resources_and_health_check() {
    let sim = start(SimConfig::default()).await;
    let mut st = state(&sim, "os:reader").await;
    let list = |ns: &str, ty: &str| cosi::ListRequest {
        namespace: ns.into(),
        r#type: ty.into(),
        options: None,
    };
    let mut members = st
        .list(to(
            "talos-cp-1",
            list("cluster", "Members.cluster.talos.dev"),
        ))
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while let Some(r) = members.message().await.unwrap() {
        assert!(
            r.resource
                .unwrap()
                .spec
                .unwrap()
                .yaml_spec
                .contains("hostname: talos-")
        );
        n += 1;
    }
    assert_eq!(n, 5);
    let boot = st
        .get(to(
            "talos-worker-2",
            cosi::GetRequest {
                namespace: "runtime".into(),
                r#type: "BootIDs.runtime.talos.dev".into(),
                id: "boot-id".into(),
                options: None,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        boot.resource
            .unwrap()
            .spec
            .unwrap()
            .yaml_spec
            .contains(&sim.boot_id("talos-worker-2").unwrap())
    );
    let mut defs = st
        .list(to(
            "talos-cp-1",
            list("meta", "ResourceDefinitions.meta.cosi.dev"),
        ))
        .await
        .unwrap()
        .into_inner();
    let mut aliases = String::new();
    while let Some(r) = defs.message().await.unwrap() {
        aliases.push_str(&r.resource.unwrap().spec.unwrap().yaml_spec);
    }
    assert!(aliases.contains("members") && aliases.contains("addresses"));

    // A watch sends the current contents, says it is bootstrapped, then stays open.
    let mut watch = st
        .watch(to(
            "talos-cp-1",
            cosi::WatchRequest {
                namespace: "network".into(),
                r#type: "LinkStatuses.net.talos.dev".into(),
                id: None,
                options: Some(cosi::WatchOptions {
                    bootstrap_contents: true,
                    ..Default::default()
                }),
                api_version: 1,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut kinds = Vec::new();
    for _ in 0..3 {
        kinds.push(watch.message().await.unwrap().unwrap().event[0].event_type);
    }
    assert_eq!(
        kinds,
        [
            cosi::EventType::Created as i32,
            cosi::EventType::Created as i32,
            cosi::EventType::Bootstrapped as i32
        ]
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(200), watch.message())
            .await
            .is_err(),
        "the watch stays open"
    );

    // Health reflects nodes that are down.
    let mut health = ClusterServiceClient::new(channel(&sim, "os:reader").await);
    let progress = |h: &mut ClusterServiceClient<_>| {
        let mut h = h.clone();
        async move {
            let mut s = h
                .health_check(to(
                    "talos-cp-1",
                    talos_proto::cluster::HealthCheckRequest::default(),
                ))
                .await
                .unwrap()
                .into_inner();
            let mut out = Vec::new();
            while let Some(p) = s.message().await.unwrap() {
                out.push(p.message);
            }
            out
        }
    };
    let ok = progress(&mut health).await;
    assert!(ok.iter().all(|l| l.ends_with(": OK")), "{ok:?}");
    assert!(ok[0].starts_with("waiting for etcd to be healthy"));
    let mut m = machine(&sim, "os:admin").await;
    m.shutdown(to("talos-worker-2", machine::ShutdownRequest::default()))
        .await
        .unwrap();
    let bad = progress(&mut health).await;
    assert!(
        bad.last().unwrap().contains("127.0.10.15"),
        "the down node is named: {bad:?}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_hundred_nodes_answer_concurrently() {
    let sim = start(SimConfig {
        control_planes: 3,
        workers: 97,
        ..SimConfig::default()
    })
    .await;
    let m = machine(&sim, "os:reader").await;
    let calls = sim.nodes().into_iter().map(|node| {
        let mut m = m.clone();
        async move {
            let v = m
                .hostname(to(&node.address, ()))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(v.messages[0].hostname, node.hostname);
        }
    });
    let tasks: Vec<_> = calls.map(tokio::spawn).collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        sim.nodes()
            .iter()
            .all(|n| sim.calls(&n.address, "Hostname") == 1)
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn services_can_be_stopped_and_started() {
    let sim = start(SimConfig::default()).await;
    let mut m = machine(&sim, "os:operator").await;
    let node = "talos-worker-1";
    let state_of = |m: &Machine, id: &'static str| {
        let mut m = m.clone();
        async move {
            m.service_list(to(node, ()))
                .await
                .unwrap()
                .into_inner()
                .messages
                .remove(0)
                .services
                .into_iter()
                .find(|s| s.id == id)
                .map(|s| s.state)
        }
    };
    assert_eq!(state_of(&m, "kubelet").await.as_deref(), Some("Running"));
    assert_eq!(state_of(&m, "etcd").await, None, "no etcd on workers");
    m.service_stop(to(
        node,
        machine::ServiceStopRequest {
            id: "kubelet".into(),
        },
    ))
    .await
    .unwrap();
    assert_eq!(state_of(&m, "kubelet").await.as_deref(), Some("Finished"));
    m.service_start(to(
        node,
        machine::ServiceStartRequest {
            id: "kubelet".into(),
        },
    ))
    .await
    .unwrap();
    assert_eq!(state_of(&m, "kubelet").await.as_deref(), Some("Running"));
    expect_code(
        m.service_stop(to(node, machine::ServiceStopRequest { id: "nope".into() }))
            .await,
        Code::NotFound,
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn files_can_be_listed_and_read() {
    let sim = start(SimConfig::default()).await;
    let mut m = machine(&sim, "os:admin").await;
    let mut list = m
        .list(to(
            "talos-cp-3",
            machine::ListRequest {
                root: "/proc".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut names = Vec::new();
    while let Some(f) = list.message().await.unwrap() {
        names.push(f.name);
    }
    assert!(names.contains(&"/proc/loadavg".to_owned()), "{names:?}");
    let os = read_file(&mut m, "talos-cp-3", "/etc/os-release")
        .await
        .unwrap();
    assert!(os.contains("VERSION_ID=v1.11.5"));
    expect_code(
        read_file(&mut m, "talos-cp-3", "/etc/shadow").await,
        Code::NotFound,
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn tls12_only_server_refuses_a_tls13_client() {
    let sim = start(SimConfig {
        tls: ServerTlsMode::Tls12Only,
        ..SimConfig::default()
    })
    .await;
    let cert = sim.client_cert("os:reader").unwrap();
    let err = connect_with(&sim, tls_config(&sim.ca_pem(), &cert, TLS13))
        .await
        .unwrap_err();
    let chain = error_chain(&err);
    assert!(chain.contains("ProtocolVersion"), "{chain}");
    // The same certificate over TLS 1.2 works: it really is the version that was refused.
    let ch = connect_with(&sim, tls_config(&sim.ca_pem(), &cert, TLS12))
        .await
        .unwrap();
    MachineServiceClient::new(ch).version(()).await.unwrap();
    sim.shutdown().await;
}

#[tokio::test]
async fn certificate_faults_apply_to_new_connections() {
    let sim = start(SimConfig::default()).await;
    let cert = sim.client_cert("os:reader").unwrap();
    let tls = tls_config(&sim.ca_pem(), &cert, TLS13);
    let healthy = connect_with(&sim, tls.clone()).await.unwrap();

    sim.set_cert_fault(CertFault::Expired);
    let err = connect_with(&sim, tls.clone()).await.unwrap_err();
    let chain = error_chain(&err);
    assert!(chain.contains("Expired"), "{chain}");
    sim.set_cert_fault(CertFault::WrongCa);
    let err = connect_with(&sim, tls.clone()).await.unwrap_err();
    let chain = error_chain(&err);
    assert!(chain.contains("UnknownIssuer"), "{chain}");
    // The connection made before the fault keeps working.
    MachineServiceClient::new(healthy)
        .version(())
        .await
        .unwrap();

    sim.set_cert_fault(CertFault::None);
    let ch = connect_with(&sim, tls).await.unwrap();
    MachineServiceClient::new(ch).version(()).await.unwrap();
    sim.shutdown().await;
}

#[tokio::test]
async fn node_latency_delays_every_node() {
    let latency = Duration::from_millis(150);
    let sim = start(SimConfig {
        node_latency: latency,
        ..SimConfig::default()
    })
    .await;
    let mut m = machine(&sim, "os:reader").await;
    for node in sim.nodes().iter().take(2) {
        let t = Instant::now();
        m.version(to(&node.address, ())).await.unwrap();
        assert!(t.elapsed() >= latency, "{} answered early", node.address);
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn handshakes_are_counted_per_connection_not_per_call() {
    let sim = start(SimConfig::default()).await;
    assert_eq!(sim.tls_handshakes(), 0);
    let mut m = machine(&sim, "os:reader").await;
    let node = sim.nodes()[0].address.clone();
    for _ in 0..20 {
        m.version(to(&node, ())).await.unwrap();
    }
    assert_eq!(sim.tls_handshakes(), 1, "one connection, one handshake");
    let mut other = machine(&sim, "os:reader").await;
    other.version(to(&node, ())).await.unwrap();
    assert_eq!(sim.tls_handshakes(), 2);
    sim.shutdown().await;
}
