//! talos_compare across two simulated clusters (real mTLS): versions, config drift without secret
//! values, etcd verdicts, an unreachable node, and the argument checks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use serde_json::{Value, json};
use talos_config::TalosConfig;
use talos_mcp::{Clusters, TalosMcp};
use talos_sim::{Fault, SimCluster};

/// Two clusters: `talos-sim` (default) and `prod` (other version on one node, other CNI, other
/// secrets), served by one server whose talosconfig has both contexts with `role`.
async fn fleet(role: &str) -> (common::Harness, SimCluster, SimCluster) {
    let dev = SimCluster::builder()
        .control_planes(1)
        .workers(1)
        .start()
        .await
        .unwrap();
    let prod = SimCluster::builder()
        .name("prod")
        .control_planes(3)
        .workers(1)
        .version("v1.11.5")
        .node_version("talos-worker-1", "v1.10.7")
        .machine_config_patch("cluster:\n  network:\n    cni:\n      name: none\n")
        .start()
        .await
        .unwrap();
    let yaml = SimCluster::fleet_talosconfig(&[&dev, &prod], role).unwrap();
    let config = TalosConfig::from_yaml(&yaml, "<fleet>").unwrap();
    let client_settings = talos_client::ClientSettings {
        timeout: std::time::Duration::from_secs(5),
        backoff_base: std::time::Duration::from_millis(10),
        ..Default::default()
    };
    let clusters =
        Clusters::from_talosconfig(config, None, talos_mcp::grpc_factory(client_settings));
    let dir = tempfile::tempdir().unwrap();
    let settings = common::settings(&dir);
    let server = TalosMcp::new(clusters, settings).unwrap();
    (common::connect(server, None, dir).await, dev, prod)
}

fn context<'a>(out: &'a Value, name: &str) -> &'a Value {
    out["contexts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["context"] == name)
        .unwrap_or_else(|| panic!("no context {name} in {out}"))
}

fn node<'a>(ctx: &'a Value, hostname: &str) -> &'a Value {
    ctx["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["hostname"] == hostname)
        .unwrap_or_else(|| panic!("no node {hostname} in {ctx}"))
}

