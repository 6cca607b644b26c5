//! talos-client against talos-sim over real mTLS: every TalosApi method, fan-out, retries,
//! timeouts, TLS failures, roles, bounded streams.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use talos_client::*;
use talos_config::TalosConfig;
use talos_sim::{CertFault, Fault, SimCluster, SimConfig, UpgradeFault};

async fn start(config: SimConfig) -> SimCluster {
    SimCluster::start(config).await.unwrap()
}

fn client_with(sim: &SimCluster, role: &str, settings: ClientSettings) -> GrpcTalosClient {
    let yaml = sim.talosconfig(role).unwrap();
    let ctx = TalosConfig::from_yaml(&yaml, "<sim>")
        .unwrap()
        .context(None)
        .unwrap();
    GrpcTalosClient::with_settings(&ctx, settings).unwrap()
}

fn client(sim: &SimCluster) -> GrpcTalosClient {
    client_with(sim, "os:admin", fast_settings())
}

fn fast_settings() -> ClientSettings {
    ClientSettings {
        timeout: Duration::from_secs(5),
        stream_idle_timeout: Duration::from_secs(5),
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        ..ClientSettings::default()
    }
}

fn cp(sim: &SimCluster) -> String {
    sim.nodes()[0].address.clone()
}

fn worker(sim: &SimCluster) -> String {
    sim.nodes().last().unwrap().address.clone()
}

#[tokio::test]
async fn node_information_methods() {
    let sim = start(SimConfig::default()).await;
    let c = client(&sim);
    let node = CallOptions::node(cp(&sim));

    let v = c.version(&node).await.unwrap();
    assert_eq!(v.tag, "v1.11.5");
    assert_eq!(v.platform.as_deref(), Some("metal"));
    assert_eq!(c.hostname(&node).await.unwrap(), "talos-cp-1");
    let stat = c.system_stat(&node).await.unwrap();
    assert!(stat.boot_time.is_some() && stat.cpus.len() == 4 && stat.cpu_total.total() > 0.0);
    assert_eq!(c.cpu_info(&node).await.unwrap().len(), 4);
    let mem = c.memory(&node).await.unwrap();
    assert_eq!(mem.total, 8 * 1024 * 1024 * 1024, "kB converted to bytes");
    assert!(mem.available <= mem.total);
    assert!(c.load_avg(&node).await.unwrap().load5 >= 0.0);
    assert!(
        c.disk_stats(&node)
            .await
            .unwrap()
            .iter()
            .any(|d| d.name == "sda")
    );
    let usage = c
        .disk_usage(&node, vec!["/var".into()], 2, 3)
        .await
        .unwrap();
    assert_eq!(usage.len(), 3, "limit honoured");
    assert!(
        c.mounts(&node)
            .await
            .unwrap()
            .iter()
            .any(|m| m.mounted_on == "/var")
    );
    assert!(
        c.disks(&node)
            .await
            .unwrap()
            .iter()
            .any(|d| d.device_name == "/dev/sda" && d.system_disk)
    );
    assert!(
        c.network_devices(&node)
            .await
            .unwrap()
            .iter()
            .any(|d| d.name == "eth0")
    );
    let listening = c.netstat(&node, NetstatFilter::Listening).await.unwrap();
    assert!(listening.iter().all(|s| s.state == "LISTEN"));
    assert!(
        listening
            .iter()
            .any(|s| s.local_port == 50000 && s.process.as_deref() == Some("apid"))
    );
    assert!(
        c.processes(&node)
            .await
            .unwrap()
            .iter()
            .any(|p| p.command == "etcd")
    );
    let t = c.time(&node).await.unwrap();
    assert!(t.offset_seconds().unwrap().abs() < 1.0);
    sim.shutdown().await;
}

