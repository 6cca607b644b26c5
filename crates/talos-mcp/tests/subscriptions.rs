//! `resources/subscribe`: notifications fed by watches (a reboot in the simulator), the
//! per-session cap, unsubscribe and the end of the session stopping the watch, refusals.

#![allow(clippy::unwrap_used, clippy::expect_used, deprecated)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{
    ClientConfig, ProtocolVersion, ResourceUpdatedNotificationParam, SubscribeRequestParams,
    UnsubscribeRequestParams,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use talos_client::{
    CallOptions, GrpcTalosClient, Lifecycle as _, MockTalosApi, RebootMode, ResourceEvent,
    TalosApi, WatchStream,
};
use talos_config::TalosConfig;
use talos_mcp::{Clusters, TalosMcp};
use talos_sim::{SimCluster, SimConfig};
use tokio::sync::mpsc;

/// A client that passes every `notifications/resources/updated` on.
#[derive(Clone)]
struct Listener(mpsc::UnboundedSender<String>);

impl ClientHandler for Listener {
    async fn on_resource_updated(
        &self,
        params: ResourceUpdatedNotificationParam,
        _: NotificationContext<RoleClient>,
    ) {
        let _ = self.0.send(params.uri);
    }

    fn get_info(&self) -> ClientConfig {
        let mut info = ClientConfig::default();
        // resources/subscribe belongs to the revisions with the initialize handshake.
        info.protocol_version = ProtocolVersion::V_2025_11_25;
        info
    }
}

struct Session {
    client: RunningService<RoleClient, Listener>,
    updates: mpsc::UnboundedReceiver<String>,
}

async fn session(server: TalosMcp) -> Session {
    let (server_io, client_io) = tokio::io::duplex(1 << 20);
    let server = server.for_session();
    tokio::spawn(async move {
        if let Ok(running) = server.serve(server_io).await {
            let _ = running.waiting().await;
        }
    });
    let (tx, updates) = mpsc::unbounded_channel();
    let client = Listener(tx).serve(client_io).await.unwrap();
    Session { client, updates }
}

impl Session {
    async fn subscribe(&self, uri: &str) -> Result<(), rmcp::ServiceError> {
        self.client
            .subscribe(SubscribeRequestParams::new(uri))
            .await
    }

    async fn refused(&self, uri: &str) -> String {
        match self.subscribe(uri).await {
            Ok(()) => panic!("{uri} should be refused"),
            Err(e) => e.to_string(),
        }
    }

    /// The next notification (failing the test on a hang, not asserting any timing).
    async fn next_update(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(20), self.updates.recv())
            .await
            .expect("a notification")
            .expect("the client is gone")
    }
}

fn sim_server(sim: &SimCluster) -> TalosMcp {
    let yaml = sim.talosconfig("os:admin").unwrap();
    let config = TalosConfig::from_yaml(&yaml, "<sim>").unwrap();
    let settings = talos_client::ClientSettings {
        timeout: Duration::from_secs(5),
        stream_idle_timeout: Duration::from_secs(5),
        backoff_base: Duration::from_millis(10),
        ..Default::default()
    };
    let clusters = Clusters::from_talosconfig(config, None, talos_mcp::grpc_factory(settings));
    let dir = tempfile::tempdir().unwrap();
    TalosMcp::new(clusters, common::settings(&dir)).unwrap()
}

fn direct_client(sim: &SimCluster) -> GrpcTalosClient {
    let yaml = sim.talosconfig("os:admin").unwrap();
    let ctx = TalosConfig::from_yaml(&yaml, "<sim>")
        .unwrap()
        .context(None)
        .unwrap();
    GrpcTalosClient::new(&ctx).unwrap()
}

