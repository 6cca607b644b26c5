//! Which nodes and contexts a call may reach, and how much one call may make the server do:
//! duplicate nodes, the per-call node cap, per-node byte budgets, pinned hostnames, the context
//! allowlist, and the size of error messages that echo inputs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::{connect, mock_clusters, settings, text, with_mock};
use rmcp::model::ReadResourceRequestParams;
use serde_json::json;
use talos_client::*;
use talos_config::TalosConfig;
use talos_mcp::{ApiFactory, Clusters, ServerSettings, TalosMcp};

const NODES: &[&str] = &["10.5.0.2", "10.5.0.3"];

/// What the mock was asked: the `node` of every call, by method.
#[derive(Default)]
struct Calls(Mutex<Vec<(&'static str, String)>>);

impl Calls {
    fn record(&self, method: &'static str, opts: &CallOptions) {
        self.0
            .lock()
            .unwrap()
            .push((method, opts.node.clone().unwrap_or_default()));
    }

    fn nodes(&self, method: &str) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, _)| *m == method)
            .map(|(_, n)| n.clone())
            .collect()
    }
}

/// A mock whose nodes report the given hostnames, that answers `version` and streams a large
/// log through the same bounded tail buffer the gRPC client uses, recording every call.
fn mock(
    hostnames: &[(&str, &str)],
    calls: &Arc<Calls>,
    peaks: &Arc<Mutex<Vec<usize>>>,
) -> MockTalosApi {
    let hostnames: HashMap<String, String> = hostnames
        .iter()
        .map(|(n, h)| ((*n).to_owned(), (*h).to_owned()))
        .collect();
    let mut m = MockTalosApi::new();
    let c = calls.clone();
    m.expect_hostname().returning(move |o| {
        c.record("hostname", o);
        let node = o.node.clone().unwrap_or_default();
        Ok(hostnames.get(&node).cloned().unwrap_or(node))
    });
    let c = calls.clone();
    m.expect_version().returning(move |o| {
        c.record("version", o);
        Ok(VersionInfo {
            tag: "v1.12.0".into(),
            ..Default::default()
        })
    });
    let c = calls.clone();
    let p = peaks.clone();
    m.expect_logs().returning(move |o, _, limits| {
        c.record("logs", o);
        Ok(big_log(limits, &p))
    });
    let p = peaks.clone();
    m.expect_dmesg()
        .returning(move |_, limits| Ok(big_log(limits, &p)));
    m.expect_etcd_members().returning(|_| {
        Ok(vec![
            EtcdMember {
                id: 1,
                hostname: "cp-9".into(),
                peer_urls: vec!["https://10.5.0.9:2380".into()],
                ..Default::default()
            },
            EtcdMember {
                id: 2,
                hostname: "outside".into(),
                peer_urls: vec!["https://outside.example.com:2380".into()],
                ..Default::default()
            },
        ])
    });
    m.expect_resource_list().returning(|_, _, _, _| Ok(vec![]));
    m
}

/// A node with 2 MiB of log (16,384 lines of 128 bytes) read within `limits` the way the gRPC
/// client reads it; records the most bytes held.
fn big_log(limits: &StreamLimits, peaks: &Mutex<Vec<usize>>) -> LogLines {
    let mut tail = TailBuffer::new(limits.max_lines, limits.max_bytes);
    for i in 0..16_384 {
        tail.push(format!("{i:06} kern: info: {}", "x".repeat(109)));
    }
    peaks.lock().unwrap().push(tail.peak_bytes());
    LogLines {
        dropped_lines: tail.dropped(),
        peak_buffer_bytes: tail.peak_bytes(),
        lines: tail.into_lines(),
        lines_read: 16_384,
        bytes_read: 16_384 * 128,
    }
}

fn fresh() -> (Arc<Calls>, Arc<Mutex<Vec<usize>>>) {
    (Arc::default(), Arc::default())
}

