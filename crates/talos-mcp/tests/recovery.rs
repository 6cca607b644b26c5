//! Backup and disaster recovery against talos-sim over mTLS: snapshot (verified, retained),
//! verification and listing, a quorum loss, recovery on one node with the snapshot's revision,
//! refusals (healthy cluster, corrupted file, paths outside the artifact directory), the first
//! bootstrap, and machine-configuration backups.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use talos_mcp::safety::{ConfirmMode, SafetySettings, TokenIssuer};
use talos_sim::SimConfig;

const CP1: &str = "127.0.10.11";
const W1: &str = "127.0.10.14";

async fn harness(retention: usize) -> common::Harness {
    common::with_sim(SimConfig::default(), |s| {
        s.snapshot_retention = retention;
        s.safety = Arc::new(SafetySettings {
            allow_write: true,
            allow_destructive: true,
            confirm: ConfirmMode::Token,
            confirm_writes: false,
            tokens: TokenIssuer::random(Duration::from_secs(300)),
        });
    })
    .await
}

/// A change with token confirmation: the plan (nothing done), then the confirmed call's
/// structured content. Returns (plan text, outcome).
async fn confirmed(h: &common::Harness, tool: &str, args: Value) -> (String, Value) {
    let first = h.call(tool, args.clone()).await;
    assert_ne!(
        first.is_error,
        Some(true),
        "{tool}: {}",
        common::text(&first)
    );
    let plan = first.structured_content.clone().unwrap();
    assert_eq!(plan["status"], "confirmation_required", "{plan}");
    let mut args = args;
    args["confirmation_token"] = plan["confirmation_token"].clone();
    let done = h.ok(tool, args).await;
    assert_eq!(done["status"], "done", "{done}");
    (common::text(&first), done["outcome"].clone())
}

fn name_of(path: &str) -> String {
    std::path::Path::new(path)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn snapshot_verify_quorum_loss_recover_brings_back_the_snapshots_revision() {
    let h = harness(5).await;
    let sim = h.sim.clone().unwrap();
    let (revision, _) = sim.etcd_revision();

    let (_, snap) = confirmed(&h, "talos_etcd_snapshot", json!({"node": CP1})).await;
    assert_eq!(snap["revision"], revision, "{snap}");
    let path = snap["path"].as_str().unwrap().to_owned();
    let name = name_of(&path);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(std::path::Path::new(&path)), 0o600);
        assert_eq!(mode(&h.dir.path().join("artifacts")), 0o700);
    }

    // Verification without a cluster, by name and by full path; and the listing.
    for given in [name.as_str(), path.as_str()] {
        let v = h
            .ok("talos_etcd_snapshot_verify", json!({"path": given}))
            .await;
        assert_eq!(v["artifacts"][0]["revision"], revision, "{v}");
        assert_eq!(v["artifacts"][0]["sha256"], snap["sha256"]);
    }
    let ours = h
        .ok(
            "talos_etcd_snapshot_verify",
            json!({"context": "talos-sim"}),
        )
        .await;
    assert_eq!(ours["artifacts"].as_array().unwrap().len(), 1, "{ours}");
    let listed = h.ok("talos_etcd_snapshot_verify", json!({})).await;
    let entry = &listed["artifacts"][0];
    assert_eq!(
        (
            &entry["name"],
            &entry["kind"],
            &entry["context"],
            &entry["node"]
        ),
        (
            &json!(name),
            &json!("snapshot"),
            &json!("talos-sim"),
            &json!(CP1)
        ),
        "{listed}"
    );
    assert_eq!(entry["sha256"], snap["sha256"]);

    // A healthy cluster is never recovered: refused before any confirmation or upload.
    let healthy = h
        .err("talos_etcd_recover", json!({"node": CP1, "path": name}))
        .await;
    assert!(healthy.contains("etcd is running"), "{healthy}");

    sim.lose_etcd_quorum();
    // A corrupted copy is refused before anything reaches the node.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[9000] ^= 0x10;
    std::fs::write(h.dir.path().join("artifacts/broken.snapshot"), &bytes).unwrap();
    let broken = h
        .err(
            "talos_etcd_recover",
            json!({"node": CP1, "path": "broken.snapshot"}),
        )
        .await;
    assert!(broken.contains("failed verification"), "{broken}");
    let outside = h
        .err(
            "talos_etcd_recover",
            json!({"node": CP1, "path": "../broken.snapshot"}),
        )
        .await;
    assert!(outside.contains("artifact directory"), "{outside}");
    // A worker runs no etcd.
    let worker = h
        .err("talos_etcd_recover", json!({"node": W1, "path": name}))
        .await;
    assert!(worker.contains("not a control plane"), "{worker}");
    assert_eq!(sim.calls(CP1, "EtcdRecover"), 0, "nothing was uploaded");

    // The confirmation shows the snapshot's time, revision and hash.
    let (plan, out) = confirmed(&h, "talos_etcd_recover", json!({"node": CP1, "path": name})).await;
    for needle in [
        format!("revision {revision}"),
        snap["sha256"].as_str().unwrap().to_owned(),
        "taken 20".to_owned(),
    ] {
        assert!(plan.contains(&needle), "{needle} not in the plan: {plan}");
    }
    assert_eq!(out["members"].as_array().unwrap().len(), 3, "{out}");
    assert_eq!(sim.etcd_revision(), (revision, true));
    let status = h.ok("talos_etcd_status", json!({})).await;
    assert_eq!(status["verdict"], "healthy", "{status}");
    // A new snapshot holds the recovered revision.
    let (_, again) = confirmed(&h, "talos_etcd_snapshot", json!({"node": CP1})).await;
    assert_eq!(again["revision"], revision);
}

