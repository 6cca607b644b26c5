//! COSI watches see the simulator's state change: reboots (machine status, then the stream
//! breaks; the new boot id after reconnecting), service state changes and etcd membership.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use talos_proto::cosi::resource as cosi;
use talos_proto::machine;
use talos_sim::{SimCluster, SimConfig};
use tonic::{Code, Streaming};

async fn start() -> SimCluster {
    SimCluster::start(SimConfig {
        reboot_downtime: Duration::from_millis(800),
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

fn request(ns: &str, ty: &str, id: Option<&str>, bootstrap: bool) -> cosi::WatchRequest {
    cosi::WatchRequest {
        namespace: ns.into(),
        r#type: ty.into(),
        id: id.map(str::to_owned),
        options: Some(cosi::WatchOptions {
            bootstrap_contents: bootstrap,
            ..Default::default()
        }),
        api_version: 1,
    }
}

async fn open(
    sim: &SimCluster,
    node: &str,
    req: cosi::WatchRequest,
) -> Streaming<cosi::WatchResponse> {
    state(sim, "os:reader")
        .await
        .watch(to(node, req))
        .await
        .unwrap()
        .into_inner()
}

/// The next event, failing the test if none comes within 10 s (a hang, not a timing assertion).
async fn next(watch: &mut Streaming<cosi::WatchResponse>) -> Result<cosi::Event, tonic::Status> {
    let message = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("an event or the end of the watch");
    message.map(|m| m.expect("the watch ended early").event.remove(0))
}

fn spec(r: &Option<cosi::Resource>) -> String {
    r.as_ref()
        .and_then(|r| r.spec.as_ref())
        .map(|s| s.yaml_spec.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_reboot_is_seen_then_the_watch_breaks_and_reconnects_to_the_new_boot() {
    let sim = start().await;
    let node = "talos-worker-1";
    let mut status = open(
        &sim,
        node,
        request(
            "runtime",
            "MachineStatuses.runtime.talos.dev",
            Some("machine"),
            false,
        ),
    )
    .await;
    let first = next(&mut status).await.unwrap();
    assert_eq!(first.event_type, cosi::EventType::Created as i32);
    assert!(spec(&first.resource).contains("stage: running"));
    assert!(spec(&first.resource).contains("ready: true"));
    let boot_before = sim.boot_id(node).unwrap();

    machine(&sim, "os:admin")
        .await
        .reboot(to(node, machine::RebootRequest::default()))
        .await
        .unwrap();
    let going_down = next(&mut status).await.unwrap();
    assert_eq!(going_down.event_type, cosi::EventType::Updated as i32);
    assert!(spec(&going_down.resource).contains("stage: rebooting"));
    assert!(spec(&going_down.resource).contains("ready: false"));
    assert!(spec(&going_down.old).contains("stage: running"));
    // Then the stream breaks, as apid's does when the node goes away.
    assert_eq!(
        next(&mut status).await.unwrap_err().code(),
        Code::Unavailable
    );

    assert!(wait_until(Duration::from_secs(10), || sim.is_up(node)).await);
    let mut boot = open(
        &sim,
        node,
        request("runtime", "BootIDs.runtime.talos.dev", None, true),
    )
    .await;
    let now = next(&mut boot).await.unwrap();
    let boot_after = sim.boot_id(node).unwrap();
    assert_ne!(boot_after, boot_before);
    assert!(spec(&now.resource).contains(&boot_after));
    assert_eq!(
        next(&mut boot).await.unwrap().event_type,
        cosi::EventType::Bootstrapped as i32
    );
    let mut status = open(
        &sim,
        node,
        request(
            "runtime",
            "MachineStatuses.runtime.talos.dev",
            Some("machine"),
            false,
        ),
    )
    .await;
    assert!(spec(&next(&mut status).await.unwrap().resource).contains("stage: running"));
    sim.shutdown().await;
}

#[tokio::test]
async fn service_state_changes_are_updates_with_old_and_new() {
    let sim = start().await;
    let node = "talos-worker-2";
    // A whole-type watch without bootstrap: only changes arrive.
    let mut services = open(
        &sim,
        node,
        request("runtime", "Services.v1alpha1.talos.dev", None, false),
    )
    .await;
    let mut m = machine(&sim, "os:admin").await;
    m.service_stop(to(
        node,
        machine::ServiceStopRequest {
            id: "kubelet".into(),
        },
    ))
    .await
    .unwrap();
    let stopped = next(&mut services).await.unwrap();
    assert_eq!(stopped.event_type, cosi::EventType::Updated as i32);
    assert_eq!(
        stopped
            .resource
            .as_ref()
            .unwrap()
            .metadata
            .as_ref()
            .unwrap()
            .id,
        "kubelet"
    );
    assert!(spec(&stopped.old).contains("running: true"));
    assert!(spec(&stopped.resource).contains("running: false"));
    assert!(spec(&stopped.resource).contains("healthy: false"));
    m.service_start(to(
        node,
        machine::ServiceStartRequest {
            id: "kubelet".into(),
        },
    ))
    .await
    .unwrap();
    let started = next(&mut services).await.unwrap();
    assert!(spec(&started.resource).contains("running: true"));
    // A change of another node is not this watch's.
    m.service_stop(to(
        "talos-worker-1",
        machine::ServiceStopRequest {
            id: "kubelet".into(),
        },
    ))
    .await
    .unwrap();
    m.service_stop(to(node, machine::ServiceStopRequest { id: "udevd".into() }))
        .await
        .unwrap();
    let other = next(&mut services).await.unwrap();
    assert_eq!(other.resource.unwrap().metadata.unwrap().id, "udevd");
    sim.shutdown().await;
}

#[tokio::test]
async fn leaving_etcd_destroys_the_member_resource() {
    let sim = start().await;
    let node = "talos-cp-2";
    let mut member = open(
        &sim,
        node,
        request("etcd", "EtcdMembers.etcd.talos.dev", Some("local"), false),
    )
    .await;
    let initial = next(&mut member).await.unwrap();
    assert!(spec(&initial.resource).contains("memberID:"));
    machine(&sim, "os:admin")
        .await
        .etcd_leave_cluster(to(node, machine::EtcdLeaveClusterRequest::default()))
        .await
        .unwrap();
    let gone = next(&mut member).await.unwrap();
    assert_eq!(gone.event_type, cosi::EventType::Destroyed as i32);
    assert!(gone.resource.is_none());
    assert!(spec(&gone.old).contains("memberID:"));
    sim.shutdown().await;
}

#[tokio::test]
async fn an_upgrade_shows_in_the_cluster_membership_other_nodes_watch() {
    let sim = start().await;
    let mut members = open(
        &sim,
        "talos-cp-1",
        request("cluster", "Members.cluster.talos.dev", None, false),
    )
    .await;
    machine(&sim, "os:admin")
        .await
        .upgrade(to(
            "talos-worker-1",
            machine::UpgradeRequest {
                image: "ghcr.io/siderolabs/installer:v1.12.0".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let upgraded = next(&mut members).await.unwrap();
    assert_eq!(upgraded.event_type, cosi::EventType::Updated as i32);
    assert_eq!(
        upgraded
            .resource
            .as_ref()
            .unwrap()
            .metadata
            .as_ref()
            .unwrap()
            .id,
        "talos-worker-1"
    );
    assert!(spec(&upgraded.resource).contains("Talos (v1.12.0)"));
    assert!(spec(&upgraded.old).contains("Talos (v1.11.5)"));
    sim.shutdown().await;
}
