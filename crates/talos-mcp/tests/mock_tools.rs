//! Unit tests of every tool against `MockTalosApi`: arguments validated, results shaped, caps
//! enforced, errors mapped, node allowlist enforced, toolsets selected.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{connect, mock_clusters, settings, text, with_mock};
use serde_json::json;
use talos_client::*;
use talos_mcp::{ServerSettings, TalosMcp};

const NODES: &[&str] = &["10.5.0.2", "10.5.0.3"];

fn target(node: &str) -> Target {
    Target {
        endpoint: Some("10.5.0.2:50000".into()),
        node: Some(node.into()),
    }
}

fn resource(ns: &str, ty: &str, id: &str, spec: &str) -> Resource {
    Resource {
        namespace: ns.into(),
        resource_type: ty.into(),
        id: id.into(),
        version: "1".into(),
        phase: "running".into(),
        spec_yaml: spec.into(),
        ..Default::default()
    }
}

/// A mock answering every method with small canned data.
fn full_mock() -> MockTalosApi {
    let mut m = MockTalosApi::new();
    m.expect_hostname()
        .returning(|o| Ok(format!("host-{}", o.node.clone().unwrap_or_default())));
    m.expect_version().returning(|_| {
        Ok(VersionInfo {
            tag: "v1.12.0".into(),
            sha: "abc".into(),
            os: "linux".into(),
            arch: "arm64".into(),
            platform: Some("aws".into()),
            ..Default::default()
        })
    });
    m.expect_system_stat().returning(|_| {
        Ok(SystemStat {
            boot_time: Some(SystemTime::now() - Duration::from_secs(7200)),
            cpu_total: CpuTimes {
                user: 30.0,
                idle: 70.0,
                ..Default::default()
            },
            cpus: vec![CpuTimes::default(); 2],
            process_running: 3,
            ..Default::default()
        })
    });
    m.expect_memory().returning(|_| {
        Ok(MemoryInfo {
            total: 1000,
            available: 250,
            free: 100,
            ..Default::default()
        })
    });
    m.expect_load_avg().returning(|_| {
        Ok(LoadAvg {
            load1: 1.5,
            load5: 1.0,
            load15: 0.5,
        })
    });
    m.expect_cpu_info().returning(|_| {
        Ok(vec![
            CpuInfo {
                model_name: "Graviton".into(),
                mhz: 2500.0,
                cores: 2,
                ..Default::default()
            };
            2
        ])
    });
    m.expect_processes().returning(|_| {
        Ok((0..30)
            .map(|i| ProcessInfo {
                pid: i,
                command: format!("proc{i}"),
                cpu_time: f64::from(i),
                resident_memory: u64::try_from(100 - i).unwrap(),
                ..Default::default()
            })
            .collect())
    });
    m.expect_disks().returning(|_| {
        Ok(vec![DiskInfo {
            device_name: "/dev/nvme0n1".into(),
            size: 1 << 40,
            kind: "NVME".into(),
            system_disk: true,
            ..Default::default()
        }])
    });
    m.expect_disk_usage().returning(|_, paths, _, limit| {
        Ok(paths
            .iter()
            .map(|p| DiskUsageEntry {
                name: p.clone(),
                size: 42,
                error: None,
            })
            .take(limit)
            .collect())
    });
    m.expect_mounts().returning(|_| {
        Ok(vec![MountInfo {
            filesystem: "/dev/nvme0n1p6".into(),
            size: 100,
            available: 10,
            mounted_on: "/var".into(),
        }])
    });
    m.expect_network_devices().returning(|_| {
        Ok(vec![NetDevice {
            name: "eth0".into(),
            rx_bytes: 5,
            ..Default::default()
        }])
    });
    m.expect_netstat().returning(|_, _| {
        Ok(vec![SocketInfo {
            protocol: "tcp6".into(),
            local_ip: "::".into(),
            local_port: 50000,
            remote_ip: "::".into(),
            state: "LISTEN".into(),
            process: Some("apid".into()),
            ..Default::default()
        }])
    });
    m.expect_time().returning(|_| {
        let now = SystemTime::now();
        Ok(TimeInfo {
            server: "ntp".into(),
            local_time: Some(now + Duration::from_millis(30)),
            remote_time: Some(now),
        })
    });
    m.expect_containers().returning(|_, ns| {
        Ok(vec![ContainerInfo {
            namespace: ns.as_str().into(),
            id: "c1".into(),
            name: "kube-proxy".into(),
            pod_id: "kube-system/kube-proxy-x".into(),
            image: "registry.k8s.io/kube-proxy".into(),
            ..Default::default()
        }])
    });
    m.expect_container_stats().returning(|_, _| {
        Ok(vec![
            ContainerStats {
                id: "small".into(),
                name: "small".into(),
                memory_usage: 1,
                ..Default::default()
            },
            ContainerStats {
                id: "big".into(),
                name: "big".into(),
                memory_usage: 100,
                cpu_usage: 2_000_000_000,
                ..Default::default()
            },
        ])
    });
    m.expect_services().returning(|_| {
        Ok(vec![
            ServiceInfo {
                id: "etcd".into(),
                state: "Running".into(),
                health: ServiceHealth {
                    healthy: true,
                    ..Default::default()
                },
                ..Default::default()
            },
            ServiceInfo {
                id: "kubelet".into(),
                state: "Failed".into(),
                ..Default::default()
            },
        ])
    });
    m.expect_images().returning(|_, _| {
        Ok(vec![ImageInfo {
            name: "registry.k8s.io/pause:3.10".into(),
            size: 700_000,
            ..Default::default()
        }])
    });
    m.expect_logs().returning(|_, _, limits| {
        let lines: Vec<String> = (0..1000).map(|i| format!("line {i} level=info")).collect();
        let keep = lines.len().min(limits.max_lines);
        Ok(LogLines {
            lines: lines[lines.len() - keep..].to_vec(),
            lines_read: 1000,
            dropped_lines: (1000 - keep) as u64,
            ..Default::default()
        })
    });
    m.expect_dmesg().returning(|_, _| {
        Ok(LogLines {
            lines: vec![
                "n: kern: info: [1.0]: boot".into(),
                "n: kern: err: [2.0]: disk failure".into(),
                "n: kern: warning: [3.0]: slow".into(),
            ],
            lines_read: 3,
            ..Default::default()
        })
    });
    m.expect_events().returning(|_, req| {
        Ok((0..req.max_events)
            .map(|i| MachineEvent {
                id: i.to_string(),
                kind: "machine.PhaseEvent".into(),
                summary: format!("phase {i}"),
                ..Default::default()
            })
            .collect())
    });
    m.expect_etcd_members().returning(|_| {
        Ok(["10.5.0.2", "10.5.0.3", "10.5.0.4"]
            .iter()
            .enumerate()
            .map(|(i, a)| EtcdMember {
                id: i as u64 + 1,
                hostname: format!("cp-{i}"),
                peer_urls: vec![format!("https://{a}:2380")],
                ..Default::default()
            })
            .collect())
    });
    m.expect_etcd_status()
        .returning(|o| match o.node.as_deref() {
            Some("10.5.0.4") => Err(TalosError::Connection {
                target: target("10.5.0.4"),
                message: "down".into(),
            }),
            Some(n) => Ok(EtcdMemberStatus {
                member_id: if n == "10.5.0.2" { 1 } else { 2 },
                leader: 1,
                db_size: 100,
                db_size_in_use: 90,
                raft_index: 10,
                ..Default::default()
            }),
            None => unreachable!("etcd status is always per node"),
        });
    m.expect_etcd_alarms().returning(|_| Ok(vec![]));
    m.expect_health_check().returning(|_, req| {
        assert_eq!(req.control_plane_nodes.len(), 3);
        Ok(vec![
            HealthProgress {
                message: "waiting for etcd to be healthy: OK".into(),
                error: None,
            },
            HealthProgress {
                message: "waiting for kubelet: not ready".into(),
                error: Some("kubelet not ready on 10.5.0.3".into()),
            },
        ])
    });
    m.expect_resource_list().returning(|_, ns, ty, _| {
        Ok(match (ns, ty) {
            ("meta", _) => vec![resource(
                "meta",
                "ResourceDefinitions.meta.cosi.dev",
                "members",
                "type: Members.cluster.talos.dev\ndefaultNamespace: cluster\naliases: [member, members]\n",
            )],
            ("cluster", "Members.cluster.talos.dev") => vec![resource("cluster", ty, "cp-0", "hostname: cp-0\ntoken: hush\n")],
            ("network", _) => vec![resource("network", ty, "eth0", "linkName: eth0\n")],
            _ => vec![],
        })
    });
    m.expect_resource_get()
        .returning(|_, ns, ty, id| Ok(resource(ns, ty, id, "nodename: n1\n")));
    m.expect_list_files().returning(|_, root, _, _| {
        Ok(vec![FileInfo {
            name: format!("{root}/loadavg"),
            size: 10,
            mode: 0o100644,
            ..Default::default()
        }])
    });
    m.expect_read_file().returning(|_, _, max| {
        let data = b"0.1 0.2 0.3".to_vec();
        Ok(FileContent {
            truncated: data.len() > max,
            data: data.into_iter().take(max).collect(),
        })
    });
    m.expect_kubeconfig().returning(|_| {
        Ok(Kubeconfig::new(
            b"apiVersion: v1\nclusters:\n- name: prod\n  cluster:\n    server: https://k8s:6443\nusers:\n- name: a\n  user:\n    client-key-data: TOPSECRET\n"
                .to_vec(),
        ))
    });
    m
}

