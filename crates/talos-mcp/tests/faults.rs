//! The fault matrix: every fault the simulator can inject, on one node of five (or, for faults of
//! a whole endpoint, on one of two clusters), driven through the MCP tools over real mTLS.
//!
//! For each fault the test checks that
//! - the faulty node's outcome has the right error kind and a message naming node and endpoint,
//! - the healthy nodes' results (or, for endpoint faults, the other cluster's, called at the same
//!   time) are intact,
//! - the next request is served while the fault is still on,
//! - and once the fault clears, the faulty node answers again, without restarting anything.
//!
//! TLS faults (wrong CA, expired certificate) and restarts belong to an endpoint, and all virtual
//! nodes of one simulator share its endpoint; those rows use a second simulator (context `b`)
//! as the healthy side.
//!
//! With `FAULT_MATRIX_OUT=<file>` set, the matrix of the run is written there as a Markdown table
//! (`docs/reliability.md` quotes one).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use talos_config::TalosConfig;
use talos_mcp::{Clusters, TalosMcp};
use talos_sim::{CertFault, Fault, SimCluster, SimConfig};

/// The deadline of a unary call, and the idle limit of a stream, in this test.
const DEADLINE: Duration = Duration::from_secs(1);

/// The node that gets the per-node faults (talos-cp-3).
const FAULTY: &str = "127.0.10.13";

struct Fixture {
    h: common::Harness,
    a: SimCluster,
    b: SimCluster,
    rows: Vec<String>,
}

async fn fixture() -> Fixture {
    let a = SimCluster::start(SimConfig::default()).await.unwrap();
    let b = SimCluster::start(SimConfig::default()).await.unwrap();
    let (ca, cb) = (
        a.client_cert("os:admin").unwrap(),
        b.client_cert("os:admin").unwrap(),
    );
    let ctx = |name, sim: &SimCluster, client| talos_sim::pki::TalosconfigContext {
        name,
        endpoints: vec![sim.endpoint().to_string()],
        nodes: sim.nodes().into_iter().map(|n| n.address).collect(),
        ca_pem: Box::leak(sim.ca_pem().into_boxed_str()),
        client,
    };
    let yaml = talos_sim::pki::render_talosconfig("a", &[ctx("a", &a, &ca), ctx("b", &b, &cb)]);
    let config = TalosConfig::from_yaml(&yaml, "<faults>").unwrap();
    let client_settings = talos_client::ClientSettings {
        timeout: DEADLINE,
        stream_idle_timeout: DEADLINE,
        connect_timeout: DEADLINE,
        backoff_base: Duration::from_millis(10),
        ..Default::default()
    };
    let clusters =
        Clusters::from_talosconfig(config, None, talos_mcp::grpc_factory(client_settings));
    let dir = tempfile::tempdir().unwrap();
    let server = TalosMcp::new(clusters, common::settings(&dir)).unwrap();
    let h = common::connect(server, None, dir).await;
    Fixture {
        h,
        a,
        b,
        rows: Vec::new(),
    }
}

/// A tool call and how to recognise its result.
#[derive(Clone, Copy)]
enum Call {
    /// `talos_version`: one unary RPC per node.
    Version,
    /// `talos_service_logs` of apid: one server stream per node.
    Logs,
}

impl Call {
    fn tool(self) -> &'static str {
        match self {
            Self::Version => "talos_version",
            Self::Logs => "talos_service_logs",
        }
    }

    fn args(self, context: &str, nodes: &[String]) -> Value {
        let mut args = json!({"context": context, "nodes": nodes});
        if let Self::Logs = self {
            args["service"] = json!("apid");
            args["tail"] = json!(20);
        }
        args
    }

    /// Whether a node's successful result looks like this call's answer.
    fn result_ok(self, result: &Value) -> bool {
        match self {
            Self::Version => result["tag"] == "v1.11.5",
            Self::Logs => result["lines"].as_array().is_some_and(|l| l.len() == 20),
        }
    }
}

fn all_nodes(sim: &SimCluster) -> Vec<String> {
    sim.nodes().into_iter().map(|n| n.address).collect()
}

impl Fixture {
    /// Calls `call` on `nodes` of `context` and returns the per-node outcomes.
    async fn outcomes(&self, call: Call, context: &str, nodes: &[String]) -> Vec<Value> {
        let r = self.h.call(call.tool(), call.args(context, nodes)).await;
        assert_ne!(
            r.is_error,
            Some(true),
            "{} on {context} failed as a whole: {}",
            call.tool(),
            common::text(&r)
        );
        let s = r.structured_content.unwrap();
        assert_eq!(s["context"], context);
        s["nodes"].as_array().unwrap().clone()
    }

    /// Asserts every outcome succeeded with the expected answer; returns how many.
    fn assert_all_ok(call: Call, outcomes: &[Value], what: &str) -> usize {
        for o in outcomes {
            assert_eq!(o["ok"], true, "{what}: {o}");
            assert!(call.result_ok(&o["result"]), "{what}: {o}");
        }
        outcomes.len()
    }