fn drift_keys(node: &Value) -> Vec<String> {
    node["drift"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["keys"].as_array().unwrap().clone())
        .map(|k| k.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn two_clusters_show_version_and_config_differences_without_secrets() {
    let (h, _dev, _prod) = fleet("os:admin").await;
    let r = h.call("talos_compare", json!({})).await;
    assert_ne!(r.is_error, Some(true), "{}", common::text(&r));
    let out = r.structured_content.clone().unwrap();
    let all = format!("{}{out}", common::text(&r));
    assert!(!all.contains("SIM-SECRET-"), "a secret value leaked: {all}");

    // The reference is the first node of the current context.
    assert_eq!(out["reference"], "talos-sim/127.0.10.11");
    let dev = context(&out, "talos-sim");
    assert!(
        dev["etcd"].as_str().unwrap().starts_with("healthy"),
        "{dev}"
    );
    let cp = node(dev, "talos-cp-1");
    assert_eq!(cp["talos_version"], "v1.11.5");
    assert_eq!(cp["kubernetes_version"], "v1.34.1");
    assert_eq!(
        cp["drift"],
        json!([]),
        "the reference does not differ from itself"
    );

    let prod_ctx = context(&out, "prod");
    assert_eq!(prod_ctx["nodes"].as_array().unwrap().len(), 4);
    assert!(prod_ctx["etcd"].as_str().unwrap().starts_with("healthy"));
    let old = node(prod_ctx, "talos-worker-1");
    assert_eq!(old["talos_version"], "v1.10.7");
    assert_eq!(node(prod_ctx, "talos-cp-2")["talos_version"], "v1.11.5");
    let keys = drift_keys(node(prod_ctx, "talos-cp-2"));
    for expected in [
        "cluster.clusterName: \"talos-sim\" → \"prod\"",
        "cluster.network.cni.name: not on the reference",
        "machine.token: differs (secret)",
        "cluster.secret: differs (secret)",
    ] {
        assert!(
            keys.iter().any(|k| k == expected),
            "{expected} missing in {keys:?}"
        );
    }
    // A worker differs from the control-plane reference in its type, shown as it is not secret.
    assert!(
        drift_keys(old)
            .iter()
            .any(|k| k == "machine.type: \"controlplane\" → \"worker\""),
        "{old}"
    );
    let text = common::text(&r);
    assert!(
        text.contains("2 contexts") && text.contains("v1.10.7"),
        "{text}"
    );
}

#[tokio::test]
async fn an_unreachable_node_is_marked_and_spoils_nothing_else() {
    let (h, dev, prod) = fleet("os:admin").await;
    prod.set_fault("talos-worker-1", Fault::Unavailable);
    let out = h
        .ok(
            "talos_compare",
            json!({"contexts": ["prod", "talos-sim", "prod"], "context": "talos-sim", "node": "talos-cp-1"}),
        )
        .await;
    let contexts: Vec<&str> = out["contexts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["context"].as_str().unwrap())
        .collect();
    assert_eq!(
        contexts,
        ["prod", "talos-sim"],
        "de-duplicated, in the order asked"
    );
    // It did not answer, so its hostname is not known: it is named by its address.
    let down = context(&out, "prod")["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "127.0.10.14")
        .unwrap();
    assert_eq!(down["reachable"], false, "{down}");
    assert!(down["error"].as_str().unwrap().starts_with("Connection"));
    assert!(down.get("talos_version").is_none());
    let up = node(context(&out, "prod"), "talos-cp-1");
    assert_eq!(up["reachable"], true);
    assert!(!drift_keys(up).is_empty());
    assert_eq!(out["reference"], "talos-sim/127.0.10.11");
    assert_eq!(
        dev.calls("talos-cp-1", "State.Get"),
        2,
        "the reference is read once more"
    );
}

#[tokio::test]
async fn arguments_are_checked_before_any_node_is_asked() {
    let (h, dev, prod) = fleet("os:admin").await;
    let err = h
        .err("talos_compare", json!({"contexts": ["prod", "staging"]}))
        .await;
    assert!(
        err.contains("staging") && err.contains("prod") && err.contains("talos-sim"),
        "{err}"
    );
    let err = h
        .err(
            "talos_compare",
            json!({"contexts": ["prod"], "context": "talos-sim"}),
        )
        .await;
    assert!(err.contains("`context`"), "{err}");
    // A reference outside the context's allowlist is refused.
    let err = h.err("talos_compare", json!({"node": "10.99.0.1"})).await;
    assert!(err.contains("10.99.0.1"), "{err}");
    let too_many: Vec<String> = (0..17).map(|i| format!("c{i}")).collect();
    let err = h.err("talos_compare", json!({"contexts": too_many})).await;
    assert!(err.contains("at most 16"), "{err}");
    for sim in [&dev, &prod] {
        for n in sim.nodes() {
            assert_eq!(sim.calls(&n.address, "Version"), 0);
        }
    }
}

#[tokio::test]
async fn a_reader_sees_versions_but_no_drift() {
    let (h, _dev, _prod) = fleet("os:reader").await;
    let out = h.ok("talos_compare", json!({})).await;
    let reference = out["reference"].as_str().unwrap();
    assert!(
        reference.starts_with("none: ") && reference.contains("os:admin"),
        "{reference}"
    );
    let cp = node(context(&out, "prod"), "talos-cp-1");
    assert_eq!(cp["talos_version"], "v1.11.5");
    assert!(cp.get("drift").is_none());
    assert!(
        cp["config_error"]
            .as_str()
            .unwrap()
            .starts_with("PermissionDenied"),
        "{cp}"
    );
}