async fn harness() -> common::Harness {
    with_mock(Arc::new(full_mock()), NODES, |_| {}).await
}

#[tokio::test]
async fn every_tool_shapes_its_result() {
    let h = harness().await;
    let cases = [
        (
            "talos_version",
            json!({}),
            "/nodes/0/result/tag",
            json!("v1.12.0"),
        ),
        (
            "talos_system_stats",
            json!({}),
            "/nodes/1/result/memory_used_percent",
            json!(75.0),
        ),
        ("talos_cpu", json!({}), "/nodes/0/result/count", json!(2)),
        (
            "talos_memory",
            json!({}),
            "/nodes/0/result/used",
            json!(750),
        ),
        (
            "talos_processes",
            json!({"limit": 2}),
            "/nodes/0/result/processes/0/command",
            json!("proc29"),
        ),
        (
            "talos_processes",
            json!({"sort_by": "memory", "limit": 1}),
            "/nodes/0/result/processes/0/command",
            json!("proc0"),
        ),
        (
            "talos_disks",
            json!({}),
            "/nodes/0/result/0/kind",
            json!("NVME"),
        ),
        (
            "talos_disk_usage",
            json!({"paths": ["/var", "/opt"]}),
            "/nodes/0/result/1/path",
            json!("/opt"),
        ),
        (
            "talos_mounts",
            json!({}),
            "/nodes/0/result/0/used_percent",
            json!(90.0),
        ),
        (
            "talos_network",
            json!({"include": ["sockets"]}),
            "/nodes/0/result/sockets/0/local",
            json!("[::]:50000"),
        ),
        (
            "talos_time",
            json!({}),
            "/nodes/0/result/offset_ms",
            json!(30.0),
        ),
        (
            "talos_hostname",
            json!({"nodes": ["10.5.0.3"]}),
            "/nodes/0/result/hostname",
            json!("host-10.5.0.3"),
        ),
        (
            "talos_list_containers",
            json!({"filter": "proxy"}),
            "/nodes/0/result/matched",
            json!(1),
        ),
        (
            "talos_container_stats",
            json!({}),
            "/nodes/0/result/0/id",
            json!("big"),
        ),
        (
            "talos_services",
            json!({"service": "kubelet"}),
            "/nodes/0/result/0/state",
            json!("Failed"),
        ),
        (
            "talos_images",
            json!({}),
            "/nodes/0/result/0/name",
            json!("registry.k8s.io/pause:3.10"),
        ),
        (
            "talos_service_logs",
            json!({"service": "etcd", "tail": 3}),
            "/nodes/0/result/lines/2",
            json!("line 999 level=info"),
        ),
        (
            "talos_dmesg",
            json!({"level": "warning"}),
            "/nodes/0/result/lines/1",
            json!("n: kern: warning: [3.0]: slow"),
        ),
        (
            "talos_events",
            json!({"tail": 4}),
            "/nodes/0/result/3/summary",
            json!("phase 3"),
        ),
        (
            "talos_etcd_members",
            json!({}),
            "/members/2/hostname",
            json!("cp-2"),
        ),
        (
            "talos_etcd_status",
            json!({}),
            "/verdict",
            json!("quorum_at_risk"),
        ),
        ("talos_health", json!({}), "/healthy", json!(false)),
        (
            "talos_get",
            json!({"resource_type": "members"}),
            "/nodes/0/result/0/spec/token",
            json!("[redacted]"),
        ),
        (
            "talos_get",
            json!({"resource_type": "Nodenames.kubernetes.talos.dev", "namespace": "k8s", "id": "nodename"}),
            "/nodes/0/result/0/spec/nodename",
            json!("n1"),
        ),
        (
            "talos_list_files",
            json!({"path": "/proc"}),
            "/nodes/0/result/0/mode",
            json!("644"),
        ),
        (
            "talos_read_file",
            json!({"path": "/proc/loadavg", "max_bytes": 3}),
            "/nodes/0/result/truncated",
            json!(true),
        ),
        (
            "talos_kubeconfig",
            json!({}),
            "/server",
            json!("https://k8s:6443"),
        ),
        (
            "talos_compare",
            json!({}),
            "/contexts/0/nodes/0/talos_version",
            json!("v1.12.0"),
        ),
        (
            // Without `path`: the listing, with the kubeconfig the case above wrote.
            "talos_etcd_snapshot_verify",
            json!({}),
            "/artifacts/0/kind",
            json!("kubeconfig"),
        ),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for (tool, args, pointer, expected) in cases {
        let v = h.ok(tool, args.clone()).await;
        assert_eq!(v.pointer(pointer), Some(&expected), "{tool} {args}: {v}");
        seen.insert(tool);
    }
    let all: std::collections::BTreeSet<String> = h
        .client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    assert_eq!(all.len(), 27);
    for t in &all {
        assert!(seen.contains(t.as_str()), "{t} has no unit test");
    }
}

#[tokio::test]
async fn invalid_arguments_name_the_field_and_allowed_values() {
    let h = harness().await;
    for (tool, args, needle) in [
        (
            "talos_processes",
            json!({"limit": 0}),
            "`limit` must be between 1 and 200",
        ),
        (
            "talos_processes",
            json!({"sort_by": "name"}),
            "InvalidArgument: `sort_by` unknown variant `name`, expected one of `cpu`, `mem`, `memory`",
        ),
        (
            "talos_list_containers",
            json!({"namespace": "default"}),
            "InvalidArgument: `namespace` unknown variant `default`, expected one of `system`, `cri`, `k8s`, `k8s.io`",
        ),
        (
            "talos_container_stats",
            json!({"namespace": "K8S.IO"}),
            "InvalidArgument: `namespace` unknown variant `K8S.IO`, expected one of `system`, `cri`, `k8s`, `k8s.io`",
        ),
        (
            "talos_images",
            json!({"namespace": 1}),
            "InvalidArgument: `namespace` invalid type",
        ),
        (
            "talos_network",
            json!({"include": ["routes", "firewall"]}),
            "InvalidArgument: `include[1]` unknown variant `firewall`, expected one of `interfaces`, `addresses`, `routes`, `sockets`",
        ),
        (
            "talos_network",
            json!({"sockets": "udp"}),
            "InvalidArgument: `sockets` unknown variant `udp`, expected one of `listen`, `listening`, `connected`, `all`",
        ),
        (
            "talos_dmesg",
            json!({"level": "loud"}),
            "InvalidArgument: `level` unknown variant `loud`, expected one of `emerg`, `emergency`, `alert`, `crit`, `critical`, `err`, `error`, `warn`, `warning`, `notice`, `info`, `debug`",
        ),
        (
            "talos_service_logs",
            json!({"service": "etcd", "namespace": "default"}),
            "InvalidArgument: `namespace` unknown variant `default`, expected one of `system`, `cri`, `k8s`, `k8s.io`",
        ),
        (
            "talos_service_logs",
            json!({"service": ""}),
            "`service` is required",
        ),
        (
            "talos_service_logs",
            json!({"service": "etcd", "tail": 100000}),
            "`tail` must be between 1 and 5000",
        ),
        (
            "talos_disk_usage",
            json!({"paths": ["var"]}),
            "`paths` must be absolute",
        ),
        (
            "talos_read_file",
            json!({"path": "/etc/shadow"}),
            "PathNotAllowed",
        ),
        (
            "talos_list_files",
            json!({"path": "/proc/../etc"}),
            "PathNotAllowed",
        ),
        (
            "talos_get",
            json!({"resource_type": "x", "namespace": "secrets"}),
            "Refused",
        ),
        (
            "talos_version",
            json!({"nodes": ["192.0.2.1"]}),
            "NodeNotAllowed",
        ),
        (
            "talos_version",
            json!({"context": "other"}),
            "InvalidConfig",
        ),
    ] {
        let err = h.err(tool, args).await;
        assert!(err.contains(needle), "{tool}: {err}");
    }
}

/// The spellings people type for a closed choice reach the API as the value they mean.
#[tokio::test]
async fn enum_aliases_reach_the_api_as_their_value() {
    let mut m = MockTalosApi::new();
    m.expect_hostname().returning(|_| Ok("h".into()));
    m.expect_containers()
        .withf(|_, ns| *ns == ContainerNamespace::Cri)
        .times(2)
        .returning(|_, _| Ok(vec![]));
    m.expect_images()
        .withf(|_, ns| *ns == ContainerNamespace::Cri)
        .times(1)
        .returning(|_, _| Ok(vec![]));
    m.expect_container_stats()
        .withf(|_, ns| *ns == ContainerNamespace::System)
        .times(1)
        .returning(|_, _| Ok(vec![]));
    m.expect_netstat()
        .withf(|_, f| *f == NetstatFilter::Listening)
        .times(1)
        .returning(|_, _| Ok(vec![]));
    let h = with_mock(Arc::new(m), &NODES[..1], |_| {}).await;
    for (tool, args) in [
        ("talos_list_containers", json!({"namespace": "cri"})),
        ("talos_list_containers", json!({"namespace": "k8s"})),
        ("talos_images", json!({"namespace": "cri"})),
        ("talos_container_stats", json!({"namespace": "system"})),
        (
            // A section named twice is fetched once (`times(1)` above).
            "talos_network",
            json!({"include": ["sockets", "sockets"], "sockets": "listen"}),
        ),
    ] {
        let v = h.ok(tool, args).await;
        assert_eq!(v["nodes"][0]["ok"], true, "{tool}: {v}");
    }
}

#[tokio::test]
async fn log_namespace_and_level_aliases_reach_the_node() {
    let mut m = MockTalosApi::new();
    m.expect_hostname().returning(|_| Ok("h".into()));
    m.expect_logs().returning(|_, source, _| {
        Ok(LogLines {
            lines: vec![format!("{}/{}", source.namespace.as_str(), source.id)],
            lines_read: 1,
            ..Default::default()
        })
    });
    m.expect_dmesg().returning(|_, _| {
        Ok(LogLines {
            lines: vec![
                "n: kern: info: [1.0]: boot".into(),
                "n: kern: err: [2.0]: disk failure".into(),
                "n: kern: warning: [3.0]: slow".into(),
                "n: kern: crit: [4.0]: hot".into(),
            ],
            lines_read: 4,
            ..Default::default()
        })
    });
    let h = with_mock(Arc::new(m), &["10.5.0.2"], |_| {}).await;
    let first = |v: serde_json::Value| v["nodes"][0]["result"]["lines"].clone();
    for (namespace, wanted) in [
        (None, "system/etcd"),
        (Some("system"), "system/etcd"),
        (Some("k8s.io"), "k8s.io/etcd"),
        (Some("cri"), "k8s.io/etcd"),
        (Some("k8s"), "k8s.io/etcd"),
    ] {
        let mut args = json!({"service": "etcd"});
        if let Some(ns) = namespace {
            args["namespace"] = json!(ns);
        }
        let out = h.ok("talos_service_logs", args).await;
        assert_eq!(first(out), json!([wanted]), "{namespace:?}");
    }
    for (level, kept) in [
        ("err", vec!["disk failure", "hot"]),
        ("error", vec!["disk failure", "hot"]),
        ("warn", vec!["disk failure", "slow", "hot"]),
        ("critical", vec!["hot"]),
    ] {
        let out = h.ok("talos_dmesg", json!({"level": level})).await;
        let lines: Vec<String> = first(out)
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().rsplit(": ").next().unwrap().to_owned())
            .collect();
        assert_eq!(lines, kept, "{level}");
    }
}