#[tokio::test]
async fn a_reboot_notifies_the_subscriber_and_the_watch_comes_back() {
    let sim = SimCluster::start(SimConfig {
        reboot_downtime: Duration::from_millis(800),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let node = sim.nodes()[4].address.clone();
    let mut s = session(sim_server(&sim)).await;
    let caps = s.client.peer_info().unwrap().capabilities.clone();
    assert_eq!(caps.resources.unwrap().subscribe, Some(true));

    let uri = format!("talos://talos-sim/nodes/{node}/resources/machinestatus");
    s.subscribe(&uri).await.unwrap();
    assert_eq!(sim.calls(&node, "State.Watch"), 1);
    direct_client(&sim)
        .reboot(&CallOptions::node(node.clone()), RebootMode::Default)
        .await
        .unwrap();
    // The node going down is one change...
    assert_eq!(s.next_update().await, uri);
    // ...and its state once the watch is open again is another.
    assert_eq!(s.next_update().await, uri);
    assert!(
        sim.calls(&node, "State.Watch") >= 2,
        "the watch was opened again"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn secrets_and_bad_uris_are_refused_like_reads() {
    let sim = SimCluster::start(SimConfig::default()).await.unwrap();
    let node = sim.nodes()[0].address.clone();
    let s = session(sim_server(&sim)).await;
    let base = format!("talos://talos-sim/nodes/{node}");
    for secret in [
        "osrootsecret",
        "OSRootSecrets.secrets.talos.dev",
        "machineconfig",
    ] {
        let refused = s.refused(&format!("{base}/resources/{secret}")).await;
        assert!(refused.contains("secrets"), "{secret}: {refused}");
    }
    assert!(
        s.refused(&format!("{base}/machineconfig"))
            .await
            .contains("secrets")
    );
    assert!(
        s.refused(&format!("{base}/resources/a%2Fb"))
            .await
            .contains("resource_type")
    );
    assert!(
        s.refused("talos://contexts")
            .await
            .contains("cannot subscribe")
    );
    assert!(
        s.refused("talos://talos-sim/nodes/10.9.9.9/version")
            .await
            .contains("10.9.9.9")
    );
    let long = format!("{base}/resources/{}", "a".repeat(600));
    assert!(s.refused(&long).await.contains("at most 512"));
    // None of them opened a watch.
    assert_eq!(sim.calls(&node, "State.Watch"), 0);
    sim.shutdown().await;
}

/// The sending side of one mock watch.
type WatchFeed = mpsc::Sender<talos_client::Result<ResourceEvent>>;

/// A mock whose watches stay open until dropped; the test keeps each watch's sender, whose
/// `closed()` says the watch has ended.
fn mock_watches() -> (MockTalosApi, Arc<Mutex<Vec<WatchFeed>>>) {
    let senders = Arc::new(Mutex::new(Vec::new()));
    let kept = senders.clone();
    let mut mock = MockTalosApi::new();
    mock.expect_watch().returning(move |_, _, _, _, _| {
        let (tx, rx) = mpsc::channel(4);
        kept.lock().unwrap().push(tx);
        let stream: WatchStream = Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }));
        Ok(stream)
    });
    (mock, senders)
}

fn mock_server(mock: MockTalosApi, nodes: &[&str]) -> TalosMcp {
    let api: Arc<dyn TalosApi> = Arc::new(mock);
    let dir = tempfile::tempdir().unwrap();
    TalosMcp::new(common::mock_clusters(api, nodes), common::settings(&dir)).unwrap()
}

async fn closed(tx: &WatchFeed) {
    tokio::time::timeout(Duration::from_secs(10), tx.closed())
        .await
        .expect("the watch was not ended");
}

#[tokio::test]
async fn a_session_holds_at_most_sixteen_subscriptions() {
    let (mock, senders) = mock_watches();
    let nodes: Vec<String> = (1..=9).map(|n| format!("10.5.0.{n}")).collect();
    let names: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let s = session(mock_server(mock, &names)).await;
    let uris: Vec<String> = nodes
        .iter()
        .flat_map(|n| ["services", "version"].map(|v| format!("talos://mock/nodes/{n}/{v}")))
        .collect();
    for uri in &uris[..16] {
        s.subscribe(uri).await.unwrap();
    }
    // Subscribing again to one held is no new subscription.
    s.subscribe(&uris[3]).await.unwrap();
    assert_eq!(senders.lock().unwrap().len(), 16);
    let refused = s.refused(&uris[16]).await;
    assert!(refused.contains("16 subscriptions"), "{refused}");
    // Unsubscribing frees a place.
    s.client
        .unsubscribe(UnsubscribeRequestParams::new(uris[0].as_str()))
        .await
        .unwrap();
    s.subscribe(&uris[16]).await.unwrap();
    assert_eq!(senders.lock().unwrap().len(), 17);
}

#[tokio::test]
async fn unsubscribing_and_leaving_end_the_watches() {
    let (mock, senders) = mock_watches();
    let s = session(mock_server(mock, &["10.5.0.2", "10.5.0.3"])).await;
    s.subscribe("talos://mock/nodes/10.5.0.2/services")
        .await
        .unwrap();
    s.subscribe("talos://mock/nodes/10.5.0.3/services")
        .await
        .unwrap();
    let (first, second) = {
        let senders = senders.lock().unwrap();
        (senders[0].clone(), senders[1].clone())
    };
    s.client
        .unsubscribe(UnsubscribeRequestParams::new(
            "talos://mock/nodes/10.5.0.2/services",
        ))
        .await
        .unwrap();
    closed(&first).await;
    assert!(!second.is_closed(), "the other subscription still watches");
    // The session ends: its server instance goes, and its watches with it.
    s.client.cancel().await.unwrap();
    closed(&second).await;
}

#[tokio::test]
async fn changes_are_coalesced_into_one_notification_per_interval() {
    let (mock, senders) = mock_watches();
    let mut s = session(mock_server(mock, &["10.5.0.2"])).await;
    let uri = "talos://mock/nodes/10.5.0.2/services";
    s.subscribe(uri).await.unwrap();
    let tx = senders.lock().unwrap()[0].clone();
    let event = |kind: &str| {
        Ok(ResourceEvent {
            kind: kind.into(),
            resource: Some(talos_client::Resource {
                id: "kubelet".into(),
                ..Default::default()
            }),
            old: None,
        })
    };
    // The initial listing is what the client reads: no notification for it.
    tx.send(event("created")).await.unwrap();
    tx.send(Ok(ResourceEvent {
        kind: "bootstrapped".into(),
        resource: None,
        old: None,
    }))
    .await
    .unwrap();
    for _ in 0..5 {
        tx.send(event("updated")).await.unwrap();
    }
    assert_eq!(s.next_update().await, uri);
    // Five changes at once: one notification now, at most one more for the rest.
    let marker = "talos://mock/nodes/10.5.0.2/version";
    s.subscribe(marker).await.unwrap();
    let tx2 = senders.lock().unwrap()[1].clone();
    tx2.send(Ok(ResourceEvent {
        kind: "bootstrapped".into(),
        resource: None,
        old: None,
    }))
    .await
    .unwrap();
    tx2.send(event("updated")).await.unwrap();
    let mut before_marker = 0;
    loop {
        let next = s.next_update().await;
        if next == marker {
            break;
        }
        before_marker += 1;
    }
    assert!(
        before_marker <= 1,
        "{before_marker} more notifications for one burst"
    );
}
