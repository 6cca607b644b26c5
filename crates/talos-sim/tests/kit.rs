//! The simulator as a test kit: admission by role for every method, the builder (versions,
//! config patches, several clusters), contexts and talosconfig files, what nodes received, and
//! clearing faults.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use talos_proto::machine::{self, apply_configuration_request::Mode};
use talos_sim::admission::{self, Access, Role};
use talos_sim::{CertFault, Fault, SimCluster, UpgradeFault};
use tonic::Code;

/// Calls `path` with an empty message as `role` (forwarding `forwarded` roles in `talos-role`
/// metadata), targeted at `node`, and returns whether the call got past admission: `false` only
/// for `PermissionDenied`. Every method is called as a server stream, so the answer is known
/// once the response headers arrive, whatever the method streams.
async fn admitted(
    channel: &tonic::transport::Channel,
    path: &'static str,
    node: &str,
    forwarded: Option<&str>,
) -> bool {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let mut req = to(node, ());
    if let Some(role) = forwarded {
        req.metadata_mut()
            .insert("talos-role", role.parse().unwrap());
    }
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let result = grpc
        .server_streaming(req, http::uri::PathAndQuery::from_static(path), codec)
        .await;
    match result {
        Ok(_) => true,
        Err(status) => status.code() != Code::PermissionDenied,
    }
}

#[tokio::test]
async fn every_method_admits_exactly_the_roles_of_its_rule() {
    let sim = SimCluster::builder()
        .control_planes(1)
        .workers(1)
        .start()
        .await
        .unwrap();
    // (certificate role, forwarded roles, the roles the caller acts with)
    let callers: [(&str, Option<&str>, Vec<Role>); 7] = [
        ("os:admin", None, vec![Role::Admin]),
        ("os:operator", None, vec![Role::Operator]),
        ("os:reader", None, vec![Role::Reader]),
        ("os:etcd:backup", None, vec![Role::EtcdBackup]),
        ("os:impersonator", None, vec![Role::Impersonator]),
        ("os:impersonator", Some("os:operator"), vec![Role::Operator]),
        // Only an impersonator's forwarded roles count.
        ("os:reader", Some("os:admin"), vec![Role::Reader]),
    ];
    for (cert, forwarded, acting) in &callers {
        let channel = channel(&sim, cert).await;
        for (path, access) in admission::RULES {
            let expected = access.allows(acting);
            assert_eq!(
                admitted(&channel, path, "talos-worker-1", *forwarded).await,
                expected,
                "{cert} (forwarding {forwarded:?}) on {path}: expected admitted={expected}"
            );
        }
        // A method missing from the table is admin-only, as apid's fallback.
        assert_eq!(
            admitted(
                &channel,
                "/machine.MachineService/NoSuchMethod",
                "talos-worker-1",
                *forwarded
            )
            .await,
            acting.contains(&Role::Admin),
            "{cert} on an unknown method"
        );
    }
}

#[test]
fn the_table_matches_apid_on_the_methods_that_matter() {
    let cases = [
        ("/machine.MachineService/Version", Access::Read),
        ("/machine.MachineService/Reboot", Access::Operate),
        ("/machine.MachineService/ServiceRestart", Access::Operate),
        ("/machine.MachineService/ApplyConfiguration", Access::Admin),
        ("/machine.MachineService/Read", Access::Admin),
        ("/machine.MachineService/Kubeconfig", Access::Admin),
        ("/machine.MachineService/Upgrade", Access::Admin),
        ("/machine.LifecycleService/Upgrade", Access::Admin),
        ("/machine.MachineService/EtcdSnapshot", Access::EtcdBackup),
        ("/machine.MachineService/EtcdStatus", Access::EtcdRead),
        ("/cosi.resource.State/Update", Access::Admin),
        ("/machine.MachineService/EtcdRecover", Access::Admin),
        ("/machine.MachineService/Bootstrap", Access::Admin),
    ];
    for (path, access) in cases {
        assert_eq!(admission::required(path), access, "{path}");
    }
    assert!(!Access::Operate.allows(&[Role::Reader]));
    assert!(!Access::Admin.allows(&[Role::Operator]));
    assert!(Access::EtcdBackup.allows(&[Role::EtcdBackup]));
    assert!(!Access::Read.allows(&[Role::EtcdBackup]));
    assert!(!Access::Read.allows(&[Role::Impersonator]));
}