#[tokio::test]
async fn duplicate_nodes_are_called_once() {
    let (calls, peaks) = fresh();
    let api = Arc::new(mock(&[("10.5.0.2", "cp-1")], &calls, &peaks));
    let h = with_mock(api, NODES, |_| {}).await;

    let mut nodes = vec![json!("10.5.0.2"); 1000];
    nodes.extend([
        json!("::ffff:10.5.0.2"),
        json!(" 10.5.0.2 "),
        json!("[::ffff:10.5.0.2]"),
    ]);
    let v = h
        .ok(
            "talos_service_logs",
            json!({"service": "etcd", "tail": 2000, "nodes": nodes}),
        )
        .await;
    assert_eq!(
        calls.nodes("logs"),
        vec!["10.5.0.2"],
        "one RPC for 1,003 spellings"
    );
    assert_eq!(v["nodes"].as_array().unwrap().len(), 1);
    assert_eq!(v["nodes"][0]["node"], "10.5.0.2");

    // The hostname it reported names the same node.
    h.ok(
        "talos_version",
        json!({"nodes": ["cp-1", "10.5.0.2", "CP-1", "::ffff:10.5.0.2"]}),
    )
    .await;
    assert_eq!(calls.nodes("version"), vec!["10.5.0.2"]);
    assert_eq!(calls.nodes("hostname"), vec!["10.5.0.2"], "learned once");
}

#[tokio::test]
async fn nodes_per_call_are_capped() {
    let (calls, peaks) = fresh();
    let api: Arc<dyn TalosApi> = Arc::new(mock(&[], &calls, &peaks));
    let dir = tempfile::tempdir().unwrap();
    let clusters =
        mock_clusters(api.clone(), NODES).with_allowed_cidrs(vec!["10.9.0.0/16".parse().unwrap()]);
    let h = connect(TalosMcp::new(clusters, settings(&dir)).unwrap(), None, dir).await;
    let many: Vec<String> = (0..257)
        .map(|i| format!("10.9.{}.{}", i / 200, i % 200))
        .collect();
    let err = h.err("talos_version", json!({"nodes": many})).await;
    assert!(
        err.contains("InvalidArgument")
            && err.contains("more than 256")
            && err.contains("--max-nodes"),
        "{err}"
    );
    h.ok("talos_version", json!({"nodes": &many[..256]})).await;
    assert_eq!(
        calls.nodes("version").len(),
        256,
        "none called for the refused call"
    );

    let dir = tempfile::tempdir().unwrap();
    let clusters = mock_clusters(api, NODES)
        .with_allowed_cidrs(vec!["10.9.0.0/16".parse().unwrap()])
        .with_max_nodes(2);
    let h = connect(TalosMcp::new(clusters, settings(&dir)).unwrap(), None, dir).await;
    let err = h
        .err(
            "talos_version",
            json!({"nodes": ["10.9.0.1", "10.9.0.2", "10.9.0.3"]}),
        )
        .await;
    assert!(err.contains("more than 2 distinct nodes"), "{err}");
    h.ok(
        "talos_version",
        json!({"nodes": ["10.9.0.1", "10.9.0.2", "10.9.0.1"]}),
    )
    .await;
}

#[tokio::test]
async fn log_tails_are_bounded_per_node_while_read() {
    let (calls, peaks) = fresh();
    let api = Arc::new(mock(&[], &calls, &peaks));
    let nodes = ["10.5.0.2", "10.5.0.3", "10.5.0.4", "10.5.0.5"];
    let h = with_mock(api, &nodes, |s: &mut ServerSettings| {
        s.output_cap = 64 * 1024
    })
    .await;
    h.ok(
        "talos_service_logs",
        json!({"service": "etcd", "tail": 5000}),
    )
    .await;
    let held = peaks.lock().unwrap().clone();
    assert_eq!(held.len(), 4);
    // Each node keeps its share of the 64 KiB cap (16 KiB), not the cap, let alone 2 MiB.
    for peak in held {
        assert!(peak <= 16 * 1024 + 128, "a node held {peak} bytes");
    }

    // dmesg filters by level after reading, so it keeps four shares per node, still bounded.
    peaks.lock().unwrap().clear();
    h.ok("talos_dmesg", json!({"tail": 5000, "level": "info"}))
        .await;
    let held = peaks.lock().unwrap().clone();
    assert_eq!(held.len(), 4);
    for peak in held {
        assert!(peak <= 64 * 1024 + 128, "a node held {peak} bytes");
    }
}