#[tokio::test]
async fn workload_and_log_methods() {
    let sim = start(SimConfig::default()).await;
    let c = client(&sim);
    let node = CallOptions::node(cp(&sim));

    let system = c
        .containers(&node, ContainerNamespace::System)
        .await
        .unwrap();
    assert!(system.iter().any(|ct| ct.id == "etcd"));
    let pods = c.containers(&node, ContainerNamespace::Cri).await.unwrap();
    assert!(
        pods.iter()
            .any(|ct| ct.pod_id.starts_with("kube-system/kube-apiserver"))
    );
    assert_eq!(
        c.container_stats(&node, ContainerNamespace::Cri)
            .await
            .unwrap()
            .len(),
        pods.len()
    );
    let services = c.services(&node).await.unwrap();
    let etcd = services.iter().find(|s| s.id == "etcd").unwrap();
    assert!(etcd.state == "Running" && etcd.health.healthy && !etcd.events.is_empty());
    assert!(
        c.images(&node, ContainerNamespace::Cri)
            .await
            .unwrap()
            .iter()
            .any(|i| i.name.contains("pause"))
    );
    assert!(
        c.log_sources(&node)
            .await
            .unwrap()
            .contains(&"kubelet".to_owned())
    );

    let limits = StreamLimits {
        tail: Some(200),
        ..StreamLimits::default()
    };
    let logs = c
        .logs(&node, &LogSource::service("etcd"), &limits)
        .await
        .unwrap();
    assert_eq!(logs.lines.len(), 200);
    assert!(
        logs.lines
            .iter()
            .all(|l| l.contains("etcd[talos-cp-1]") && l.ends_with(char::is_numeric)),
        "lines were reassembled whole"
    );
    assert!(logs.lines.last().unwrap().ends_with("seq=1999"));
    let grep = StreamLimits {
        tail: None,
        grep: Some("LEVEL=ERROR".into()),
        ..StreamLimits::default()
    };
    let errors = c
        .logs(&node, &LogSource::service("etcd"), &grep)
        .await
        .unwrap();
    assert_eq!(errors.lines.len(), 40, "every 50th of 2000 lines");
    assert_eq!(errors.lines_read, 2000);
    let missing = c
        .logs(&node, &LogSource::service("nope"), &limits)
        .await
        .unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound);

    let dmesg = c
        .dmesg(
            &node,
            &StreamLimits {
                tail: Some(10),
                ..StreamLimits::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(dmesg.lines.len(), 10);
    assert!(dmesg.lines[0].contains("kern"));

    let followed = c
        .logs(
            &node,
            &LogSource::service("kubelet"),
            &StreamLimits {
                tail: Some(0),
                follow_for: Some(Duration::from_millis(450)),
                ..StreamLimits::default()
            },
        )
        .await
        .unwrap();
    // One new line every 100 ms for 450 ms; loose bounds keep a loaded CI machine from flaking.
    assert!(
        (1..=10).contains(&followed.lines.len()),
        "followed new lines: {}",
        followed.lines.len()
    );

    let events = c
        .events(
            &node,
            &EventsRequest {
                tail_events: Some(-1),
                max_events: 100,
                idle: Some(Duration::from_millis(300)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == "machine.SequenceEvent" && e.summary.contains("boot"))
    );
    assert!(
        events
            .iter()
            .any(|e| e.kind == "machine.MachineStatusEvent" && e.summary.contains("RUNNING"))
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn cluster_files_resources_and_kubeconfig() {
    let sim = start(SimConfig::default()).await;
    let c = client(&sim);
    let node = CallOptions::node(cp(&sim));

    let health = c
        .health_check(
            &node,
            &HealthCheckRequest {
                wait_timeout: Duration::from_secs(5),
                control_plane_nodes: sim.nodes()[..3].iter().map(|n| n.address.clone()).collect(),
                worker_nodes: sim.nodes()[3..].iter().map(|n| n.address.clone()).collect(),
                force_endpoint: None,
            },
        )
        .await
        .unwrap();
    assert!(health.len() > 5 && health.iter().all(|h| h.error.is_none()));

    let files = c.list_files(&node, "/proc", 1, 100).await.unwrap();
    assert!(files.iter().any(|f| f.name == "/proc/loadavg"));
    let boot_id = c
        .read_file(&node, "/proc/sys/kernel/random/boot_id", 1024)
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(boot_id.data).unwrap().trim(),
        sim.boot_id(&cp(&sim)).unwrap()
    );
    let capped = c
        .read_file(&node, "/var/log/containers/kube-proxy.log", 100)
        .await
        .unwrap();
    assert!(capped.truncated && capped.data.len() == 100);

    let kc = c.kubeconfig(&node).await.unwrap();
    let text = String::from_utf8(kc.expose_bytes().to_vec()).unwrap();
    assert!(text.contains("kind: Config") && text.contains("server: https://talos-sim.local:6443"));
    assert!(!format!("{kc:?}").contains("client-key-data"));

    let members = c
        .resource_list(&node, "cluster", "Members.cluster.talos.dev", 100)
        .await
        .unwrap();
    assert_eq!(members.len(), 5);
    let nodename = c
        .resource_get(&node, "k8s", "Nodenames.kubernetes.talos.dev", "nodename")
        .await
        .unwrap();
    assert!(nodename.spec_yaml.contains("talos-cp-1"));
    let missing = c
        .resource_get(&node, "k8s", "Nodenames.kubernetes.talos.dev", "nope")
        .await
        .unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound);
    let events = c
        .resource_watch(
            &node,
            "network",
            "LinkStatuses.net.talos.dev",
            None,
            10,
            Duration::from_millis(300),
        )
        .await
        .unwrap();
    assert_eq!(events.iter().filter(|e| e.kind == "created").count(), 2);
    assert!(events.iter().any(|e| e.kind == "bootstrapped"));
    sim.shutdown().await;
}

#[tokio::test]
async fn etcd_methods_and_snapshot() {
    let sim = start(SimConfig::default()).await;
    let c = client(&sim);
    let node = CallOptions::node(cp(&sim));

    let members = c.etcd_members(&node).await.unwrap();
    assert_eq!(members.len(), 3);
    let status = c.etcd_status(&node).await.unwrap();
    assert_eq!(status.leader, members[0].id);
    assert!(status.db_size >= status.db_size_in_use && status.raft_index > 0);
    assert!(c.etcd_alarms(&node).await.unwrap().is_empty());
    assert!(c.etcd_alarm_disarm(&node).await.unwrap().is_empty());
    c.etcd_defragment(&node).await.unwrap();
    let worker_err = c
        .etcd_status(&CallOptions::node(worker(&sim)))
        .await
        .unwrap_err();
    assert_eq!(worker_err.kind(), ErrorKind::Api);

    // The snapshot goes into any writer; its size and hash are of what was written.
    let dir = tempfile::tempdir().unwrap();
    let (revision, _) = sim.etcd_revision();
    let file = tokio::fs::File::create(dir.path().join("snap"))
        .await
        .unwrap();
    let snap = c
        .etcd_snapshot(&node, Box::new(file), 64 << 20)
        .await
        .unwrap();
    let out = std::fs::read(dir.path().join("snap")).unwrap();
    assert_eq!(snap.size, out.len() as u64);
    assert_eq!(out, talos_sim::etcd_db::snapshot("talos-sim", revision));
    let digest = ring::digest::digest(&ring::digest::SHA256, &out);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(snap.sha256, hex);
    // Bounded: more than the limit is an error, not a larger buffer.
    let small = tokio::fs::File::create(dir.path().join("small"))
        .await
        .unwrap();
    let over = c
        .etcd_snapshot(&node, Box::new(small), 1000)
        .await
        .unwrap_err();
    assert_eq!(over.kind(), ErrorKind::Local);
    let kept = std::fs::metadata(dir.path().join("small")).unwrap().len();
    assert!(kept <= 1000, "stopped at the limit: {kept}");

    // Recovery: refused while etcd runs; after a quorum loss the upload and the bootstrap bring
    // etcd back with the snapshot's revision.
    let upload = |bytes: Vec<u8>| -> Box<dyn tokio::io::AsyncRead + Send + Unpin> {
        Box::new(std::io::Cursor::new(bytes))
    };
    let busy = c
        .etcd_recover(&node, upload(out.clone()))
        .await
        .unwrap_err();
    assert_eq!(busy.kind(), ErrorKind::Api, "{busy}");
    sim.lose_etcd_quorum();
    assert!(c.etcd_status(&node).await.is_err());
    let sent = c.etcd_recover(&node, upload(out.clone())).await.unwrap();
    assert_eq!(
        (sent.size, sent.sha256.as_str()),
        (snap.size, snap.sha256.as_str())
    );
    c.bootstrap(
        &node,
        BootstrapRequest {
            recover_etcd: true,
            recover_skip_hash_check: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(sim.etcd_revision(), (revision, true));
    assert!(c.etcd_status(&node).await.is_ok());
    let again = c
        .bootstrap(&node, BootstrapRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        again.kind(),
        ErrorKind::Api,
        "a bootstrapped cluster refuses: {again}"
    );

    // A corrupted upload is refused by the node's restore.
    sim.lose_etcd_quorum();
    let mut bad = out.clone();
    bad[5000] ^= 1;
    c.etcd_recover(&node, upload(bad)).await.unwrap();
    let refused = c
        .bootstrap(
            &node,
            BootstrapRequest {
                recover_etcd: true,
                recover_skip_hash_check: false,
            },
        )
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("integrity"), "{refused}");
    // A read error aborts the upload: the node never gets a cut-off snapshot as a whole one.
    let failing = tokio_test_reader(out.clone());
    let err = c.etcd_recover(&node, failing).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Local, "{err}");
    c.bootstrap(
        &node,
        BootstrapRequest {
            recover_etcd: true,
            recover_skip_hash_check: false,
        },
    )
    .await
    .unwrap_err();
    // Recover properly again so the rest of the test has a running etcd.
    c.etcd_recover(&node, upload(out.clone())).await.unwrap();
    c.bootstrap(
        &node,
        BootstrapRequest {
            recover_etcd: true,
            recover_skip_hash_check: false,
        },
    )
    .await
    .unwrap();

    let new_leader = c.etcd_forfeit_leadership(&node).await.unwrap();
    assert_eq!(new_leader, "talos-cp-2");
    c.etcd_remove_member(&node, members[2].id).await.unwrap();
    assert_eq!(c.etcd_members(&node).await.unwrap().len(), 2);
    c.etcd_leave_cluster(&CallOptions::node(sim.nodes()[1].address.clone()))
        .await
        .unwrap();
    assert_eq!(c.etcd_members(&node).await.unwrap().len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn lifecycle_methods() {
    let sim = start(SimConfig {
        reboot_downtime: Duration::from_millis(1500),
        ..SimConfig::default()
    })
    .await;
    let c = client(&sim);
    let target = worker(&sim);
    let node = CallOptions::node(target.clone());

    let config = b"version: v1alpha1\nmachine:\n  type: worker\n  token: NEW\ncluster:\n  clusterName: talos-sim\n".to_vec();
    let dry = c
        .apply_configuration(
            &node,
            &ApplyConfigRequest {
                config: config.clone(),
                mode: ApplyMode::NoReboot,
                dry_run: true,
                try_timeout: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(dry.mode, ApplyMode::NoReboot);
    assert!(dry.mode_details.contains("Dry run summary"));
    let bad = c
        .apply_configuration(
            &node,
            &ApplyConfigRequest {
                config: b"not: [valid".to_vec(),
                mode: ApplyMode::Auto,
                dry_run: true,
                try_timeout: None,
            },
        )
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("InvalidArgument"), "{bad}");
    let applied = c
        .apply_configuration(
            &node,
            &ApplyConfigRequest {
                config,
                mode: ApplyMode::Staged,
                dry_run: false,
                try_timeout: None,
            },
        )
        .await
        .unwrap();
    assert!(applied.mode_details.contains("Staged"));

    assert_eq!(
        c.service_action(&node, "kubelet", ServiceAction::Stop)
            .await
            .unwrap(),
        "Service \"kubelet\" service stopped"
    );
    assert!(
        c.services(&node)
            .await
            .unwrap()
            .iter()
            .any(|s| s.id == "kubelet" && s.state == "Finished")
    );
    c.service_action(&node, "kubelet", ServiceAction::Start)
        .await
        .unwrap();
    c.service_action(&node, "kubelet", ServiceAction::Restart)
        .await
        .unwrap();
    assert_eq!(
        c.image_pull(
            &node,
            ContainerNamespace::Cri,
            "docker.io/library/busybox:1.36"
        )
        .await
        .unwrap(),
        "docker.io/library/busybox:1.36"
    );

    let before = sim.boot_id(&target).unwrap();
    let ack = c.reboot(&node, RebootMode::Default).await.unwrap();
    assert!(!ack.actor_id.is_empty());
    let down = c.version(&node).await.unwrap_err();
    assert_eq!(down.kind(), ErrorKind::Connection, "{down}");
    tokio::time::sleep(Duration::from_millis(1700)).await;
    c.version(&node).await.unwrap();
    assert_ne!(sim.boot_id(&target).unwrap(), before);

    let up = c
        .upgrade(
            &node,
            &UpgradeRequest {
                image: "ghcr.io/siderolabs/installer:v1.12.0".into(),
                stage: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(up.ack.contains("installer:v1.12.0"));
    c.reset(
        &node,
        &ResetRequest {
            graceful: true,
            reboot: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    c.shutdown(&CallOptions::node(sim.nodes()[3].address.clone()), false)
        .await
        .unwrap();
    assert!(!sim.is_up(&sim.nodes()[3].address));
    sim.shutdown().await;
}

#[tokio::test]
async fn fan_out_to_100_nodes_with_failures() {
    let sim = start(SimConfig {
        control_planes: 3,
        workers: 97,
        ..SimConfig::default()
    })
    .await;
    let api: Arc<dyn TalosApi> = Arc::new(client(&sim));
    let nodes: Vec<String> = sim.nodes().into_iter().map(|n| n.address).collect();
    for bad in [5, 50, 99] {
        sim.set_fault(&nodes[bad], Fault::Unavailable);
    }
    sim.set_fault(
        &nodes[10],
        Fault::Status {
            code: tonic::Code::Internal,
            message: "boom".into(),
        },
    );
    let results = fan_out(&nodes, 16, |node| {
        let api = api.clone();
        async move { api.hostname(&CallOptions::node(node)).await }
    })
    .await;
    assert_eq!(results.len(), 100);
    let failed: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.result.is_err())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(failed, vec![5, 10, 50, 99]);
    assert_eq!(
        results[10].result.as_ref().unwrap_err().kind(),
        ErrorKind::Api
    );
    assert_eq!(
        results[5].result.as_ref().unwrap_err().kind(),
        ErrorKind::Connection
    );
    assert_eq!(results[42].result.as_ref().unwrap(), "talos-worker-40");
    sim.shutdown().await;
}

#[tokio::test]
async fn reads_retry_transient_failures_and_writes_never_do() {
    let sim = start(SimConfig::default()).await;
    let c = client(&sim);
    let node = worker(&sim);
    sim.set_fault(&node, Fault::Unavailable);

    let err = c
        .version(&CallOptions::node(node.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection);
    assert_eq!(sim.calls(&node, "Version"), 3, "one try plus two retries");
    assert_eq!(c.stats().retries, 2);

    let err = c
        .reboot(&CallOptions::node(node.clone()), RebootMode::Default)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection);
    assert_eq!(sim.calls(&node, "Reboot"), 1, "writes are never retried");

    // A transient failure that clears is absorbed by the retry.
    sim.set_fault(&node, Fault::None);
    c.version(&CallOptions::node(node.clone())).await.unwrap();
    sim.shutdown().await;
}

#[tokio::test]
async fn timeouts_name_node_and_endpoint() {
    let sim = start(SimConfig::default()).await;
    let c = client(&sim);
    let node = worker(&sim);
    // Connect first: on a loaded machine the TLS handshake alone can outlast the 300 ms below,
    // which would make this a connect failure instead of the stalled call's deadline.
    c.version(&CallOptions::node(node.clone())).await.unwrap();
    sim.set_fault(&node, Fault::Stall);
    let err = c
        .version(&CallOptions::node(node.clone()).with_timeout(Duration::from_millis(300)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&node) && text.contains(&sim.endpoint().to_string()),
        "{text}"
    );

    sim.set_fault(&node, Fault::Latency(Duration::from_millis(100)));
    c.version(&CallOptions::node(node.clone()).with_timeout(Duration::from_secs(2)))
        .await
        .unwrap();
    sim.shutdown().await;
}

/// Statuses the node itself answers, over real mTLS: the typed code of an `Api` error, and the
/// two codes whose texts must not claim what did not happen (our deadline passing, a TLS failure).
#[tokio::test]
async fn statuses_answered_by_the_node_keep_their_meaning() {
    let sim = start(SimConfig::default()).await;
    let c = client(&sim);
    let node = worker(&sim);
    let opts = CallOptions::node(node.clone()).with_timeout(Duration::from_secs(30));
    let answer = |code: tonic::Code, message: &str| Fault::Status {
        code,
        message: message.into(),
    };

    // apid gave up proxying to the node: answered at once, long before our 30 s deadline.
    sim.set_fault(
        &node,
        answer(tonic::Code::DeadlineExceeded, "proxy to node timed out"),
    );
    let err = c.version(&opts).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(
        matches!(err, TalosError::DeadlineExceeded { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "Timeout: node {node} via endpoint {} answered DeadlineExceeded: proxy to node timed out;",
            sim.endpoint()
        )),
        "{text}"
    );
    assert!(!text.contains("did not answer within"), "{text}");

    // The handshake succeeded; the server refused the credentials.
    sim.set_fault(&node, answer(tonic::Code::Unauthenticated, "not accepted"));
    let err = c.version(&opts).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Authentication, "{err}");
    assert!(matches!(err, TalosError::Unauthenticated { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("refused the credentials (Unauthenticated): not accepted"),
        "{text}"
    );
    assert!(!text.contains("TLS with"), "{text}");

    // Any other code comes back typed.
    sim.set_fault(&node, answer(tonic::Code::FailedPrecondition, "not yet"));
    let err = c.version(&opts).await.unwrap_err();
    assert!(
        matches!(
            &err,
            TalosError::Api { code: Code::FailedPrecondition, message, .. } if message == "not yet"
        ),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::Api);

    sim.set_fault(&node, Fault::None);
    c.version(&opts).await.unwrap();
    sim.shutdown().await;
}

#[tokio::test]
async fn unknown_node_is_a_connection_error() {
    let sim = start(SimConfig::default()).await;
    let err = client(&sim)
        .version(&CallOptions::node("127.0.99.99"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection);
    assert!(err.to_string().contains("127.0.99.99"));
    sim.shutdown().await;
}

#[tokio::test]
async fn roles_are_enforced() {
    let sim = start(SimConfig::default()).await;
    let reader = client_with(&sim, "os:reader", fast_settings());
    let operator = client_with(&sim, "os:operator", fast_settings());
    let node = CallOptions::node(worker(&sim));

    reader.version(&node).await.unwrap();
    let err = reader.reboot(&node, RebootMode::Default).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    assert!(
        err.to_string().contains("os:reader"),
        "explains roles: {err}"
    );
    assert_eq!(
        reader
            .kubeconfig(&CallOptions::node(cp(&sim)))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::PermissionDenied
    );
    assert_eq!(
        operator
            .reset(&node, &ResetRequest::default())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::PermissionDenied
    );
    operator
        .service_action(&node, "kubelet", ServiceAction::Restart)
        .await
        .unwrap();
    sim.shutdown().await;
}

#[tokio::test]
async fn tls_failures_are_authentication_errors() {
    let sim = start(SimConfig::default()).await;
    let node = CallOptions::node(cp(&sim));

    sim.set_cert_fault(CertFault::WrongCa);
    let err = client(&sim).version(&node).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Authentication, "{err}");
    assert!(
        err.to_string()
            .contains("not signed by the talosconfig's CA"),
        "{err}"
    );

    sim.set_cert_fault(CertFault::Expired);
    let err = client(&sim).version(&node).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Authentication, "{err}");
    assert!(err.to_string().contains("expired"), "{err}");

    sim.set_cert_fault(CertFault::None);
    client(&sim).version(&node).await.unwrap();
    sim.shutdown().await;
}

#[tokio::test]
async fn an_expired_client_certificate_is_an_authentication_error() {
    let sim = start(SimConfig::default()).await;
    let yaml = sim
        .talosconfig_with("os:admin", talos_sim::pki::Validity::Expired)
        .unwrap();
    let ctx = TalosConfig::from_yaml(&yaml, "<sim>")
        .unwrap()
        .context(None)
        .unwrap();
    let c = GrpcTalosClient::with_settings(&ctx, fast_settings()).unwrap();
    let err = c.version(&CallOptions::node(cp(&sim))).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Authentication, "{err}");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_tls12_only_server_is_refused() {
    let sim = start(SimConfig {
        tls: talos_sim::ServerTlsMode::Tls12Only,
        ..SimConfig::default()
    })
    .await;
    let err = client(&sim)
        .version(&CallOptions::node(cp(&sim)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Authentication, "{err}");
    sim.shutdown().await;
}

#[tokio::test]
async fn endpoints_fail_over_in_order() {
    let sim = start(SimConfig::default()).await;
    // A first endpoint where nothing listens, then the simulator.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let yaml = sim.talosconfig("os:admin").unwrap().replacen(
        "endpoints:\n",
        &format!("endpoints:\n            - \"{closed}\"\n"),
        1,
    );
    let ctx = TalosConfig::from_yaml(&yaml, "<sim>")
        .unwrap()
        .context(None)
        .unwrap();
    assert_eq!(ctx.endpoints().len(), 2);
    let c = GrpcTalosClient::with_settings(&ctx, fast_settings()).unwrap();
    c.version(&CallOptions::node(cp(&sim))).await.unwrap();
    assert_eq!(c.stats().failovers, 1);
    // The working endpoint is preferred afterwards.
    c.version(&CallOptions::node(cp(&sim))).await.unwrap();
    assert_eq!(c.stats().failovers, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn mid_stream_abort_is_reported() {
    let sim = start(SimConfig::default()).await;
    let node = cp(&sim);
    sim.set_fault(&node, Fault::AbortStreamAfter { bytes: 10_000 });
    let err = client(&sim)
        .logs(
            &CallOptions::node(node),
            &LogSource::service("etcd"),
            &StreamLimits {
                tail: None,
                ..StreamLimits::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_100_mb_log_stream_stays_within_its_buffer() {
    let lines = 1_000_000; // ~100 bytes each
    let sim = start(SimConfig {
        log_lines: lines,
        ..SimConfig::default()
    })
    .await;
    let limits = StreamLimits {
        tail: None,
        max_lines: 1000,
        max_bytes: 64 * 1024,
        ..StreamLimits::default()
    };
    let out = client(&sim)
        .logs(
            &CallOptions::node(cp(&sim)),
            &LogSource::service("machined"),
            &limits,
        )
        .await
        .unwrap();
    assert!(
        out.bytes_read > 90_000_000,
        "streamed {} bytes",
        out.bytes_read
    );
    assert_eq!(out.lines_read, lines as u64);
    assert!(
        out.peak_buffer_bytes <= 64 * 1024 + 200,
        "peak {}",
        out.peak_buffer_bytes
    );
    assert!(
        out.lines
            .last()
            .unwrap()
            .ends_with(&format!("seq={}", lines - 1))
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn errors_never_carry_key_material() {
    let sim = start(SimConfig::default()).await;
    let yaml = sim.talosconfig("os:reader").unwrap();
    let config = TalosConfig::from_yaml(&yaml, "<sim>").unwrap();
    let key_b64 = config.raw().contexts["talos-sim"].key.clone().unwrap();
    let c =
        GrpcTalosClient::with_settings(&config.context(None).unwrap(), fast_settings()).unwrap();
    let err = c
        .reboot(&CallOptions::node(cp(&sim)), RebootMode::Default)
        .await
        .unwrap_err();
    for shown in [err.to_string(), format!("{err:?}"), format!("{c:?}")] {
        assert!(!shown.contains(&key_b64[20..60]), "{shown}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    }
    sim.shutdown().await;
}

/// The next item of a watch, failing the test on a hang (not a timing assertion).
async fn next_event(stream: &mut WatchStream) -> Option<Result<ResourceEvent>> {
    use futures_util::StreamExt as _;
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the watch neither sent an event nor ended")
}

#[tokio::test]
async fn watch_follows_a_reboot_then_ends_with_one_connection_error() {
    let sim = start(SimConfig {
        reboot_downtime: Duration::from_millis(800),
        ..SimConfig::default()
    })
    .await;
    let c = client(&sim);
    let node = CallOptions::node(worker(&sim));
    let mut status = c
        .watch(
            &node,
            "runtime",
            "MachineStatuses.runtime.talos.dev",
            Some("machine".into()),
            WatchOptions::default(),
        )
        .await
        .unwrap();
    let first = next_event(&mut status).await.unwrap().unwrap();
    assert_eq!(first.kind, "created");
    assert!(first.resource.unwrap().spec_yaml.contains("stage: running"));
    c.reboot(&node, RebootMode::Default).await.unwrap();
    let down = next_event(&mut status).await.unwrap().unwrap();
    assert_eq!(down.kind, "updated");
    assert!(
        down.resource
            .unwrap()
            .spec_yaml
            .contains("stage: rebooting")
    );
    assert!(down.old.unwrap().spec_yaml.contains("stage: running"));
    let lost = next_event(&mut status).await.unwrap().unwrap_err();
    assert_eq!(lost.kind(), ErrorKind::Connection);
    assert!(
        next_event(&mut status).await.is_none(),
        "nothing after the error"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn watch_is_bounded_by_count_and_message_size() {
    let sim = start(SimConfig::default()).await;
    let c = client(&sim);
    let node = CallOptions::node(worker(&sim));
    // 9 services on a worker, then `bootstrapped`: a cap of 4 ends the stream cleanly at 4.
    let capped = WatchOptions {
        max_events: 4,
        ..WatchOptions::default()
    };
    let mut services = c
        .watch(
            &node,
            "runtime",
            "Services.v1alpha1.talos.dev",
            None,
            capped,
        )
        .await
        .unwrap();
    let mut n = 0;
    while let Some(event) = next_event(&mut services).await {
        assert_eq!(event.unwrap().kind, "created");
        n += 1;
    }
    assert_eq!(n, 4);
    // One message larger than the cap fails while decoding, and ends the stream.
    let tiny = WatchOptions {
        max_message_bytes: 64,
        ..WatchOptions::default()
    };
    let mut members = c
        .watch(&node, "cluster", "Members.cluster.talos.dev", None, tiny)
        .await
        .unwrap();
    let too_big = next_event(&mut members).await.unwrap().unwrap_err();
    assert!(too_big.to_string().contains("message"), "{too_big}");
    assert!(next_event(&mut members).await.is_none());
    sim.shutdown().await;
}

#[tokio::test]
async fn watch_refusals_keep_their_kind() {
    let sim = start(SimConfig::default()).await;
    let reader = client_with(&sim, "os:reader", fast_settings());
    let node = CallOptions::node(cp(&sim));
    let denied = reader
        .watch(
            &node,
            "secrets",
            "OSRootSecrets.secrets.talos.dev",
            None,
            WatchOptions::default(),
        )
        .await
        .err()
        .unwrap();
    assert_eq!(denied.kind(), ErrorKind::PermissionDenied);
    sim.set_fault(
        &cp(&sim),
        Fault::Status {
            code: tonic::Code::Unimplemented,
            message: "unknown method Watch".into(),
        },
    );
    let unimplemented = reader
        .watch(
            &node,
            "runtime",
            "MachineStatuses.runtime.talos.dev",
            None,
            WatchOptions::default(),
        )
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            unimplemented,
            TalosError::Api {
                code: Code::Unimplemented,
                ..
            }
        ),
        "{unimplemented}"
    );
    sim.shutdown().await;
}

/// Collects a lifecycle upgrade's progress.
async fn progress(stream: UpgradeProgressStream) -> Vec<Result<UpgradeProgress>> {
    use futures_util::StreamExt as _;
    stream.collect().await
}

#[tokio::test]
async fn lifecycle_upgrade_streams_progress_and_rollback_returns() {
    let sim = start(SimConfig {
        reboot_downtime: Duration::from_millis(800),
        ..SimConfig::default()
    })
    .await;
    let c = client(&sim);
    let target = worker(&sim);
    let node = CallOptions::node(target.clone());
    let image = "ghcr.io/siderolabs/installer:v1.12.0";

    // Nothing to roll back to yet: the node says so.
    let none = c.rollback(&node).await.unwrap_err();
    assert!(
        matches!(
            none,
            TalosError::Api {
                code: Code::FailedPrecondition,
                ..
            }
        ),
        "{none}"
    );

    let items = progress(c.lifecycle_upgrade(&node, image).await.unwrap()).await;
    let items: Vec<UpgradeProgress> = items.into_iter().map(|i| i.unwrap()).collect();
    assert_eq!(items.last(), Some(&UpgradeProgress::ExitCode(0)));
    assert!(
        items
            .iter()
            .any(|i| matches!(i, UpgradeProgress::Message(m) if m.contains(image))),
        "{items:?}"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(c.version(&node).await.unwrap().tag, "v1.12.0");

    c.rollback(&node).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(c.version(&node).await.unwrap().tag, "v1.11.5");

    // A failing installer ends the stream with its exit code, nothing else changes.
    sim.set_upgrade_fault(&target, UpgradeFault::ImagePullFails);
    let items = progress(c.lifecycle_upgrade(&node, image).await.unwrap()).await;
    assert!(matches!(
        items.last(),
        Some(Ok(UpgradeProgress::ExitCode(c))) if *c != 0
    ));
    assert_eq!(c.version(&node).await.unwrap().tag, "v1.11.5");
    sim.shutdown().await;
}

#[tokio::test]
async fn lifecycle_upgrade_is_unimplemented_on_legacy_nodes_and_classic_works() {
    let sim = start(SimConfig {
        reboot_downtime: Duration::from_millis(800),
        ..SimConfig::default()
    })
    .await;
    let c = client(&sim);
    let target = worker(&sim);
    sim.set_legacy_api(&target, true);
    let node = CallOptions::node(target.clone());
    let image = "ghcr.io/siderolabs/installer:v1.12.0";
    let err = match c.lifecycle_upgrade(&node, image).await {
        Ok(_) => panic!("a legacy node has no LifecycleService"),
        Err(e) => e,
    };
    assert!(err.is_unimplemented(), "{err}");
    // The classic call is not silently replaced by another API.
    assert_eq!(sim.calls(&target, "Upgrade"), 0);
    // Pulls fall back to MachineService.ImagePull.
    c.image_pull(&node, ContainerNamespace::System, image)
        .await
        .unwrap();
    let ack = c
        .upgrade(
            &node,
            &UpgradeRequest {
                image: image.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(ack.ack.contains(image));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(c.version(&node).await.unwrap().tag, "v1.12.0");
    sim.shutdown().await;
}

/// A reader that yields the first 100 KiB of `bytes` and then fails.
fn tokio_test_reader(bytes: Vec<u8>) -> Box<dyn tokio::io::AsyncRead + Send + Unpin> {
    struct Failing(std::io::Cursor<Vec<u8>>);
    impl tokio::io::AsyncRead for Failing {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            if self.0.position() >= 100 * 1024 {
                return std::task::Poll::Ready(Err(std::io::Error::other("disk read error")));
            }
            std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
        }
    }
    let mut cursor = std::io::Cursor::new(bytes);
    cursor.set_position(0);
    Box::new(Failing(cursor))
}

#[tokio::test]
async fn a_thousand_calls_share_one_tls_connection() {
    let sim = start(SimConfig::default()).await;
    let c = client(&sim);
    let node = CallOptions::node(cp(&sim));
    for _ in 0..1000 {
        c.version(&node).await.unwrap();
    }
    assert_eq!(sim.calls(&cp(&sim), "Version"), 1000);
    assert_eq!(
        sim.tls_handshakes(),
        1,
        "every call after the first reused the connection"
    );
}
