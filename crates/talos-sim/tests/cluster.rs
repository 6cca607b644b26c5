//! The simulator's own surface and the standalone binary (RPC behaviour over mTLS is in `grpc.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use talos_sim::{Fault, NodeRole, SimCluster, SimConfig, SimError};

#[tokio::test]
async fn nodes_are_labelled_and_ordered() {
    let sim = SimCluster::start(SimConfig {
        control_planes: 3,
        workers: 250,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let nodes = sim.nodes();
    assert_eq!(nodes.len(), 253);
    assert_eq!(
        (nodes[0].address.as_str(), nodes[0].hostname.as_str()),
        ("127.0.10.11", "talos-cp-1")
    );
    assert_eq!(nodes[3].hostname, "talos-worker-1");
    assert_eq!(
        nodes
            .iter()
            .filter(|n| n.role == NodeRole::ControlPlane)
            .count(),
        3
    );
    assert_eq!(nodes[200].address, "127.0.11.11");
    let unique: std::collections::HashSet<_> = nodes.iter().map(|n| &n.address).collect();
    assert_eq!(unique.len(), nodes.len());
    assert!(sim.endpoint().ip().is_loopback() && sim.endpoint().port() != 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn talosconfig_points_at_the_endpoint_with_talos_key_label() {
    let sim = SimCluster::start(SimConfig::default()).await.unwrap();
    let yaml = sim.talosconfig("os:reader").unwrap();
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&yaml).unwrap();
    let ctx = &doc["contexts"]["talos-sim"];
    assert_eq!(doc["context"].as_str(), Some("talos-sim"));
    assert_eq!(
        ctx["endpoints"][0].as_str(),
        Some(sim.endpoint().to_string().as_str())
    );
    assert_eq!(ctx["nodes"].as_sequence().unwrap().len(), 5);
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD
        .decode(ctx["key"].as_str().unwrap())
        .unwrap();
    assert!(String::from_utf8(key).unwrap().starts_with(concat!(
        "-----BEGIN ED25519 ",
        "PRIVATE",
        " KEY-----"
    )));
    sim.shutdown().await;
}

#[tokio::test]
async fn faults_and_state_are_per_node() {
    let sim = SimCluster::start(SimConfig::default()).await.unwrap();
    let a = sim.nodes()[0].address.clone();
    let b = sim.nodes()[1].hostname.clone();
    sim.set_fault(&a, Fault::Latency(Duration::from_millis(5)));
    sim.set_fault("no-such-node", Fault::Stall); // ignored
    assert!(sim.is_up(&a) && sim.is_up(&b));
    assert!(sim.boot_id(&a).unwrap() != sim.boot_id(&b).unwrap());
    assert_eq!(sim.calls(&a, "Version"), 0);
    assert_eq!(sim.boot_id("no-such-node"), None);
    sim.shutdown().await;
}

#[tokio::test]
async fn refuses_impossible_configs_and_busy_ports() {
    let err = SimCluster::start(SimConfig {
        control_planes: 0,
        ..SimConfig::default()
    })
    .await
    .unwrap_err();
    assert!(matches!(err, SimError::Config(_)), "{err}");

    let sim = SimCluster::start(SimConfig::default()).await.unwrap();
    let err = SimCluster::start(SimConfig {
        bind: sim.endpoint(),
        ..SimConfig::default()
    })
    .await
    .unwrap_err();
    assert!(matches!(err, SimError::Bind { .. }), "{err}");
    sim.shutdown().await;
}

#[tokio::test]
async fn restart_closes_the_port_then_serves_again_on_it_with_the_same_state() {
    let sim = SimCluster::start(SimConfig::default()).await.unwrap();
    let ep = sim.endpoint();
    let a = sim.nodes()[0].address.clone();
    let boot = sim.boot_id(&a);
    let restarting = sim.clone();
    let task = tokio::spawn(async move { restarting.restart(Duration::from_millis(500)).await });
    // While it is down nothing listens on the port (poll until the old listener is gone).
    let mut refused = false;
    for _ in 0..40 {
        if tokio::net::TcpStream::connect(ep).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the port stayed open during the restart");
    task.await.unwrap().unwrap();
    assert_eq!(sim.endpoint(), ep);
    tokio::net::TcpStream::connect(ep).await.unwrap();
    // State survives: the same nodes with the same boot ids.
    assert_eq!(sim.boot_id(&a), boot);
    assert_eq!(sim.nodes().len(), 5);
    sim.shutdown().await;
}

#[test]
fn planted_secrets_are_distinctive() {
    for s in talos_sim::PLANTED_SECRETS {
        assert!(s.starts_with("SIM-SECRET-") && s.len() > 15);
    }
}

#[test]
fn standalone_binary_writes_a_private_talosconfig_and_serves() {
    use std::io::Read as _;
    let dir = std::env::temp_dir().join(format!(
        "talos-sim-bin-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("talosconfig.yaml");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_talos-sim"))
        .args([
            "--nodes",
            "1",
            "--workers",
            "1",
            "--role",
            "os:reader",
            "--talosconfig",
        ])
        .arg(&path)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !path.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Give the writer a moment to finish the file.
    std::thread::sleep(Duration::from_millis(100));
    let yaml = std::fs::read_to_string(&path);
    let mode = std::fs::metadata(&path).map(|m| {
        use std::os::unix::fs::PermissionsExt as _;
        m.permissions().mode() & 0o777
    });
    let reachable = yaml.as_ref().ok().and_then(|y| {
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(y).ok()?;
        let endpoint = doc["contexts"]["talos-sim"]["endpoints"][0]
            .as_str()?
            .to_owned();
        let nodes = doc["contexts"]["talos-sim"]["nodes"].as_sequence()?.len();
        std::net::TcpStream::connect(&endpoint).ok()?;
        Some((endpoint, nodes))
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);

    assert_eq!(mode.unwrap(), 0o600);
    let (endpoint, nodes) = reachable.expect("talosconfig names a listening endpoint");
    assert_eq!(nodes, 2);
    assert!(
        stderr.contains(&endpoint),
        "endpoint logged to stderr: {stderr}"
    );
}
