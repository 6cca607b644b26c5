//! Wire checks: representative messages of every service round-trip, the easy-to-get-wrong field
//! numbers are pinned, and server stubs carry the exact gRPC service names.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use prost::Message;
use talos_proto::{cluster, common, cosi, machine, storage, time};

/// Field numbers (in order) of the top-level fields present in an encoded message.
fn field_numbers(bytes: &[u8]) -> Vec<u32> {
    fn varint(buf: &mut &[u8]) -> u64 {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = buf[0];
            *buf = &buf[1..];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
        }
        value
    }
    let mut buf = bytes;
    let mut numbers = Vec::new();
    while !buf.is_empty() {
        let key = varint(&mut buf);
        numbers.push(u32::try_from(key >> 3).unwrap());
        match key & 7 {
            0 => {
                varint(&mut buf);
            }
            1 => buf = &buf[8..],
            2 => {
                let len = usize::try_from(varint(&mut buf)).unwrap();
                buf = &buf[len..];
            }
            5 => buf = &buf[4..],
            other => panic!("unexpected wire type {other}"),
        }
    }
    numbers
}

fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(msg: &M) {
    let bytes = msg.encode_to_vec();
    assert!(
        !bytes.is_empty(),
        "representative message encodes to something: {msg:?}"
    );
    assert_eq!(&M::decode(bytes.as_slice()).unwrap(), msg);
}

fn meta(host: &str) -> Option<common::Metadata> {
    Some(common::Metadata {
        hostname: host.into(),
        error: String::new(),
        status: None,
    })
}

#[test]
fn apply_configuration_request_uses_fields_1_4_5_6() {
    let req = machine::ApplyConfigurationRequest {
        data: b"version: v1alpha1".to_vec(),
        mode: machine::apply_configuration_request::Mode::Auto as i32,
        dry_run: true,
        try_mode_timeout: Some(prost_types::Duration {
            seconds: 60,
            nanos: 0,
        }),
    };
    assert_eq!(field_numbers(&req.encode_to_vec()), vec![1, 4, 5, 6]);
    // Zero is the deprecated REBOOT mode, which is why callers must always set the mode.
    assert_eq!(machine::apply_configuration_request::Mode::Reboot as i32, 0);
    assert_eq!(machine::apply_configuration_request::Mode::Auto as i32, 1);
    assert_eq!(
        machine::apply_configuration_request::Mode::NoReboot as i32,
        2
    );
    assert_eq!(machine::apply_configuration_request::Mode::Staged as i32, 3);
    assert_eq!(machine::apply_configuration_request::Mode::Try as i32, 4);
}

#[test]
fn etcd_member_starts_at_field_2() {
    let member = machine::EtcdMember {
        id: 7,
        hostname: "cp-1".into(),
        peer_urls: vec!["https://10.5.0.2:2380".into()],
        client_urls: vec!["https://10.5.0.2:2379".into()],
        is_learner: true,
    };
    assert_eq!(field_numbers(&member.encode_to_vec()), vec![2, 3, 4, 5, 6]);
}

#[test]
fn data_and_metadata_numbers() {
    let data = common::Data {
        metadata: meta("n1"),
        bytes: b"chunk".to_vec(),
    };
    assert_eq!(field_numbers(&data.encode_to_vec()), vec![1, 2]);
    let status_meta = common::Metadata {
        hostname: "h".into(),
        error: "e".into(),
        status: Some(talos_proto::google::rpc::Status {
            code: 14,
            message: "unavailable".into(),
            details: vec![],
        }),
    };
    assert_eq!(field_numbers(&status_meta.encode_to_vec()), vec![1, 2, 3]);
}

#[test]
fn machine_service_messages_round_trip() {
    round_trip(&machine::VersionResponse {
        messages: vec![machine::Version {
            metadata: meta("cp-1"),
            version: Some(machine::VersionInfo {
                tag: "v1.11.5".into(),
                sha: "abc".into(),
                built: "2025".into(),
                go_version: "go1.24".into(),
                os: "linux".into(),
                arch: "amd64".into(),
            }),
            platform: Some(machine::PlatformInfo {
                name: "metal".into(),
                mode: "metal".into(),
            }),
            features: Some(machine::FeaturesInfo { rbac: true }),
        }],
    });
    round_trip(&machine::LogsRequest {
        namespace: "system".into(),
        id: "etcd".into(),
        driver: common::ContainerDriver::Containerd as i32,
        follow: true,
        tail_lines: 100,
    });
    round_trip(&machine::ServiceListResponse {
        messages: vec![machine::ServiceList {
            metadata: meta("w-1"),
            services: vec![machine::ServiceInfo {
                id: "kubelet".into(),
                state: "Running".into(),
                events: Some(machine::ServiceEvents {
                    events: vec![machine::ServiceEvent {
                        msg: "Health check successful".into(),
                        state: "Running".into(),
                        ts: Some(prost_types::Timestamp {
                            seconds: 1_700_000_000,
                            nanos: 5,
                        }),
                    }],
                }),
                health: Some(machine::ServiceHealth {
                    unknown: false,
                    healthy: true,
                    last_message: String::new(),
                    last_change: None,
                }),
            }],
        }],
    });
    round_trip(&machine::EtcdStatusResponse {
        messages: vec![machine::EtcdStatus {
            metadata: meta("cp-1"),
            member_status: Some(machine::EtcdMemberStatus {
                member_id: 1,
                protocol_version: "3.5".into(),
                db_size: 1 << 20,
                db_size_in_use: 1 << 19,
                leader: 1,
                raft_index: 42,
                raft_term: 3,
                raft_applied_index: 42,
                errors: vec![],
                is_learner: false,
                storage_version: "3.5.0".into(),
            }),
        }],
    });
    round_trip(&machine::RebootRequest {
        mode: machine::reboot_request::Mode::Powercycle as i32,
    });
    round_trip(&machine::NetstatRequest {
        filter: machine::netstat_request::Filter::Listening as i32,
        feature: Some(machine::netstat_request::Feature { pid: true }),
        l4proto: Some(machine::netstat_request::L4proto {
            tcp: true,
            ..Default::default()
        }),
        netns: None,
    });
    let event = machine::SequenceEvent {
        sequence: "boot".into(),
        action: machine::sequence_event::Action::Start as i32,
        error: None,
    };
    round_trip(&machine::Event {
        metadata: meta("cp-1"),
        data: Some(prost_types::Any {
            type_url: "talos/runtime/machine.SequenceEvent".into(),
            value: event.encode_to_vec(),
        }),
        id: "id-1".into(),
        actor_id: "actor".into(),
    });
}

