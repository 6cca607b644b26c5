//! The simulated apid's other services (images, lifecycle, cluster health, storage, time, COSI)
//! and the router that serves them all.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use talos_proto::cosi::resource as cosi;
use talos_proto::machine::{self as m};
use talos_proto::{cluster, storage, time as ptime};
use tonic::transport::server::Router;
use tonic::{Request, Response, Status};

use crate::data;
use crate::machine::{BoxStream, MachineApi, channel, meta};
use crate::state::{Access, Admitted, NodeRole, Shared};

/// Every service on one router.
pub(crate) fn router(
    shared: Arc<Shared>,
) -> Router<tower::layer::util::Stack<crate::admission::AdmissionLayer, tower::layer::util::Identity>>
{
    let max = 64 * 1024 * 1024;
    tonic::transport::Server::builder()
        .layer(crate::admission::AdmissionLayer(shared.clone()))
        .add_service(
            m::machine_service_server::MachineServiceServer::new(MachineApi {
                shared: shared.clone(),
            })
            .max_decoding_message_size(max),
        )
        .add_service(m::image_service_server::ImageServiceServer::new(Api(
            shared.clone(),
        )))
        .add_service(m::lifecycle_service_server::LifecycleServiceServer::new(
            Api(shared.clone()),
        ))
        .add_service(cluster::cluster_service_server::ClusterServiceServer::new(
            Api(shared.clone()),
        ))
        .add_service(storage::storage_service_server::StorageServiceServer::new(
            Api(shared.clone()),
        ))
        .add_service(ptime::time_service_server::TimeServiceServer::new(Api(
            shared.clone(),
        )))
        .add_service(cosi::state_server::StateServer::new(Api(shared)))
}

/// Implements the smaller services over the shared state.
#[derive(Debug, Clone)]
pub(crate) struct Api(Arc<Shared>);

#[tonic::async_trait]
impl m::image_service_server::ImageService for Api {
    type ListStream = BoxStream<m::ImageServiceListResponse>;