#[tokio::test]
async fn skipping_the_hash_check_is_part_of_what_is_confirmed() {
    let h = harness(5).await;
    let sim = h.sim.clone().unwrap();
    let (_, snap) = confirmed(&h, "talos_etcd_snapshot", json!({"node": CP1})).await;
    let name = name_of(snap["path"].as_str().unwrap());
    sim.lose_etcd_quorum();
    let plain = h
        .call("talos_etcd_recover", json!({"node": CP1, "path": name}))
        .await;
    let token = plain.structured_content.unwrap()["confirmation_token"].clone();
    // The token of the plain recovery does not confirm one that skips the hash check.
    let skip = h
        .err(
            "talos_etcd_recover",
            json!({"node": CP1, "path": name, "skip_hash_check": true, "confirmation_token": token}),
        )
        .await;
    assert!(skip.to_lowercase().contains("token"), "{skip}");
    assert_eq!(sim.calls(CP1, "EtcdRecover"), 0);
}

#[tokio::test]
async fn retention_keeps_exactly_n_snapshots_per_context() {
    let h = harness(2).await;
    let mut paths = Vec::new();
    for _ in 0..4 {
        let (_, snap) = confirmed(&h, "talos_etcd_snapshot", json!({"node": CP1})).await;
        paths.push(snap["path"].as_str().unwrap().to_owned());
    }
    let kept: Vec<String> = std::fs::read_dir(h.dir.path().join("artifacts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".snapshot"))
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    for p in &paths[2..] {
        assert!(std::path::Path::new(p).exists(), "the newest are kept");
    }
}

#[tokio::test]
async fn bootstrap_runs_once_on_a_new_cluster() {
    let h = harness(5).await;
    let sim = h.sim.clone().unwrap();
    let refused = h.err("talos_bootstrap", json!({"node": CP1})).await;
    assert!(refused.contains("already has 3 member"), "{refused}");
    sim.unbootstrap_etcd();
    let worker = h.err("talos_bootstrap", json!({"node": W1})).await;
    assert!(worker.contains("not a control plane"), "{worker}");
    let (_, out) = confirmed(&h, "talos_bootstrap", json!({"node": CP1})).await;
    assert_eq!(out["members"].as_array().unwrap().len(), 3, "{out}");
    assert_eq!(sim.etcd_revision(), (1, true));
}

#[tokio::test]
async fn config_backups_are_private_files_and_never_show_secrets() {
    let h = harness(1).await;
    let mut first = None;
    for _ in 0..2 {
        let r = h
            .call("talos_config_backup", json!({"nodes": [CP1, W1]}))
            .await;
        assert_ne!(r.is_error, Some(true), "{}", common::text(&r));
        let shown = format!(
            "{}{}",
            common::text(&r),
            r.structured_content.clone().unwrap()
        );
        for secret in talos_sim::PLANTED_SECRETS {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
        let sc = r.structured_content.unwrap();
        let cp = &sc["nodes"][0]["result"];
        assert_eq!(cp["machine_type"], "controlplane", "{sc}");
        let path = cp["path"].as_str().unwrap().to_owned();
        let content = std::fs::read_to_string(&path).unwrap();
        assert!(
            talos_sim::PLANTED_SECRETS
                .iter()
                .any(|s| content.contains(s)),
            "the backup is the whole configuration"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        if let Some(old) = first.replace(path) {
            // Retention 1 per node: the older backup of the node is gone.
            assert!(!std::path::Path::new(&old).exists());
            assert_eq!(cp["deleted"][0], json!(name_of(&old)));
        }
    }
}