#[test]
fn newer_services_round_trip() {
    round_trip(&machine::ImageServiceListRequest {
        containerd: Some(common::ContainerdInstance {
            driver: common::ContainerDriver::Cri as i32,
            namespace: common::ContainerdNamespace::NsCri as i32,
        }),
    });
    round_trip(&machine::ImageServicePullResponse {
        response: Some(machine::image_service_pull_response::Response::Name(
            "registry.k8s.io/pause:3.10".into(),
        )),
    });
    round_trip(&machine::LifecycleServiceUpgradeResponse {
        progress: Some(machine::LifecycleServiceInstallProgress {
            response: Some(machine::lifecycle_service_install_progress::Response::ExitCode(0)),
        }),
    });
}

#[test]
fn cluster_storage_time_round_trip() {
    round_trip(&cluster::HealthCheckRequest {
        wait_timeout: Some(prost_types::Duration {
            seconds: 300,
            nanos: 0,
        }),
        cluster_info: Some(cluster::ClusterInfo {
            control_plane_nodes: vec!["10.5.0.2".into()],
            worker_nodes: vec!["10.5.0.5".into()],
            force_endpoint: String::new(),
        }),
    });
    round_trip(&storage::DisksResponse {
        messages: vec![storage::Disks {
            metadata: meta("cp-1"),
            disks: vec![storage::Disk {
                size: 100 << 30,
                model: "QEMU HARDDISK".into(),
                device_name: "/dev/sda".into(),
                r#type: storage::disk::DiskType::Ssd as i32,
                system_disk: true,
                ..Default::default()
            }],
        }],
    });
    round_trip(&time::TimeResponse {
        messages: vec![time::Time {
            metadata: meta("cp-1"),
            server: "time.cloudflare.com".into(),
            localtime: Some(prost_types::Timestamp {
                seconds: 10,
                nanos: 0,
            }),
            remotetime: Some(prost_types::Timestamp {
                seconds: 11,
                nanos: 0,
            }),
        }],
    });
}

#[test]
fn cosi_state_round_trip() {
    let resource = cosi::resource::Resource {
        metadata: Some(cosi::resource::Metadata {
            namespace: "cluster".into(),
            r#type: "Members.cluster.talos.dev".into(),
            id: "cp-1".into(),
            version: "3".into(),
            phase: "running".into(),
            labels: [("role".to_owned(), "controlplane".to_owned())].into(),
            ..Default::default()
        }),
        spec: Some(cosi::resource::Spec {
            proto_spec: vec![],
            yaml_spec: "nodeId: abc\n".into(),
        }),
    };
    round_trip(&cosi::resource::WatchRequest {
        namespace: "cluster".into(),
        r#type: "Members.cluster.talos.dev".into(),
        id: Some("cp-1".into()),
        options: Some(cosi::resource::WatchOptions {
            bootstrap_contents: true,
            ..Default::default()
        }),
        api_version: 1,
    });
    round_trip(&cosi::resource::WatchResponse {
        event: vec![cosi::resource::Event {
            resource: Some(resource.clone()),
            old: None,
            error: None,
            event_type: cosi::resource::EventType::Created as i32,
            bookmark: None,
        }],
    });
    round_trip(&cosi::resource::GetResponse {
        resource: Some(resource),
    });
}

#[test]
fn stubs_carry_exact_grpc_names() {
    assert_eq!(
        machine::machine_service_server::SERVICE_NAME,
        "machine.MachineService"
    );
    assert_eq!(
        machine::image_service_server::SERVICE_NAME,
        "machine.ImageService"
    );
    assert_eq!(
        machine::lifecycle_service_server::SERVICE_NAME,
        "machine.LifecycleService"
    );
    assert_eq!(
        cluster::cluster_service_server::SERVICE_NAME,
        "cluster.ClusterService"
    );
    assert_eq!(
        storage::storage_service_server::SERVICE_NAME,
        "storage.StorageService"
    );
    assert_eq!(time::time_service_server::SERVICE_NAME, "time.TimeService");
    assert_eq!(
        cosi::resource::state_server::SERVICE_NAME,
        "cosi.resource.State"
    );
    // Client stubs exist too.
    let _ = std::any::type_name::<machine::machine_service_client::MachineServiceClient<()>>();
}