#[tokio::test]
async fn node_errors_keep_their_kind() {
    let mut m = MockTalosApi::new();
    m.expect_hostname().returning(|_| Ok("h".into()));
    m.expect_version().returning(|o| match o.node.as_deref() {
        Some("10.5.0.3") => Err(TalosError::PermissionDenied {
            target: target("10.5.0.3"),
            message: "not authorized".into(),
        }),
        _ => Err(TalosError::Timeout {
            target: target("10.5.0.2"),
            after: Duration::from_secs(30),
        }),
    });
    let h = with_mock(Arc::new(m), NODES, |_| {}).await;
    let r = h.call("talos_version", json!({})).await;
    assert_ne!(
        r.is_error,
        Some(true),
        "per-node failures are results, not tool errors"
    );
    let v = r.structured_content.clone().unwrap();
    assert_eq!(v["nodes"][0]["error"]["kind"], "Timeout");
    assert_eq!(v["nodes"][1]["error"]["kind"], "PermissionDenied");
    assert!(
        v["nodes"][1]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("os:reader < os:operator < os:admin")
    );
    assert_eq!(v["failed_nodes"], json!(["10.5.0.2", "10.5.0.3"]));
    assert!(text(&r).contains("0/2 node(s) answered"));
}

#[tokio::test]
async fn output_is_capped_keeping_the_newest_lines() {
    let h = with_mock(Arc::new(full_mock()), NODES, |s: &mut ServerSettings| {
        s.output_cap = 4096
    })
    .await;
    let r = h
        .call(
            "talos_service_logs",
            json!({"service": "etcd", "tail": 1000, "nodes": ["10.5.0.2"]}),
        )
        .await;
    let v = r.structured_content.clone().unwrap();
    assert!(
        serde_json::to_string(&v).unwrap().len() <= 4096 + 200,
        "cap honoured"
    );
    assert_eq!(v["truncated"], true);
    assert!(v["note"].as_str().unwrap().contains("lower `tail`"));
    let lines = v["nodes"][0]["result"]["lines"].as_array().unwrap();
    assert!(lines.len() < 1000);
    assert_eq!(
        lines.last().unwrap(),
        "line 999 level=info",
        "newest line kept"
    );
    assert!(text(&r).contains("truncated"));
}