    async fn list(
        &self,
        req: Request<m::ImageServiceListRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let a = Admitted::of(&req)?;
        self.modern_api(a.idx, "ImageService")?;
        let images = self.0.with_node(a.idx, |n| n.images.clone());
        let (tx, stream) = channel();
        tokio::spawn(async move {
            for name in images {
                let item = m::ImageServiceListResponse {
                    digest: format!(
                        "sha256:{:016x}{:016x}",
                        data::seed(&name),
                        data::seed(&format!("{name}/2"))
                    ),
                    size: (20 << 20) + (data::seed(&name) % (200 << 20)) as i64,
                    created_at: Some(prost_types::Timestamp::from(
                        SystemTime::UNIX_EPOCH + Duration::from_secs(1_760_000_000),
                    )),
                    labels: Default::default(),
                    name,
                };
                if tx.send(Ok(item)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(stream))
    }

    type PullStream = BoxStream<m::ImageServicePullResponse>;

    async fn pull(
        &self,
        req: Request<m::ImageServicePullRequest>,
    ) -> Result<Response<Self::PullStream>, Status> {
        let a = Admitted::of(&req)?;
        self.modern_api(a.idx, "ImageService")?;
        let reference = req.into_inner().image_ref;
        crate::machine::pull_into(&self.0, a.idx, &reference)?;
        let (tx, stream) = channel();
        tokio::spawn(async move {
            use m::image_service_pull_response::Response as R;
            for offset in [0i64, 4 << 20, 8 << 20] {
                let progress = m::ImageServicePullProgress {
                    layer_id: "sha256:0f1e2d".into(),
                    progress: Some(m::ImageServicePullLayerProgress {
                        status: m::image_service_pull_layer_progress::Status::Downloading as i32,
                        elapsed: None,
                        offset,
                        total: 8 << 20,
                    }),
                };
                if tx
                    .send(Ok(m::ImageServicePullResponse {
                        response: Some(R::PullProgress(progress)),
                    }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let _ = tx
                .send(Ok(m::ImageServicePullResponse {
                    response: Some(R::Name(reference)),
                }))
                .await;
        });
        Ok(Response::new(stream))
    }

    async fn import(
        &self,
        _req: Request<tonic::Streaming<m::ImageServiceImportRequest>>,
    ) -> Result<Response<m::ImageServiceImportResponse>, Status> {
        Err(Status::unimplemented("image import is not simulated"))
    }

    async fn remove(
        &self,
        req: Request<m::ImageServiceRemoveRequest>,
    ) -> Result<Response<()>, Status> {
        let a = Admitted::of(&req)?;
        let reference = req.into_inner().image_ref;
        self.0
            .with_node(a.idx, |n| n.images.retain(|i| *i != reference));
        Ok(Response::new(()))
    }

    async fn verify(
        &self,
        req: Request<m::ImageServiceVerifyRequest>,
    ) -> Result<Response<m::ImageServiceVerifyResponse>, Status> {
        Admitted::of(&req)?;
        Err(Status::unimplemented("image verification is not simulated"))
    }
}

#[tonic::async_trait]
impl m::lifecycle_service_server::LifecycleService for Api {
    type InstallStream = BoxStream<m::LifecycleServiceInstallResponse>;

    async fn install(
        &self,
        req: Request<m::LifecycleServiceInstallRequest>,
    ) -> Result<Response<Self::InstallStream>, Status> {
        Admitted::of(&req)?;
        Err(Status::failed_precondition("the node is already installed"))
    }

    type UpgradeStream = BoxStream<m::LifecycleServiceUpgradeResponse>;

    async fn upgrade(
        &self,
        req: Request<m::LifecycleServiceUpgradeRequest>,
    ) -> Result<Response<Self::UpgradeStream>, Status> {
        let a = Admitted::of(&req)?;
        self.modern_api(a.idx, "LifecycleService")?;
        let image = req
            .into_inner()
            .source
            .map(|s| s.image_name)
            .filter(|i| !i.trim().is_empty())
            .ok_or_else(|| Status::invalid_argument("installer image is required"))?;
        self.0.note(&a, format!("image={image}"));
        let shared = self.0.clone();
        let (tx, stream) = channel();
        tokio::spawn(async move {
            use m::lifecycle_service_install_progress::Response as R;
            let step = |r: R| m::LifecycleServiceUpgradeResponse {
                progress: Some(m::LifecycleServiceInstallProgress { response: Some(r) }),
            };
            let pulling = format!("pulling installer image {image}");
            if tx.send(Ok(step(R::Message(pulling)))).await.is_err() {
                return;
            }
            let actor = shared.next_actor_id();
            // Stage first (as the installer does), then report, then boot into it.
            if let Err(status) = crate::machine::upgrade_to(&shared, a.idx, &image, &actor, true) {
                let _ = tx
                    .send(Ok(step(R::Message(format!("error: {}", status.message())))))
                    .await;
                let _ = tx.send(Ok(step(R::ExitCode(1)))).await;
                return;
            }
            for msg in [
                "validating installer image",
                "installing Talos to the boot disk",
                "upgrade installed; rebooting",
            ] {
                if tx.send(Ok(step(R::Message(msg.into())))).await.is_err() {
                    // The client left: the installed upgrade still boots, as on a node.
                    break;
                }
            }
            let _ = tx.send(Ok(step(R::ExitCode(0)))).await;
            crate::machine::boot_after_upgrade(&shared, a.idx, &actor);
        });
        Ok(Response::new(stream))
    }
}

impl Api {
    /// Refuses a Talos 1.13+ service on a node that behaves like an older release.
    fn modern_api(&self, idx: usize, service: &str) -> Result<(), Status> {
        if self.0.with_node(idx, |n| n.legacy_api) {
            return Err(Status::unimplemented(format!(
                "unknown service machine.{service}"
            )));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl cluster::cluster_service_server::ClusterService for Api {
    type HealthCheckStream = BoxStream<cluster::HealthCheckProgress>;

    async fn health_check(
        &self,
        req: Request<cluster::HealthCheckRequest>,
    ) -> Result<Response<Self::HealthCheckStream>, Status> {
        let a = Admitted::of(&req)?;
        let nodes: Vec<(String, bool, NodeRole)> = self.0.with_nodes(|ns| {
            ns.iter()
                .map(|n| (n.info.address.clone(), n.is_up(), n.info.role))
                .collect()
        });
        // Up, but with a service that fails its health check (e.g. after a broken upgrade).
        let sick: Vec<String> = self.0.with_nodes(|ns| {
            ns.iter()
                .filter(|n| n.is_up() && n.services.values().any(|s| !s.healthy))
                .map(|n| n.info.address.clone())
                .collect()
        });
        let sick_text = sick.join(", ");
        let etcd_members = crate::state::lock(&self.0.etcd).members.len();
        let cps = nodes
            .iter()
            .filter(|n| n.2 == NodeRole::ControlPlane)
            .count();
        let down: Vec<String> = nodes.iter().filter(|n| !n.1).map(|n| n.0.clone()).collect();
        let down_text = down.join(", ");
        let mut checks: Vec<(String, Option<String>)> = vec![
            (
                "waiting for etcd to be healthy".into(),
                (!down.is_empty() && nodes.iter().any(|n| !n.1 && n.2 == NodeRole::ControlPlane))
                    .then(|| format!("etcd members not reachable: {down_text}")),
            ),
            (
                "waiting for etcd members to be consistent across nodes".into(),
                (etcd_members != cps)
                    .then(|| format!("expected {cps} etcd members, found {etcd_members}")),
            ),
            (
                "waiting for etcd members to be control plane nodes".into(),
                None,
            ),
            (
                "waiting for apid to be ready".into(),
                (!down.is_empty()).then(|| format!("apid not ready on: {down_text}")),
            ),
            ("waiting for all nodes memory sizes".into(), None),
            ("waiting for all nodes disk sizes".into(), None),
            ("waiting for no diagnostics".into(), None),
            (
                "waiting for kubelet to be healthy".into(),
                if !down.is_empty() {
                    Some(format!("kubelet not healthy on: {down_text}"))
                } else if !sick.is_empty() {
                    Some(format!("kubelet not healthy on: {sick_text}"))
                } else {
                    None
                },
            ),
            ("waiting for all nodes to finish boot sequence".into(), None),
            (
                "waiting for all k8s nodes to report ready".into(),
                (!down.is_empty()).then(|| format!("nodes not ready: {down_text}")),
            ),
            (
                "waiting for all control plane static pods to be running".into(),
                None,
            ),
            ("waiting for kube-proxy to report ready".into(), None),
            ("waiting for coredns to report ready".into(), None),
        ];
        let first_failure = checks.iter().position(|c| c.1.is_some());
        if let Some(i) = first_failure {
            checks.truncate(i + 1);
        }
        let (tx, stream) = channel();
        tokio::spawn(async move {
            for (msg, err) in checks {
                let mut metadata = meta(&a.hostname);
                let message = match err {
                    None => format!("{msg}: OK"),
                    Some(e) => {
                        if let Some(md) = metadata.as_mut() {
                            md.error = e.clone();
                        }
                        format!("{msg}: {e}")
                    }
                };
                if tx
                    .send(Ok(cluster::HealthCheckProgress { metadata, message }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(Response::new(stream))
    }
}

#[tonic::async_trait]
impl storage::storage_service_server::StorageService for Api {
    async fn disks(&self, req: Request<()>) -> Result<Response<storage::DisksResponse>, Status> {
        let a = Admitted::of(&req)?;
        let disk = storage::Disk {
            size: 100 << 30,
            model: "QEMU HARDDISK".into(),
            device_name: "/dev/sda".into(),
            name: "sda".into(),
            serial: format!("QM{:05}", data::seed(&a.hostname) % 100_000),
            wwid: format!(
                "t10.ATA QEMU HARDDISK {:x}",
                data::seed(&a.hostname) % 0xffff
            ),
            r#type: storage::disk::DiskType::Ssd as i32,
            bus_path: "/pci0000:00/0000:00:07.0/virtio4/host2/target2:0:0/2:0:0:0/".into(),
            system_disk: true,
            subsystem: "/sys/class/block".into(),
            ..Default::default()
        };
        Ok(Response::new(storage::DisksResponse {
            messages: vec![storage::Disks {
                metadata: meta(&a.hostname),
                disks: vec![disk],
            }],
        }))
    }

    async fn block_device_wipe(
        &self,
        req: Request<storage::BlockDeviceWipeRequest>,
    ) -> Result<Response<storage::BlockDeviceWipeResponse>, Status> {
        Admitted::of(&req)?;
        Err(Status::unimplemented("block device wipe is not simulated"))
    }
}

fn time_response(hostname: &str, server: String) -> ptime::TimeResponse {
    let now = SystemTime::now();
    let skew = Duration::from_millis(data::seed(hostname) % 40);
    ptime::TimeResponse {
        messages: vec![ptime::Time {
            metadata: meta(hostname),
            server,
            localtime: Some(prost_types::Timestamp::from(now + skew)),
            remotetime: Some(prost_types::Timestamp::from(now)),
        }],
    }
}

#[tonic::async_trait]
impl ptime::time_service_server::TimeService for Api {
    async fn time(&self, req: Request<()>) -> Result<Response<ptime::TimeResponse>, Status> {
        let a = Admitted::of(&req)?;
        Ok(Response::new(time_response(
            &a.hostname,
            "time.cloudflare.com".into(),
        )))
    }

    async fn time_check(
        &self,
        req: Request<ptime::TimeRequest>,
    ) -> Result<Response<ptime::TimeResponse>, Status> {
        let a = Admitted::of(&req)?;
        let server = req.into_inner().server;
        Ok(Response::new(time_response(&a.hostname, server)))
    }
}

/// Resource namespaces and types only an admin may read (as Talos marks them sensitive).
fn sensitive(namespace: &str, resource_type: &str) -> bool {
    namespace == "secrets"
        || resource_type.ends_with(".secrets.talos.dev")
        || resource_type == "MachineConfigs.config.talos.dev"
}

/// All resources a node exposes, computed from the shared state (watches diff two of these).
pub(crate) fn node_resources(shared: &Shared, idx: usize) -> Vec<cosi::Resource> {
    let all: Vec<(crate::SimNode, String)> = shared.with_nodes(|ns| {
        ns.iter()
            .map(|n| (n.info.clone(), n.version.clone()))
            .collect()
    });
    let (node, boot_id, config, booted, version, member_id, stage, services) =
        shared.with_node(idx, |n| {
            let stage = if n.powered_off {
                "shutting down"
            } else if n.is_up() {
                "running"
            } else {
                "rebooting"
            };
            let services: Vec<(String, bool, bool)> = n
                .services
                .iter()
                .map(|(id, s)| (id.clone(), s.state == "Running", s.healthy))
                .collect();
            (
                n.info.clone(),
                n.boot_id.clone(),
                n.machine_config.clone(),
                n.booted_at,
                n.version.clone(),
                n.etcd_member_id,
                stage,
                services,
            )
        });
    // The node's etcd member, while it is one.
    let member_id = member_id.filter(|id| {
        crate::state::lock(&shared.etcd)
            .members
            .iter()
            .any(|m| m.0 == *id)
    });
    let res = |ns: &str, ty: &str, id: &str, spec: String| cosi::Resource {
        metadata: Some(cosi::Metadata {
            namespace: ns.into(),
            r#type: ty.into(),
            id: id.into(),
            version: "1".into(),
            owner: String::new(),
            phase: "running".into(),
            created: Some(prost_types::Timestamp::from(booted)),
            updated: Some(prost_types::Timestamp::from(booted)),
            finalizers: vec![],
            annotations: Default::default(),
            labels: Default::default(),
        }),
        spec: Some(cosi::Spec {
            proto_spec: vec![],
            yaml_spec: spec,
        }),
    };
    let mut out = Vec::new();
    for (n, version) in &all {
        let machine_type = match n.role {
            NodeRole::ControlPlane => "controlplane",
            NodeRole::Worker => "worker",
        };
        out.push(res(
                "cluster",
                "Members.cluster.talos.dev",
                &n.hostname,
                format!("nodeId: {:x}\naddresses:\n    - {}\nhostname: {}\nmachineType: {machine_type}\noperatingSystem: Talos ({version})\n", data::seed(&n.hostname), n.address, n.hostname),
            ));
    }
    out.push(res(
        "k8s",
        "Nodenames.kubernetes.talos.dev",
        "nodename",
        format!(
            "nodename: {}\nhostname: {}\nskipNodeRegistration: false\n",
            node.hostname, node.hostname
        ),
    ));
    out.push(res(
        "network",
        "AddressStatuses.net.talos.dev",
        &format!("eth0/{}/24", node.address),
        format!(
            "address: {}/24\nlocal: {}\nfamily: inet4\nscope: global\nlinkName: eth0\n",
            node.address, node.address
        ),
    ));
    out.push(res(
        "network",
        "AddressStatuses.net.talos.dev",
        "lo/127.0.0.1/8",
        "address: 127.0.0.1/8\nfamily: inet4\nscope: host\nlinkName: lo\n".into(),
    ));
    out.push(res("network", "LinkStatuses.net.talos.dev", "eth0", "index: 2\ntype: ether\nlinkState: true\noperationalState: up\nmtu: 1500\nhardwareAddr: 52:54:00:12:34:56\n".into()));
    out.push(res(
        "network",
        "LinkStatuses.net.talos.dev",
        "lo",
        "index: 1\ntype: loopback\nlinkState: true\noperationalState: unknown\nmtu: 65536\n".into(),
    ));
    out.push(res(
        "network",
        "RouteStatuses.net.talos.dev",
        "inet4/10.5.0.1//1024",
        "family: inet4\ndst: \"\"\ngateway: 10.5.0.1\noutLinkName: eth0\npriority: 1024\n".into(),
    ));
    let ready = stage == "running";
    out.push(res(
        "runtime",
        "MachineStatuses.runtime.talos.dev",
        "machine",
        format!("stage: {stage}\nstatus:\n    ready: {ready}\n    unmetConditions: []\n"),
    ));
    for (id, running, healthy) in services {
        out.push(res(
            "runtime",
            "Services.v1alpha1.talos.dev",
            &id,
            format!("running: {running}\nhealthy: {healthy}\nunknown: false\n"),
        ));
    }
    out.push(res(
        "runtime",
        "Versions.runtime.talos.dev",
        "version",
        format!("version: {version}\n"),
    ));
    out.push(res(
        "runtime",
        "BootIDs.runtime.talos.dev",
        "boot-id",
        format!("bootId: {boot_id}\n"),
    ));
    if let Some(id) = member_id {
        out.push(res(
            "etcd",
            "EtcdMembers.etcd.talos.dev",
            "local",
            format!("memberID: {id:016x}\n"),
        ));
    }
    out.push(res(
        "config",
        "MachineConfigs.config.talos.dev",
        "v1alpha1",
        config,
    ));
    out.push(res("secrets", "OSRootSecrets.secrets.talos.dev", "os", "issuingCA:\n    crt: LS0tLS1CRUdJTi1DRVJU\n    key: SIM-SECRET-CA-KEY\ncertSANIPs: []\ntoken: SIM-SECRET-BOOTSTRAP-TOKEN\n".into()));
    for (ty, aliases, ns, sensitive) in [
        (
            "Members.cluster.talos.dev",
            "member, members",
            "cluster",
            false,
        ),
        (
            "Nodenames.kubernetes.talos.dev",
            "nodename, nodenames",
            "k8s",
            false,
        ),
        (
            "AddressStatuses.net.talos.dev",
            "address, addresses",
            "network",
            false,
        ),
        (
            "LinkStatuses.net.talos.dev",
            "link, links",
            "network",
            false,
        ),
        (
            "RouteStatuses.net.talos.dev",
            "route, routes",
            "network",
            false,
        ),
        (
            "MachineStatuses.runtime.talos.dev",
            "machinestatus",
            "runtime",
            false,
        ),
        (
            "Versions.runtime.talos.dev",
            "version, versions",
            "runtime",
            false,
        ),
        ("BootIDs.runtime.talos.dev", "bootid", "runtime", false),
        (
            "Services.v1alpha1.talos.dev",
            "service, services, svc",
            "runtime",
            false,
        ),
        ("EtcdMembers.etcd.talos.dev", "etcdmember", "etcd", false),
        (
            "MachineConfigs.config.talos.dev",
            "machineconfig, mc",
            "config",
            true,
        ),
        (
            "OSRootSecrets.secrets.talos.dev",
            "osrootsecret",
            "secrets",
            true,
        ),
    ] {
        out.push(res(
            "meta",
            "ResourceDefinitions.meta.cosi.dev",
            &ty.to_lowercase(),
            format!(
                "type: {ty}\ndefaultNamespace: {ns}\naliases: [{aliases}]\nsensitivity: {}\n",
                if sensitive { "sensitive" } else { "" }
            ),
        ));
    }
    out
}

impl Api {
    /// All resources a node exposes.
    fn resources(&self, idx: usize) -> Vec<cosi::Resource> {
        node_resources(&self.0, idx)
    }

    /// The request's admission, refused for a sensitive resource type unless the caller is
    /// an admin (Talos authorizes COSI reads per resource type, after the method).
    fn admit_resource<T>(
        &self,
        req: &Request<T>,
        namespace: &str,
        ty: &str,
    ) -> Result<Admitted, Status> {
        let admitted = Admitted::of(req)?;
        if sensitive(namespace, ty) && !Access::Admin.allows(&admitted.roles) {
            return Err(Status::permission_denied("not authorized"));
        }
        Ok(admitted)
    }
}

#[tonic::async_trait]
impl cosi::state_server::State for Api {
    async fn get(
        &self,
        req: Request<cosi::GetRequest>,
    ) -> Result<Response<cosi::GetResponse>, Status> {
        let (ns, ty, id) = (
            req.get_ref().namespace.clone(),
            req.get_ref().r#type.clone(),
            req.get_ref().id.clone(),
        );
        let a = self.admit_resource(&req, &ns, &ty)?;
        let found = self.resources(a.idx).into_iter().find(|r| {
            r.metadata
                .as_ref()
                .is_some_and(|m| m.namespace == ns && m.r#type == ty && m.id == id)
        });
        match found {
            Some(r) => Ok(Response::new(cosi::GetResponse { resource: Some(r) })),
            None => Err(Status::not_found(format!(
                "resource {ty}({ns}/{id}) doesn't exist"
            ))),
        }
    }

    type ListStream = BoxStream<cosi::ListResponse>;

    async fn list(
        &self,
        req: Request<cosi::ListRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let (ns, ty) = (
            req.get_ref().namespace.clone(),
            req.get_ref().r#type.clone(),
        );
        let a = self.admit_resource(&req, &ns, &ty)?;
        let items: Vec<_> = self
            .resources(a.idx)
            .into_iter()
            .filter(|r| {
                r.metadata
                    .as_ref()
                    .is_some_and(|m| m.namespace == ns && m.r#type == ty)
            })
            .collect();
        let (tx, stream) = channel();
        tokio::spawn(async move {
            for r in items {
                if tx
                    .send(Ok(cosi::ListResponse { resource: Some(r) }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn create(
        &self,
        req: Request<cosi::CreateRequest>,
    ) -> Result<Response<cosi::CreateResponse>, Status> {
        Admitted::of(&req)?;
        Err(Status::permission_denied(
            "resources are read-only through the API",
        ))
    }

    async fn update(
        &self,
        req: Request<cosi::UpdateRequest>,
    ) -> Result<Response<cosi::UpdateResponse>, Status> {
        Admitted::of(&req)?;
        Err(Status::permission_denied(
            "resources are read-only through the API",
        ))
    }

    async fn destroy(
        &self,
        req: Request<cosi::DestroyRequest>,
    ) -> Result<Response<cosi::DestroyResponse>, Status> {
        Admitted::of(&req)?;
        Err(Status::permission_denied(
            "resources are read-only through the API",
        ))
    }

    type WatchStream = BoxStream<cosi::WatchResponse>;

    async fn watch(
        &self,
        req: Request<cosi::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (ns, ty, id) = (
            req.get_ref().namespace.clone(),
            req.get_ref().r#type.clone(),
            req.get_ref().id.clone(),
        );
        let a = self.admit_resource(&req, &ns, &ty)?;
        let shared = self.0.clone();
        // Subscribed before the initial state is read, so no change falls in between.
        let mut changes = shared.with_node(a.idx, |n| n.resource_tx.subscribe());
        // A watch of one resource starts with its current state; a watch of a whole type sends
        // the current contents (then `Bootstrapped`) only when asked to.
        let bootstrap = id.is_none()
            && req
                .get_ref()
                .options
                .as_ref()
                .is_some_and(|o| o.bootstrap_contents);
        let initial = id.is_some() || bootstrap;
        let items: Vec<_> = self
            .resources(a.idx)
            .into_iter()
            .filter(|r| {
                r.metadata.as_ref().is_some_and(|m| {
                    m.namespace == ns && m.r#type == ty && id.as_ref().is_none_or(|id| *id == m.id)
                })
            })
            .filter(|_| initial)
            .collect();
        let wanted = move |c: &crate::state::ResourceChange| {
            c.key().is_some_and(|(cns, cty, cid)| {
                cns == ns && cty == ty && id.as_ref().is_none_or(|id| id == cid)
            })
        };
        let (tx, stream) = channel();
        tokio::spawn(async move {
            let event = |resource: Option<cosi::Resource>,
                         old: Option<cosi::Resource>,
                         kind: cosi::EventType| cosi::WatchResponse {
                event: vec![cosi::Event {
                    resource,
                    old,
                    error: None,
                    event_type: kind as i32,
                    bookmark: None,
                }],
            };
            for r in items {
                if tx
                    .send(Ok(event(Some(r), None, cosi::EventType::Created)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if bootstrap
                && tx
                    .send(Ok(event(None, None, cosi::EventType::Bootstrapped)))
                    .await
                    .is_err()
            {
                return;
            }
            // Then every change of the watched resources, until the client leaves; the watch
            // breaks when the node goes away, after the changes that took it away.
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                let change = tokio::select! {
                    biased;
                    () = tx.closed() => return,
                    change = changes.recv() => change,
                    _ = tick.tick() => {
                        if shared.reachable(a.idx) {
                            continue;
                        }
                        while let Ok(c) = changes.try_recv() {
                            if wanted(&c) && tx.send(Ok(event(c.new, c.old, c.kind))).await.is_err() {
                                return;
                            }
                        }
                        let _ = tx.send(Err(crate::machine::node_lost())).await;
                        return;
                    }
                };
                match change {
                    Ok(c) => {
                        if wanted(&c) && tx.send(Ok(event(c.new, c.old, c.kind))).await.is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx
                            .send(Err(Status::aborted("watch fell behind; watch again")))
                            .await;
                        return;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn teardown(
        &self,
        req: Request<cosi::TeardownRequest>,
    ) -> Result<Response<cosi::TeardownResponse>, Status> {
        Admitted::of(&req)?;
        Err(Status::permission_denied(
            "resources are read-only through the API",
        ))
    }

    async fn teardown_and_destroy(
        &self,
        req: Request<cosi::TeardownAndDestroyRequest>,
    ) -> Result<Response<cosi::TeardownAndDestroyResponse>, Status> {
        Admitted::of(&req)?;
        Err(Status::permission_denied(
            "resources are read-only through the API",
        ))
    }
}
