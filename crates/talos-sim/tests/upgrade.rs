//! Upgrades and rollbacks on the simulator over mTLS: both upgrade APIs, staging, rollback to the
//! previous version, nodes that only have the older API, and the per-node upgrade faults.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use talos_proto::cluster::cluster_service_client::ClusterServiceClient;
use talos_proto::machine::image_service_client::ImageServiceClient;
use talos_proto::machine::lifecycle_service_client::LifecycleServiceClient;
use talos_proto::machine::{self, lifecycle_service_install_progress::Response as Progress};
use talos_proto::{cluster, common as pcommon};
use talos_sim::{SimCluster, SimConfig, UpgradeFault};
use tonic::Code;

const TARGET: &str = "ghcr.io/siderolabs/installer:v1.12.0";

async fn start() -> SimCluster {
    SimCluster::start(SimConfig {
        reboot_downtime: Duration::from_millis(800),
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

fn classic(image: &str, stage: bool) -> machine::UpgradeRequest {
    machine::UpgradeRequest {
        image: image.into(),
        stage,
        ..Default::default()
    }
}

fn lifecycle_request(image: &str) -> machine::LifecycleServiceUpgradeRequest {
    machine::LifecycleServiceUpgradeRequest {
        containerd: Some(pcommon::ContainerdInstance {
            driver: pcommon::ContainerDriver::Containerd as i32,
            namespace: pcommon::ContainerdNamespace::NsSystem as i32,
        }),
        source: Some(machine::InstallArtifactsSource {
            image_name: image.into(),
        }),
    }
}

/// Reads a lifecycle upgrade stream to its end: the messages and the exit code.
async fn lifecycle_upgrade(sim: &SimCluster, node: &str, image: &str) -> (Vec<String>, i32) {
    let mut client = LifecycleServiceClient::new(channel(sim, "os:admin").await);
    let mut stream = client
        .upgrade(to(node, lifecycle_request(image)))
        .await
        .unwrap()
        .into_inner();
    let (mut messages, mut code) = (Vec::new(), -1);
    while let Some(msg) = stream.message().await.unwrap() {
        match msg.progress.and_then(|p| p.response) {
            Some(Progress::Message(m)) => messages.push(m),
            Some(Progress::ExitCode(c)) => code = c,
            None => {}
        }
    }
    (messages, code)
}

async fn back(sim: &SimCluster, node: &str) -> bool {
    wait_until(Duration::from_secs(10), || sim.is_up(node)).await
}

#[tokio::test]
async fn rollback_returns_to_the_previous_version_and_needs_one() {
    let sim = start().await;
    let node = sim.nodes()[3].address.clone();
    let mut m = machine(&sim, "os:admin").await;
    let none = expect_code(
        m.rollback(to(&node, machine::RollbackRequest {})).await,
        Code::FailedPrecondition,
    );
    assert!(none.message().contains("no previous"), "{none:?}");
    assert_eq!(sim.version(&node).as_deref(), Some("v1.11.5"));

    m.upgrade(to(&node, classic(TARGET, false))).await.unwrap();
    assert!(back(&sim, &node).await);
    assert_eq!(sim.version(&node).as_deref(), Some("v1.12.0"));
    assert_eq!(sim.previous_version(&node).as_deref(), Some("v1.11.5"));

    let boot = sim.boot_id(&node);
    // Operators may not roll back.
    let mut op = machine(&sim, "os:operator").await;
    expect_code(
        op.rollback(to(&node, machine::RollbackRequest {})).await,
        Code::PermissionDenied,
    );
    m.rollback(to(&node, machine::RollbackRequest {}))
        .await
        .unwrap();
    assert!(!sim.is_up(&node));
    assert!(back(&sim, &node).await);
    assert_ne!(sim.boot_id(&node), boot);
    assert_eq!(sim.version(&node).as_deref(), Some("v1.11.5"));
    assert_eq!(sim.previous_version(&node).as_deref(), Some("v1.12.0"));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_staged_classic_upgrade_waits_for_the_next_reboot() {
    let sim = start().await;
    let node = sim.nodes()[4].address.clone();
    let mut m = machine(&sim, "os:admin").await;
    let boot = sim.boot_id(&node);
    m.upgrade(to(&node, classic(TARGET, true))).await.unwrap();
    assert!(sim.is_up(&node));
    assert_eq!(sim.boot_id(&node), boot);
    assert_eq!(sim.version(&node).as_deref(), Some("v1.11.5"));
    assert_eq!(sim.staged_version(&node).as_deref(), Some("v1.12.0"));
    m.reboot(to(&node, machine::RebootRequest::default()))
        .await
        .unwrap();
    assert!(back(&sim, &node).await);
    assert_eq!(sim.version(&node).as_deref(), Some("v1.12.0"));
    assert_eq!(sim.staged_version(&node), None);
    sim.shutdown().await;
}

#[tokio::test]
async fn the_lifecycle_stream_reports_phases_then_reboots_into_the_new_version() {
    let sim = start().await;
    let node = sim.nodes()[0].address.clone();
    let boot = sim.boot_id(&node);
    let (messages, code) = lifecycle_upgrade(&sim, &node, TARGET).await;
    assert_eq!(code, 0);
    assert!(messages.len() >= 3, "{messages:?}");
    assert!(messages[0].contains(TARGET), "{messages:?}");
    assert!(back(&sim, &node).await);
    assert_ne!(sim.boot_id(&node), boot);
    assert_eq!(sim.version(&node).as_deref(), Some("v1.12.0"));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_legacy_node_has_no_image_or_lifecycle_service_but_upgrades_the_classic_way() {
    let sim = start().await;
    let node = sim.nodes()[3].address.clone();
    sim.set_legacy_api(&node, true);
    let ch = channel(&sim, "os:admin").await;
    let mut lifecycle = LifecycleServiceClient::new(ch.clone());
    expect_code(
        lifecycle
            .upgrade(to(&node, lifecycle_request(TARGET)))
            .await,
        Code::Unimplemented,
    );
    let mut images = ImageServiceClient::new(ch);
    expect_code(
        images
            .pull(to(
                &node,
                machine::ImageServicePullRequest {
                    containerd: None,
                    image_ref: TARGET.into(),
                },
            ))
            .await,
        Code::Unimplemented,
    );
    assert_eq!(sim.version(&node).as_deref(), Some("v1.11.5"));
    let mut m = machine(&sim, "os:admin").await;
    m.image_pull(to(
        &node,
        machine::ImagePullRequest {
            namespace: 0,
            reference: TARGET.into(),
        },
    ))
    .await
    .unwrap();
    m.upgrade(to(&node, classic(TARGET, false))).await.unwrap();
    assert!(back(&sim, &node).await);
    assert_eq!(sim.version(&node).as_deref(), Some("v1.12.0"));
    // Other nodes keep the newer services.
    let (_, code) = lifecycle_upgrade(&sim, "talos-worker-2", TARGET).await;
    assert_eq!(code, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn image_pull_fault_fails_pulls_and_both_upgrades_without_changing_anything() {
    let sim = start().await;
    let node = sim.nodes()[3].address.clone();
    sim.set_upgrade_fault(&node, UpgradeFault::ImagePullFails);
    let boot = sim.boot_id(&node);
    let mut m = machine(&sim, "os:admin").await;
    expect_code(
        m.image_pull(to(
            &node,
            machine::ImagePullRequest {
                namespace: 0,
                reference: TARGET.into(),
            },
        ))
        .await,
        Code::NotFound,
    );
    expect_code(
        m.upgrade(to(&node, classic(TARGET, false))).await,
        Code::NotFound,
    );
    let (messages, code) = lifecycle_upgrade(&sim, &node, TARGET).await;
    assert_ne!(code, 0);
    assert!(
        messages.iter().any(|m| m.contains("failed to pull")),
        "{messages:?}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(sim.is_up(&node));
    assert_eq!(sim.boot_id(&node), boot);
    assert_eq!(sim.version(&node).as_deref(), Some("v1.11.5"));
    assert_eq!(sim.staged_version(&node), None);
    sim.shutdown().await;
}

#[tokio::test]
async fn never_returns_fault_keeps_the_node_down() {
    let sim = start().await;
    let node = sim.nodes()[4].address.clone();
    sim.set_upgrade_fault(&node, UpgradeFault::NeverReturns);
    let mut m = machine(&sim, "os:admin").await;
    m.upgrade(to(&node, classic(TARGET, false))).await.unwrap();
    // Well past the reboot downtime, still down.
    assert!(!wait_until(Duration::from_secs(2), || sim.is_up(&node)).await);
    expect_code(m.version(to(&node, ())).await, Code::Unavailable);
    sim.shutdown().await;
}

#[tokio::test]
async fn old_version_fault_reboots_but_keeps_the_old_version() {
    let sim = start().await;
    let node = sim.nodes()[3].address.clone();
    sim.set_upgrade_fault(&node, UpgradeFault::OldVersion);
    let boot = sim.boot_id(&node);
    let (_, code) = lifecycle_upgrade(&sim, &node, TARGET).await;
    assert_eq!(code, 0, "the installer itself reports success");
    assert!(wait_until(Duration::from_secs(10), || sim.boot_id(&node) != boot).await);
    assert!(back(&sim, &node).await);
    assert_eq!(sim.version(&node).as_deref(), Some("v1.11.5"));
    sim.shutdown().await;
}

#[tokio::test]
async fn unhealthy_fault_comes_back_new_with_kubelet_unhealthy_and_failing_health() {
    let sim = start().await;
    let node = sim.nodes()[1].address.clone();
    sim.set_upgrade_fault(&node, UpgradeFault::Unhealthy);
    let mut m = machine(&sim, "os:admin").await;
    m.upgrade(to(&node, classic(TARGET, false))).await.unwrap();
    assert!(back(&sim, &node).await);
    assert_eq!(sim.version(&node).as_deref(), Some("v1.12.0"));
    let services = m.service_list(to(&node, ())).await.unwrap().into_inner();
    let kubelet = services.messages[0]
        .services
        .iter()
        .find(|s| s.id == "kubelet")
        .unwrap();
    assert!(!kubelet.health.as_ref().unwrap().healthy);

    let mut health = ClusterServiceClient::new(channel(&sim, "os:admin").await);
    let mut stream = health
        .health_check(to("talos-cp-1", cluster::HealthCheckRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let mut failed = Vec::new();
    while let Some(p) = stream.message().await.unwrap() {
        if p.metadata.as_ref().is_some_and(|m| !m.error.is_empty()) {
            failed.push(p.message);
        }
    }
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].contains(&node), "{failed:?}");
    sim.shutdown().await;
}

#[test]
fn the_binary_refuses_unknown_fault_kinds() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_talos-sim"))
        .args(["--fault", "talos-cp-1=melts"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown upgrade fault"), "{stderr}");
}

#[test]
fn the_binary_refuses_a_fault_for_a_node_it_does_not_have() {
    let dir = tempfile_dir();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_talos-sim"))
        .args(["--nodes", "1", "--workers", "0", "--talosconfig"])
        .arg(dir.join("talosconfig"))
        .args([
            "--fault",
            "talos-cp-1=unhealthy",
            "--fault",
            "talos-worker-9=old-version",
        ])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("names no node"), "{stderr}");
    assert!(stderr.contains("talos-worker-9"), "{stderr}");
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "talos-sim-fault-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