#[tokio::test]
async fn reported_hostnames_are_pinned_to_their_node() {
    let (calls, peaks) = fresh();
    // 10.5.0.3 was renamed to a name that resolves somewhere else, and 10.5.0.2 to an address.
    let api = Arc::new(mock(
        &[
            ("10.5.0.3", "db.outside.example.com"),
            ("10.5.0.2", "192.0.2.7"),
        ],
        &calls,
        &peaks,
    ));
    let h = with_mock(api, NODES, |_| {}).await;
    let err = h
        .err(
            "talos_version",
            json!({"nodes": ["db.outside.example.com"]}),
        )
        .await;
    assert!(err.contains("NodeNotAllowed"), "not learned yet: {err}");
    h.ok("talos_version", json!({})).await;

    let v = h
        .ok(
            "talos_version",
            json!({"nodes": ["db.outside.example.com"]}),
        )
        .await;
    assert_eq!(
        calls.nodes("version").last().unwrap(),
        "10.5.0.3",
        "the call goes to the node that reported the name, not to DNS"
    );
    assert_eq!(v["nodes"][0]["node"], "10.5.0.3");
    assert_eq!(v["nodes"][0]["hostname"], "db.outside.example.com");

    // A hostname that is an address never makes that address a target.
    let err = h
        .err("talos_version", json!({"nodes": ["192.0.2.7"]}))
        .await;
    assert!(err.contains("NodeNotAllowed"), "{err}");
    // Nor does a name no node reported.
    let err = h
        .err("talos_version", json!({"nodes": ["other.example.com"]}))
        .await;
    assert!(err.contains("NodeNotAllowed"), "{err}");
}

#[tokio::test]
async fn discovered_member_names_are_pinned_to_their_addresses() {
    let (calls, peaks) = fresh();
    let api = Arc::new(mock(&[], &calls, &peaks));
    let h = with_mock(api, NODES, |_| {}).await;
    h.ok("talos_version", json!({"nodes": ["cp-9"]})).await;
    assert_eq!(calls.nodes("version"), vec!["10.5.0.9"]);
    h.ok("talos_version", json!({"nodes": ["10.5.0.9"]})).await;
    // A member advertising a DNS name is not a target: nothing pins that name to an address.
    for node in ["outside", "outside.example.com"] {
        let err = h.err("talos_version", json!({"nodes": [node]})).await;
        assert!(err.contains("NodeNotAllowed"), "{err}");
    }
}

/// A talosconfig with contexts `a`, `b` and `c` (current: `c`).
fn three_contexts(api: Arc<dyn TalosApi>) -> Clusters {
    let ca = talos_sim::pki::CertificateAuthority::generate("mock").unwrap();
    let client = ca
        .client_cert("os:admin", talos_sim::pki::Validity::Current)
        .unwrap();
    let contexts: Vec<_> = ["c", "a", "b"]
        .into_iter()
        .map(|name| talos_sim::pki::TalosconfigContext {
            name,
            endpoints: vec!["10.5.0.2".into()],
            nodes: vec!["10.5.0.2".into()],
            ca_pem: ca.cert_pem(),
            client: &client,
        })
        .collect();
    let yaml = talos_sim::pki::render_talosconfig("c", &contexts);
    let config = TalosConfig::from_yaml(&yaml, "<mock>").unwrap();
    let factory: ApiFactory = Arc::new(move |_| Ok(api.clone()));
    Clusters::from_talosconfig(config, None, factory)
}

