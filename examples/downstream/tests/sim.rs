//! The same logic against a simulated Talos cluster over real gRPC and mutual TLS.

use std::sync::Arc;

use talos_client::{GrpcTalosClient, TalosApi};
use talos_sim::{Fault, SimCluster};
use talos_version_skew::{NodeVersion, version_skew};

#[tokio::test]
async fn skew_across_a_simulated_cluster() {
    let sim = SimCluster::builder()
        .control_planes(2)
        .workers(2)
        .version("v1.11.5")
        .node_version("talos-worker-1", "v1.10.7")
        .start()
        .await
        .expect("simulator starts");
    let context = sim.context("os:reader").expect("context");
    let api: Arc<dyn TalosApi> = Arc::new(GrpcTalosClient::new(&context).expect("client"));
    let nodes: Vec<String> = sim.nodes().into_iter().map(|n| n.hostname).collect();

    let report = version_skew(api.clone(), &nodes, 4).await;
    assert_eq!(report.newest.as_deref(), Some("v1.11.5"));
    assert_eq!(
        report.current,
        vec!["talos-cp-1", "talos-cp-2", "talos-worker-2"]
    );
    assert_eq!(
        report.behind,
        vec![NodeVersion {
            node: "talos-worker-1".into(),
            tag: "v1.10.7".into()
        }]
    );
    assert!(report.unreachable.is_empty(), "{report:?}");

    // A node that stops answering is reported as unreachable, the others still answer.
    sim.set_fault("talos-cp-2", Fault::Unavailable);
    let report = version_skew(api, &nodes, 4).await;
    assert_eq!(report.unreachable.len(), 1, "{report:?}");
    assert_eq!(report.unreachable[0].0, "talos-cp-2");
    assert_eq!(report.current, vec!["talos-cp-1", "talos-worker-2"]);
}