#[tokio::test]
async fn operator_cidrs_extend_the_allowlist() {
    let dir = tempfile::tempdir().unwrap();
    let clusters = mock_clusters(Arc::new(full_mock()), NODES)
        .with_allowed_cidrs(vec!["10.9.0.0/16".parse().unwrap()]);
    let server = TalosMcp::new(clusters, settings(&dir)).unwrap();
    let h = connect(server, None, dir).await;
    h.ok("talos_version", json!({"nodes": ["10.9.3.4"]})).await;
    let err = h
        .err("talos_version", json!({"nodes": ["10.10.0.1"]}))
        .await;
    assert!(err.contains("NodeNotAllowed"), "{err}");
}

#[tokio::test]
async fn discovered_members_are_allowed() {
    // 10.5.0.4 is not in the talosconfig but is an etcd member.
    let h = harness().await;
    h.ok("talos_version", json!({"nodes": ["10.5.0.4"]})).await;
}

#[tokio::test]
async fn toolsets_and_tools_select_what_is_listed() {
    let dir = tempfile::tempdir().unwrap();
    let only_etcd = ServerSettings {
        toolsets: Some(vec!["etcd".into()]),
        ..settings(&dir)
    };
    let server = TalosMcp::new(mock_clusters(Arc::new(full_mock()), NODES), only_etcd).unwrap();
    let names: Vec<String> = server
        .tools()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    assert_eq!(
        names,
        vec![
            "talos_etcd_members",
            "talos_etcd_status",
            "talos_etcd_snapshot_verify"
        ]
    );
    let h = connect(server, None, dir).await;
    let r = h
        .client
        .call_tool(rmcp::model::CallToolRequestParams::new("talos_version"))
        .await;
    assert!(
        r.is_err() || r.unwrap().is_error == Some(true),
        "disabled tools cannot be called"
    );

    let dir = tempfile::tempdir().unwrap();
    let one = ServerSettings {
        tools: Some(vec!["talos_version".into()]),
        ..settings(&dir)
    };
    let server = TalosMcp::new(mock_clusters(Arc::new(full_mock()), NODES), one).unwrap();
    assert_eq!(server.tools().len(), 1);

    let bad = ServerSettings {
        toolsets: Some(vec!["nope".into()]),
        ..settings(&dir)
    };
    let err = TalosMcp::new(mock_clusters(Arc::new(full_mock()), NODES), bad).unwrap_err();
    assert!(
        err.contains("unknown toolset `nope`") && err.contains("info, workloads"),
        "{err}"
    );
    assert_eq!(TalosMcp::toolset_of("talos_dmesg"), Some("logs"));
}

