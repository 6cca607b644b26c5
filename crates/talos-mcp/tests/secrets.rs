//! No secret ever leaves the server: every tool of every tier runs against talos-sim with tracing
//! at TRACE, and everything captured — tool results, logs, audit lines — is searched for the
//! client key and the secrets the simulator planted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use serde_json::json;
use talos_config::TalosConfig;
use talos_mcp::audit::AuditSink;
use talos_mcp::safety::{ConfirmMode, SafetySettings, TokenIssuer};
use talos_mcp::{Clusters, ServerSettings, TalosMcp};
use talos_sim::{SimCluster, SimConfig};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_tool_leaks_secrets_into_results_logs_or_audit() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        // The product's own filter at its most verbose: trace everywhere, message-logging targets capped.
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            talos_mcp::log_directives("trace"),
        ))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let sim = SimCluster::start(SimConfig {
        reboot_downtime: Duration::from_millis(200),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    // A second cluster with its own secrets, for the comparison across contexts.
    let prod = SimCluster::builder()
        .name("prod")
        .control_planes(1)
        .workers(1)
        .node_version("talos-worker-1", "v1.10.7")
        .machine_config_patch("cluster:\n  network:\n    cni:\n      name: none\n")
        .start()
        .await
        .unwrap();
    let yaml = SimCluster::fleet_talosconfig(&[&sim, &prod], "os:admin").unwrap();
    let config = TalosConfig::from_yaml(&yaml, "<sim>").unwrap();
    let key_b64 = config.raw().contexts["talos-sim"].key.clone().unwrap();
    let prod_key_b64 = config.raw().contexts["prod"].key.clone().unwrap();
    let key_pem = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(&key_b64)
            .unwrap(),
    )
    .unwrap();
    let key_body: String = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let audit = Arc::new(AuditSink::memory());
    let settings = ServerSettings {
        // The widest file allowlist an operator can set: the refusals and the redaction of file
        // contents must hold without help from it.
        file_allowlist: vec!["/".into()],
        artifact_dir: dir.path().join("artifacts"),
        audit: audit.clone(),
        safety: Arc::new(SafetySettings {
            allow_write: true,
            allow_destructive: true,
            confirm: ConfirmMode::None,
            confirm_writes: false,
            tokens: TokenIssuer::random(Duration::from_secs(60)),
        }),
        ..ServerSettings::default()
    };
    let clusters = Clusters::from_talosconfig(
        config,
        None,
        talos_mcp::grpc_factory(talos_client::ClientSettings::default()),
    );
    let server = TalosMcp::new(clusters, settings).unwrap();
    let all_tools: Vec<String> = server
        .tools()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    let h = common::connect(server, Some(sim), dir).await;

    let (cp, w) = ("127.0.10.11", "127.0.10.14");
    let new_config = "version: v1alpha1\nmachine:\n  type: worker\n  token: APPLIED-SECRET-TOKEN\n  ca:\n    key: APPLIED-SECRET-KEY\ncluster:\n  secret: APPLIED-CLUSTER-SECRET\n";
    let calls = vec![
        ("talos_version", json!({})),
        // Both clusters: secret values differ between them and are compared, never shown.
        ("talos_compare", json!({})),
        (
            "talos_compare",
            json!({"context": "prod", "node": "talos-cp-1"}),
        ),
        ("talos_system_stats", json!({})),
        ("talos_cpu", json!({})),
        ("talos_memory", json!({})),
        ("talos_processes", json!({})),
        ("talos_disks", json!({})),
        ("talos_disk_usage", json!({})),
        ("talos_mounts", json!({})),
        (
            "talos_network",
            json!({"include": ["interfaces", "addresses", "routes", "sockets"]}),
        ),
        ("talos_time", json!({})),
        ("talos_hostname", json!({})),
        ("talos_list_containers", json!({"namespace": "k8s.io"})),
        ("talos_container_stats", json!({})),
        ("talos_services", json!({})),
        ("talos_images", json!({})),
        (
            "talos_service_logs",
            json!({"service": "etcd", "nodes": [cp]}),
        ),
        ("talos_dmesg", json!({})),
        ("talos_events", json!({})),
        ("talos_etcd_members", json!({})),
        ("talos_etcd_status", json!({})),
        ("talos_health", json!({})),
        (
            "talos_get",
            json!({"resource_type": "machineconfig", "nodes": [cp]}),
        ),
        (
            "talos_get",
            json!({"resource_type": "OSRootSecrets.secrets.talos.dev", "namespace": "secrets"}),
        ),
        ("talos_get", json!({"resource_type": "members"})),
        ("talos_list_files", json!({"path": "/proc"})),
        ("talos_read_file", json!({"path": "/proc/cmdline"})),
        // A process's root, cwd and fd links reach the node's whole filesystem; the sim serves
        // them like a real node does.
        (
            "talos_read_file",
            json!({"path": "/proc/1/root/system/state/config.yaml"}),
        ),
        (
            "talos_read_file",
            json!({"path": "/proc/self/root/system/secrets/kubernetes/kube-apiserver/apiserver.key"}),
        ),
        (
            "talos_read_file",
            json!({"path": "/proc/thread-self/cwd/etc/kubernetes/kubeconfig-kubelet"}),
        ),
        (
            "talos_read_file",
            json!({"path": "/proc/1/task/1/root/system/state/config.yaml"}),
        ),
        ("talos_read_file", json!({"path": "/proc/1/fd/3"})),
        ("talos_read_file", json!({"path": "/proc/1/environ"})),
        (
            "talos_read_file",
            json!({"path": "/proc/1/root//system/./state/config.yaml"}),
        ),
        (
            "talos_read_file",
            json!({"path": "/system/state/config.yaml"}),
        ),
        (
            "talos_read_file",
            json!({"path": "/etc/kubernetes/kubeconfig-kubelet"}),
        ),
        // Allowed, but quotes secrets.
        ("talos_read_file", json!({"path": "/var/log/app.log"})),
        (
            "talos_list_files",
            json!({"path": "/proc/1/root/system", "depth": 5}),
        ),
        ("talos_list_files", json!({"path": "/proc", "depth": 5})),
        ("talos_list_files", json!({"path": "/", "depth": 5})),
        (
            "talos_disk_usage",
            json!({"paths": ["/proc/1/root/system/secrets"], "depth": 5}),
        ),
        ("talos_kubeconfig", json!({})),
        (
            "talos_apply_config",
            json!({"node": w, "config": new_config}),
        ),
        (
            "talos_apply_config",
            json!({"node": w, "config": new_config, "dry_run": false, "mode": "no-reboot"}),
        ),
        (
            "talos_service_restart",
            json!({"node": w, "service": "kubelet"}),
        ),
        (
            "talos_service_stop",
            json!({"node": w, "service": "kubelet"}),
        ),
        (
            "talos_service_start",
            json!({"node": w, "service": "kubelet"}),
        ),
        (
            "talos_image_pull",
            json!({"node": w, "image": "registry.k8s.io/pause:3.10"}),
        ),
        ("talos_etcd_defragment", json!({"node": cp})),
        ("talos_etcd_alarm_disarm", json!({"node": cp})),
        ("talos_etcd_snapshot", json!({"node": cp})),
        // The listing and a verification of the snapshot just written; the configuration
        // backups (files full of secrets) as paths, sizes, hashes and a summary.
        ("talos_etcd_snapshot_verify", json!({})),
        ("talos_config_backup", json!({})),
        // Refused on a healthy cluster, with messages that must not leak either.
        (
            "talos_etcd_recover",
            json!({"node": cp, "path": "missing.snapshot"}),
        ),
        ("talos_bootstrap", json!({"node": cp})),
        ("talos_etcd_forfeit_leadership", json!({"node": cp})),
        (
            "talos_cluster_upgrade",
            json!({"image": "ghcr.io/siderolabs/installer:v1.12.0", "nodes": [w], "health_timeout_seconds": 10}),
        ),
        (
            "talos_reboot",
            json!({"node": w, "wait": true, "wait_timeout_seconds": 10}),
        ),
        (
            "talos_upgrade",
            json!({"node": w, "image": "ghcr.io/siderolabs/installer:v1.12.0", "wait_timeout_seconds": 20}),
        ),
        (
            "talos_rollback",
            json!({"node": w, "wait_timeout_seconds": 20}),
        ),
        (
            "talos_etcd_remove_member",
            json!({"node": cp, "member": "talos-cp-3"}),
        ),
        ("talos_etcd_leave", json!({"node": "127.0.10.12"})),
        ("talos_shutdown", json!({"node": "127.0.10.15"})),
        ("talos_reset", json!({"node": w, "reboot": true})),
        // The reboot above ran as an operation: its record, steps included.
        ("talos_operations", json!({})),
    ];
    let called: std::collections::BTreeSet<&str> = calls.iter().map(|c| c.0).collect();
    for t in &all_tools {
        assert!(
            called.contains(t.as_str()),
            "{t} is not exercised by the secrets test"
        );
    }
    let mut outputs = String::new();
    for (tool, args) in calls {
        let r = h.call(tool, args).await;
        outputs.push_str(&common::text(&r));
        outputs.push_str(
            &r.structured_content
                .map(|v| v.to_string())
                .unwrap_or_default(),
        );
    }
    // Resources too, including the redacted machine config.
    for uri in [
        "talos://contexts",
        "talos://talos-sim/nodes/127.0.10.11/machineconfig",
        "talos://talos-sim/nodes/127.0.10.11/resources/members",
    ] {
        let r = h
            .client
            .read_resource(rmcp::model::ReadResourceRequestParams::new(uri))
            .await
            .unwrap();
        outputs.push_str(&serde_json::to_string(&r).unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    let audit_text = audit.lines().join("\n");
    assert!(
        logs.len() > 10_000,
        "tracing captured output ({} bytes)",
        logs.len()
    );
    assert!(audit.lines().len() >= 40);
    let kubeconfig_key_b64 =
        base64::engine::general_purpose::STANDARD.encode("SIM-SECRET-KUBECONFIG-KEY");
    let mut secrets: Vec<String> = talos_sim::PLANTED_SECRETS
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    secrets.extend([
        key_b64[..60].to_owned(),
        prod_key_b64[..60].to_owned(),
        key_body,
        "PRIVATE KEY".to_owned(),
        kubeconfig_key_b64,
        "APPLIED-SECRET-TOKEN".into(),
        "APPLIED-SECRET-KEY".into(),
        "APPLIED-CLUSTER-SECRET".into(),
    ]);
    if let Ok(path) = std::env::var("DUMP_SECRET_LOGS") {
        std::fs::write(path, &logs).unwrap();
    }
    let mut leaks = Vec::new();
    for (name, haystack) in [
        ("tool output", &outputs),
        ("logs", &logs),
        ("audit", &audit_text),
    ] {
        for secret in &secrets {
            if haystack.contains(secret.as_str()) {
                // Planted markers are named in full; real key material only by its start.
                let shown = if secret.starts_with("SIM-SECRET-") {
                    secret.clone()
                } else {
                    format!("{}…", &secret[..secret.len().min(12)])
                };
                leaks.push(format!("{name} contains {shown}"));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
}