#[tokio::test]
async fn builder_sets_versions_config_and_names_per_cluster() {
    let a = SimCluster::builder()
        .control_planes(1)
        .workers(2)
        .version("v1.11.5")
        .node_version("talos-worker-2", "v1.10.7")
        .node_version("127.0.10.11", "v1.12.0")
        .start()
        .await
        .unwrap();
    let b = SimCluster::builder()
        .name("prod")
        .control_planes(1)
        .workers(0)
        .machine_config_patch("cluster:\n  network:\n    cni:\n      name: none\nmachine:\n  install:\n    disk: /dev/nvme0n1\n")
        .start()
        .await
        .unwrap();
    assert_eq!(a.version("talos-cp-1").as_deref(), Some("v1.12.0"));
    assert_eq!(a.version("talos-worker-1").as_deref(), Some("v1.11.5"));
    assert_eq!(a.version("talos-worker-2").as_deref(), Some("v1.10.7"));
    assert_ne!(a.endpoint(), b.endpoint());
    assert_ne!(a.ca_pem(), b.ca_pem());

    // The nodes report what the builder set, through a real client.
    let mut m = machine(&a, "os:reader").await;
    let v = m
        .version(to("talos-worker-2", ()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.messages[0].version.as_ref().unwrap().tag, "v1.10.7");

    // The patch is in the machine config, and each cluster has its own secrets.
    let config = |sim: &SimCluster| {
        let sim = sim.clone();
        async move {
            let mut s = state(&sim, "os:admin").await;
            let r = s
                .get(to(
                    "talos-cp-1",
                    talos_proto::cosi::resource::GetRequest {
                        namespace: "config".into(),
                        r#type: "MachineConfigs.config.talos.dev".into(),
                        id: "v1alpha1".into(),
                        options: None,
                    },
                ))
                .await
                .unwrap()
                .into_inner();
            r.resource.unwrap().spec.unwrap().yaml_spec
        }
    };
    let (ca, cb) = (config(&a).await, config(&b).await);
    assert!(
        cb.contains("name: none")
            && cb.contains("/dev/nvme0n1")
            && cb.contains("clusterName: prod")
    );
    assert!(!ca.contains("/dev/nvme0n1"));
    assert!(ca.contains("token: SIM-SECRET-BOOTSTRAP-TOKEN\n"));
    assert!(cb.contains("SIM-SECRET-BOOTSTRAP-TOKEN-PROD"), "{cb}");

    // A bad patch or name is refused at start.
    let bad = SimCluster::builder()
        .machine_config_patch("[1, 2]")
        .start()
        .await;
    assert!(
        bad.unwrap_err()
            .to_string()
            .contains("machine_config_patch")
    );
    let bad = SimCluster::builder().name("a b").start().await;
    assert!(bad.is_err());
}

#[tokio::test]
async fn contexts_and_talosconfigs_for_one_or_several_clusters() {
    let a = SimCluster::builder()
        .control_planes(1)
        .workers(0)
        .start()
        .await
        .unwrap();
    let b = SimCluster::builder()
        .name("prod")
        .control_planes(1)
        .workers(1)
        .start()
        .await
        .unwrap();
    let ctx = b.context("os:reader").unwrap();
    assert_eq!(ctx.name(), "prod");
    assert_eq!(ctx.nodes(), ["127.0.10.11", "127.0.10.12"]);
    assert_eq!(ctx.endpoints()[0].port(), b.endpoint().port());

    let dir = tempfile::tempdir().unwrap();
    let path = a.write_talosconfig(dir.path(), "os:admin").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let loaded = talos_config::TalosConfig::from_file(&path).unwrap();
    assert_eq!(loaded.current_context(), Some("talos-sim"));

    let fleet = SimCluster::fleet_talosconfig(&[&a, &b], "os:reader").unwrap();
    let config = talos_config::TalosConfig::from_yaml(&fleet, "<fleet>").unwrap();
    assert_eq!(config.context_names(), ["prod", "talos-sim"]);
    assert_eq!(config.current_context(), Some("talos-sim"));
    assert!(config.context(Some("prod")).is_ok());
    // Two clusters of one name cannot share a talosconfig.
    assert!(SimCluster::fleet_talosconfig(&[&a, &a], "os:reader").is_err());
}

#[tokio::test]
async fn nodes_record_what_they_received() {
    let sim = SimCluster::builder()
        .control_planes(1)
        .workers(1)
        .start()
        .await
        .unwrap();
    let mut admin = machine(&sim, "os:admin").await;
    let mut reader = machine(&sim, "os:reader").await;
    reader.version(to("talos-worker-1", ())).await.unwrap();
    expect_code(
        reader
            .reboot(to("talos-worker-1", machine::RebootRequest { mode: 0 }))
            .await,
        Code::PermissionDenied,
    );
    let config = b"version: v1alpha1\nmachine:\n  token: APPLIED-TOKEN\n".to_vec();
    admin
        .apply_configuration(to(
            "talos-worker-1",
            machine::ApplyConfigurationRequest {
                data: config.clone(),
                mode: Mode::NoReboot as i32,
                dry_run: true,
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let got = sim.received("talos-worker-1");
    let methods: Vec<&str> = got.iter().map(|c| c.method.as_str()).collect();
    assert_eq!(
        methods,
        [
            "/machine.MachineService/Version",
            "/machine.MachineService/Reboot",
            "/machine.MachineService/ApplyConfiguration"
        ]
    );
    assert_eq!(got[0].detail, None);
    // The refused reboot is recorded but did not get as far as its request.
    assert_eq!(got[1].detail, None);
    let detail = got[2].detail.as_deref().unwrap();
    assert!(
        detail.contains("NoReboot")
            && detail.contains("dry_run=true")
            && detail.contains(&format!("config_bytes={}", config.len()))
            && detail.contains(&talos_sim::fingerprint(&config)),
        "{detail}"
    );
    assert!(!detail.contains("APPLIED-TOKEN"));
    assert!(sim.received("talos-cp-1").is_empty());
    assert!(sim.received("no-such-node").is_empty());
}

#[tokio::test]
async fn clear_faults_undoes_every_fault() {
    let sim = SimCluster::builder()
        .control_planes(1)
        .workers(1)
        .start()
        .await
        .unwrap();
    sim.set_fault("talos-worker-1", Fault::Unavailable);
    sim.set_upgrade_fault("talos-worker-1", UpgradeFault::ImagePullFails);
    sim.set_legacy_api("talos-worker-1", true);
    sim.set_cert_fault(CertFault::WrongCa);
    sim.clear_faults();
    let mut m = machine(&sim, "os:admin").await;
    m.version(to("talos-worker-1", ())).await.unwrap();
    let mut images = talos_proto::machine::image_service_client::ImageServiceClient::new(
        channel(&sim, "os:admin").await,
    );
    // The modern API answers again, and pulls work.
    let pulled = images
        .pull(to(
            "talos-worker-1",
            talos_proto::machine::ImageServicePullRequest {
                image_ref: "registry.k8s.io/pause:3.10".into(),
                ..Default::default()
            },
        ))
        .await;
    assert!(pulled.is_ok(), "{pulled:?}");
}

#[test]
fn the_builder_sets_the_node_latency() {
    let latency = std::time::Duration::from_millis(20);
    let builder = talos_sim::SimCluster::builder().node_latency(latency);
    assert_eq!(builder.config().node_latency, latency);
    assert!(
        talos_sim::SimCluster::builder()
            .config()
            .node_latency
            .is_zero()
    );
}