#[tokio::test]
async fn only_served_contexts_can_be_named_or_seen() {
    let (calls, peaks) = fresh();
    let api: Arc<dyn TalosApi> = Arc::new(mock(&[], &calls, &peaks));
    assert_eq!(three_contexts(api.clone()).context_names(), ["a", "b", "c"]);
    let err = three_contexts(api.clone())
        .with_served_contexts(&["a".into(), "nope".into()])
        .unwrap_err();
    assert!(err.contains("`nope`"), "{err}");

    let clusters = three_contexts(api.clone())
        .with_served_contexts(&["a".into(), "b".into()])
        .unwrap();
    assert_eq!(clusters.context_names(), ["a", "b"]);
    assert_eq!(
        clusters.default_context(),
        None,
        "the current context `c` is not served"
    );
    let dir = tempfile::tempdir().unwrap();
    let h = connect(TalosMcp::new(clusters, settings(&dir)).unwrap(), None, dir).await;

    let err = h.err("talos_version", json!({"context": "c"})).await;
    assert!(
        err.contains("InvalidConfig") && err.contains("available contexts: a, b"),
        "{err}"
    );
    let err = h.err("talos_version", json!({})).await;
    assert!(
        err.contains("`context` is required") && err.contains("available: a, b"),
        "{err}"
    );
    h.ok("talos_version", json!({"context": "b"})).await;

    let listed = h
        .client
        .read_resource(ReadResourceRequestParams::new("talos://contexts"))
        .await
        .unwrap();
    let listed = serde_json::to_string(&listed.contents).unwrap();
    assert!(
        listed.contains("\\\"a\\\"")
            && listed.contains("\\\"b\\\"")
            && !listed.contains("\\\"c\\\""),
        "{listed}"
    );

    // With one served context, it is the default.
    let one = three_contexts(api)
        .with_served_contexts(&["b".into()])
        .unwrap();
    assert_eq!(one.default_context(), Some("b"));
}

#[tokio::test]
async fn errors_echo_inputs_clipped() {
    let (calls, peaks) = fresh();
    let api = Arc::new(mock(&[], &calls, &peaks));
    let h = with_mock(api, NODES, |_| {}).await;
    let huge = "q".repeat(200 * 1024);
    for args in [json!({"context": huge}), json!({"nodes": [huge]})] {
        let r = h.call("talos_version", args).await;
        assert_eq!(r.is_error, Some(true));
        let all = serde_json::to_string(&r).unwrap();
        assert!(all.len() < 4 * 1024, "{} bytes", all.len());
        assert!(
            text(&r).contains(&format!("{}… ({} bytes)", "q".repeat(128), huge.len())),
            "{}",
            text(&r)
        );
    }
    let r = h
        .call(
            "talos_service_logs",
            json!({"service": "etcd", "namespace": huge}),
        )
        .await;
    assert!(serde_json::to_string(&r).unwrap().len() < 4 * 1024);
    // The value is clipped, so the accepted values still fit in the message.
    assert!(
        text(&r).contains("… (204800 bytes)`, expected one of `system`"),
        "{}",
        text(&r).get(..300).unwrap_or_default()
    );
}

#[tokio::test]
async fn sim_member_names_resolve_to_their_addresses() {
    let h = common::with_sim(talos_sim::SimConfig::default(), |_| {}).await;
    let v = h
        .ok(
            "talos_version",
            json!({"nodes": ["talos-cp-1", "127.0.10.11", "TALOS-CP-1", "::ffff:127.0.10.11"]}),
        )
        .await;
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{v}");
    assert_eq!(nodes[0]["node"], "127.0.10.11");
    assert_eq!(nodes[0]["hostname"], "talos-cp-1");
    assert_eq!(nodes[0]["ok"], true, "{v}");
}