#[tokio::test]
async fn kubeconfig_content_never_reaches_the_model() {
    let h = harness().await;
    let r = h.call("talos_kubeconfig", json!({})).await;
    let all = format!("{}{}", text(&r), r.structured_content.clone().unwrap());
    assert!(
        !all.contains("TOPSECRET") && !all.contains("client-key-data"),
        "{all}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_waits_for_running_calls() {
    let mut m = MockTalosApi::new();
    m.expect_hostname().returning(|_| Ok("h".into()));
    m.expect_version().returning(|_| {
        std::thread::sleep(Duration::from_millis(400));
        Ok(VersionInfo::default())
    });
    let dir = tempfile::tempdir().unwrap();
    let server = TalosMcp::new(mock_clusters(Arc::new(m), &["10.5.0.2"]), settings(&dir)).unwrap();
    let watcher = server.clone();
    let h = connect(server, None, dir).await;
    let call = tokio::spawn(async move { h.call("talos_version", json!({})).await });
    let start = std::time::Instant::now();
    while watcher.in_flight() == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the call never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        watcher.drain(Duration::from_millis(10)).await,
        "still running after a short grace"
    );
    assert!(
        !watcher.drain(Duration::from_secs(5)).await,
        "finished within the grace period"
    );
    assert_ne!(call.await.unwrap().is_error, Some(true));
    assert_eq!(watcher.in_flight(), 0);
}