    /// Asserts the faulty node's error: its kind, and a message naming node and endpoint.
    fn assert_failed(o: &Value, node: &str, endpoint: &str, kind: &str, what: &str) -> String {
        assert_eq!(o["node"], node, "{what}: {o}");
        assert_eq!(o["ok"], false, "{what}: {o}");
        assert_eq!(o["error"]["kind"], kind, "{what}: {o}");
        let msg = o["error"]["message"].as_str().unwrap().to_owned();
        assert!(
            msg.contains(node),
            "{what}: the message does not name the node: {msg}"
        );
        assert!(
            msg.contains(endpoint),
            "{what}: the message does not name the endpoint {endpoint}: {msg}"
        );
        msg
    }

    /// One fault on one node of five: the faulty node fails as expected, the other four answer in
    /// the same call, the next call is served, and clearing the fault is enough to recover.
    async fn node_fault(&mut self, label: &str, fault: Fault, call: Call, kind: &str) {
        let nodes = all_nodes(&self.a);
        let endpoint = self.a.endpoint().to_string();
        let healthy: Vec<String> = nodes.iter().filter(|n| *n != FAULTY).cloned().collect();
        self.a.set_fault(FAULTY, fault);

        let started = Instant::now();
        let out = self.outcomes(call, "a", &nodes).await;
        let took = started.elapsed();
        assert_eq!(out.len(), 5, "{label}");
        let mut intact = 0;
        let mut message = String::new();
        for o in &out {
            if o["node"] == FAULTY {
                message = Self::assert_failed(o, FAULTY, &endpoint, kind, label);
            } else {
                assert_eq!(o["ok"], true, "{label}: a healthy node failed: {o}");
                assert!(call.result_ok(&o["result"]), "{label}: {o}");
                intact += 1;
            }
        }
        assert_eq!(intact, 4, "{label}");

        // The next request, fault still on: the healthy nodes answer.
        let next = self.outcomes(call, "a", &healthy).await;
        Self::assert_all_ok(call, &next, label);

        // The fault clears: every node answers, nothing restarted.
        self.a.set_fault(FAULTY, Fault::None);
        let after = self.outcomes(call, "a", &nodes).await;
        Self::assert_all_ok(call, &after, label);

        self.row(label, call, kind, &message, "4/4", took);
    }

    /// A fault of sim `a`'s endpoint: every node of context `a` fails as expected while a call to
    /// context `b` made at the same time is intact; the next request is served; recovery follows
    /// once `clear` has run.
    async fn endpoint_fault(&mut self, label: &str, call: Call, kind: &str, expect: &str) {
        let nodes_a = all_nodes(&self.a);
        let nodes_b = all_nodes(&self.b);
        let endpoint = self.a.endpoint().to_string();
        let started = Instant::now();
        let (out_a, out_b) = tokio::join!(
            self.outcomes(call, "a", &nodes_a),
            self.outcomes(call, "b", &nodes_b)
        );
        let took = started.elapsed();
        let mut message = String::new();
        for (o, node) in out_a.iter().zip(&nodes_a) {
            message = Self::assert_failed(o, node, &endpoint, kind, label);
            assert!(message.contains(expect), "{label}: {message}");
        }
        let intact = Self::assert_all_ok(call, &out_b, label);
        let next = self.outcomes(call, "b", &nodes_b).await;
        Self::assert_all_ok(call, &next, label);
        self.row(
            label,
            call,
            kind,
            &message,
            &format!("{intact}/5 (cluster b)"),
            took,
        );
    }

    async fn assert_recovered(&self, call: Call, label: &str) {
        let nodes_a = all_nodes(&self.a);
        let after = self.outcomes(call, "a", &nodes_a).await;
        Self::assert_all_ok(call, &after, label);
    }

