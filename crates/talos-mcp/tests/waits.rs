//! The watch-based waits against the simulator over mTLS: a reboot followed by watches.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use talos_client::prelude::*;
use talos_client::{CallOptions, ClientSettings, GrpcTalosClient, RebootMode};
use talos_config::TalosConfig;
use talos_mcp::watch::{self, Via, WaitOutcome};
use talos_sim::{SimCluster, SimConfig};

#[tokio::test]
async fn a_reboot_is_followed_by_watches() {
    let sim = SimCluster::start(SimConfig {
        reboot_downtime: Duration::from_millis(800),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let yaml = sim.talosconfig("os:admin").unwrap();
    let ctx = TalosConfig::from_yaml(&yaml, "<sim>")
        .unwrap()
        .context(None)
        .unwrap();
    let settings = ClientSettings {
        timeout: Duration::from_secs(5),
        stream_idle_timeout: Duration::from_secs(5),
        backoff_base: Duration::from_millis(10),
        ..ClientSettings::default()
    };
    let api = GrpcTalosClient::with_settings(&ctx, settings).unwrap();
    let node = sim.nodes()[4].address.clone();
    let opts = CallOptions::node(node.clone());
    let limit = Duration::from_secs(30);
    let before = sim.boot_id(&node).unwrap();

    api.reboot(&opts, RebootMode::Default).await.unwrap();
    let boot = watch::until_new_boot(&api, &opts, &before, limit).await;
    assert_eq!(boot.via, Via::Watch);
    assert_eq!(
        boot.outcome,
        WaitOutcome::Reached(sim.boot_id(&node).unwrap())
    );
    let running = watch::until_machine_running(&api, &opts, limit).await;
    assert_eq!(
        (running.outcome, running.via),
        (WaitOutcome::Reached(()), Via::Watch)
    );
    let services = watch::until_services_healthy(&api, &opts, limit).await;
    assert!(
        matches!(&services.outcome, WaitOutcome::Reached(ids) if ids.iter().any(|s| s == "kubelet"))
    );
    let version = api.version(&opts).await.unwrap().tag;
    let same = watch::until_version(&api, &opts, &version, limit).await;
    assert_eq!(same.outcome, WaitOutcome::Reached(version));
    assert_eq!(same.via, Via::Watch);
    // The waits watched the node (at least one watch each).
    assert!(sim.calls(&node, "State.Watch") >= 4);
    sim.shutdown().await;
}