#[tokio::test]
async fn resources_template_redacts_and_honours_the_output_cap() {
    let mut m = MockTalosApi::new();
    m.expect_resource_list().returning(|_, ns, ty, limit| {
        Ok(match (ns, ty) {
            ("meta", _) => vec![resource(
                "meta",
                "ResourceDefinitions.meta.cosi.dev",
                "members",
                "type: Members.cluster.talos.dev\ndefaultNamespace: cluster\naliases: [member, members]\n",
            )],
            ("cluster", "Members.cluster.talos.dev") => (0..limit)
                .map(|i| {
                    resource(
                        "cluster",
                        ty,
                        &format!("member-{i:03}"),
                        &format!("hostname: m{i}\ntoken: hush\nnote: {}\n", "x".repeat(100)),
                    )
                })
                .collect(),
            _ => vec![],
        })
    });
    let h = with_mock(Arc::new(m), NODES, |s: &mut ServerSettings| {
        s.output_cap = 4096
    })
    .await;
    let r = h
        .client
        .read_resource(rmcp::model::ReadResourceRequestParams::new(
            "talos://mock/nodes/10.5.0.3/resources/members",
        ))
        .await
        .unwrap();
    let rmcp::model::ResourceContents::TextResourceContents { text, .. } = &r.contents[0] else {
        panic!("text contents");
    };
    assert!(text.len() <= 4096, "{} bytes", text.len());
    assert!(!text.contains("hush"), "spec redacted: {text}");
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    assert_eq!(v["truncated"], true);
    let list = v["resources"].as_array().unwrap();
    assert!(!list.is_empty() && list.len() < 100, "{}", list.len());
    assert_eq!(list[0]["id"], "member-000", "first items kept");
    assert_eq!(list[0]["spec"]["hostname"], "m0");
}