    fn row(
        &mut self,
        label: &str,
        call: Call,
        kind: &str,
        message: &str,
        intact: &str,
        took: Duration,
    ) {
        // The message up to the advice that follows the first `;`, with the run's port elided.
        let port = format!(":{}", self.a.endpoint().port());
        let head = message
            .split("; ")
            .next()
            .unwrap_or(message)
            .replace(&port, ":PORT");
        let head: String = head.chars().take(150).collect();
        self.rows.push(format!(
            "| {label} | `{}` | {kind} | {head} | {intact} | yes | yes | {} ms |",
            call.tool(),
            took.as_millis()
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_matrix() {
    let mut f = fixture().await;
    // Both clusters answer before any fault.
    f.assert_recovered(Call::Version, "baseline").await;

    f.node_fault(
        "unavailable",
        Fault::Unavailable,
        Call::Version,
        "Connection",
    )
    .await;
    f.node_fault(
        "latency 3 s (deadline 1 s)",
        Fault::Latency(Duration::from_secs(3)),
        Call::Version,
        "Timeout",
    )
    .await;
    f.node_fault(
        "stall (never answers)",
        Fault::Stall,
        Call::Version,
        "Timeout",
    )
    .await;
    for (code, kind) in [
        (tonic::Code::Unauthenticated, "Authentication"),
        (tonic::Code::PermissionDenied, "PermissionDenied"),
        (tonic::Code::NotFound, "NotFound"),
        (tonic::Code::DeadlineExceeded, "Timeout"),
        (tonic::Code::ResourceExhausted, "Api"),
        (tonic::Code::FailedPrecondition, "Api"),
        (tonic::Code::Aborted, "Api"),
        (tonic::Code::Internal, "Api"),
        (tonic::Code::Unimplemented, "Api"),
        (tonic::Code::Unknown, "Api"),
    ] {
        f.node_fault(
            &format!("status {code:?}"),
            Fault::Status {
                code,
                message: "injected by the fault matrix".into(),
            },
            Call::Version,
            kind,
        )
        .await;
    }
    f.node_fault(
        "mid-stream abort (after 1 KB)",
        Fault::AbortStreamAfter { bytes: 1000 },
        Call::Logs,
        "Connection",
    )
    .await;
    f.node_fault(
        "unavailable (stream)",
        Fault::Unavailable,
        Call::Logs,
        "Connection",
    )
    .await;
    f.node_fault("stall (stream)", Fault::Stall, Call::Logs, "Timeout")
        .await;

    // Endpoint faults: all of cluster a's nodes fail, cluster b is intact.
    // A certificate is only presented at the handshake: the connection the client already holds
    // keeps working. The endpoint restarts with the new certificate, as apid would, so the
    // client's next connection meets it.
    f.a.set_cert_fault(CertFault::WrongCa);
    f.a.restart(Duration::ZERO).await.unwrap();
    f.endpoint_fault(
        "wrong CA (endpoint)",
        Call::Version,
        "Authentication",
        "not signed by the talosconfig's CA",
    )
    .await;
    f.a.set_cert_fault(CertFault::None);
    f.assert_recovered(Call::Version, "wrong CA").await;

    f.a.set_cert_fault(CertFault::Expired);
    f.a.restart(Duration::ZERO).await.unwrap();
    f.endpoint_fault(
        "expired server certificate (endpoint)",
        Call::Version,
        "Authentication",
        "expired",
    )
    .await;
    f.a.set_cert_fault(CertFault::None);
    f.assert_recovered(Call::Version, "expired certificate")
        .await;

    // The simulator restarts while a call is in flight: four nodes have answered, the call to the
    // fifth is held (stall) when the endpoint goes away for 1.5 s. The held call ends with a
    // connection error (its retries meet the closed port); the other four results are intact.
    f.restart_during_call().await;

    if let Ok(path) = std::env::var("FAULT_MATRIX_OUT") {
        let mut table = String::from(
            "| fault | tool | error kind | message (first part) | healthy intact | next request served | recovered without restart | faulted call took |\n|---|---|---|---|---|---|---|---|\n",
        );
        for r in &f.rows {
            let _ = writeln!(table, "{r}");
        }
        std::fs::write(path, table).unwrap();
    }
    f.a.clone().shutdown().await;
    f.b.clone().shutdown().await;
}

impl Fixture {
    async fn restart_during_call(&mut self) {
        let label = "simulator restart during a call";
        let nodes = all_nodes(&self.a);
        let healthy: Vec<String> = nodes.iter().filter(|n| *n != FAULTY).cloned().collect();
        let endpoint = self.a.endpoint().to_string();
        self.a.set_fault(FAULTY, Fault::Stall);
        let sim = self.a.clone();
        let before: Vec<u64> = nodes.iter().map(|n| sim.calls(n, "Version")).collect();
        let restart = async move {
            // Once every node has the call (the four healthy ones answer at once, the fifth is
            // held), and well inside the 1 s deadline of the held call.
            for _ in 0..100 {
                let arrived = nodes
                    .iter()
                    .zip(&before)
                    .all(|(n, b)| sim.calls(n, "Version") > *b);
                if arrived {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            sim.restart(Duration::from_millis(1500)).await.unwrap();
        };
        let started = Instant::now();
        let all = all_nodes(&self.a);
        let (out, ()) = tokio::join!(self.outcomes(Call::Version, "a", &all), restart);
        let took = started.elapsed();
        let mut message = String::new();
        let mut intact = 0;
        for o in &out {
            if o["node"] == FAULTY {
                message = Self::assert_failed(o, FAULTY, &endpoint, "Connection", label);
            } else {
                assert_eq!(o["ok"], true, "{label}: {o}");
                intact += 1;
            }
        }
        assert_eq!(intact, 4, "{label}");
        // Served again on the same port: the next request is answered by the restarted server,
        // through the same MCP server and Talos client.
        let next = self.outcomes(Call::Version, "a", &healthy).await;
        Self::assert_all_ok(Call::Version, &next, label);
        self.a.set_fault(FAULTY, Fault::None);
        self.assert_recovered(Call::Version, label).await;
        self.row(label, Call::Version, "Connection", &message, "4/4", took);
    }
}
