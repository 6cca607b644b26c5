//! The simulated cluster's state: nodes, faults, roles, etcd membership, events.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;
use tokio::time::Instant;
use tonic::Status;

use crate::pki::{self, CertificateAuthority, IssuedCert, Validity};
use crate::{SimConfig, SimError};

/// What a node does in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRole {
    /// Runs etcd and the Kubernetes control plane.
    ControlPlane,
    /// Runs workloads only.
    Worker,
}

/// A virtual node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimNode {
    /// Its address label (in 127.0.0.0/8; nothing listens there).
    pub address: String,
    /// Its hostname.
    pub hostname: String,
    /// Its role.
    pub role: NodeRole,
}

/// A fault injected into one node's answers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Fault {
    /// Behave normally.
    #[default]
    None,
    /// Answer `Unavailable`, as apid does when it cannot reach the node.
    Unavailable,
    /// Wait this long before answering.
    Latency(Duration),
    /// Never answer.
    Stall,
    /// Answer with this gRPC status.
    Status {
        /// The code.
        code: tonic::Code,
        /// The message.
        message: String,
    },
    /// Stream about this many bytes, then fail the stream.
    AbortStreamAfter {
        /// Bytes sent before the abort.
        bytes: usize,
    },
}

/// How a node's next upgrade goes wrong (set per node; upgrades and rollbacks honour it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpgradeFault {
    /// Upgrades work.
    #[default]
    None,
    /// Pulling any image fails, so the upgrade fails before anything changes.
    ImagePullFails,
    /// The node goes down for the upgrade and never comes back.
    NeverReturns,
    /// The node reboots but comes back on the version it ran before.
    OldVersion,
    /// The node comes back on the new version with kubelet unhealthy, and the cluster health
    /// check fails on it.
    Unhealthy,
}

impl std::str::FromStr for UpgradeFault {
    type Err = String;

    /// Parses the command-line names: `none`, `image-pull-fails`, `never-returns`,
    /// `old-version`, `unhealthy`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "none" => Self::None,
            "image-pull-fails" => Self::ImagePullFails,
            "never-returns" => Self::NeverReturns,
            "old-version" => Self::OldVersion,
            "unhealthy" => Self::Unhealthy,
            other => {
                return Err(format!(
                    "unknown upgrade fault {other:?}; expected none, image-pull-fails, never-returns, old-version or unhealthy"
                ));
            }
        })
    }
}

/// Which server certificate new TLS connections get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CertFault {
    /// The valid certificate.
    #[default]
    None,
    /// An expired certificate from the cluster CA.
    Expired,
    /// A valid certificate from another CA.
    WrongCa,
}

pub(crate) use crate::admission::Access;
use crate::admission::Role;

/// A recorded machine event.
#[derive(Debug, Clone)]
pub(crate) struct EventRecord {
    pub(crate) id: String,
    pub(crate) actor_id: String,
    pub(crate) type_url: String,
    pub(crate) payload: Vec<u8>,
}

/// One change of a node's COSI resources, as its watches see it.
#[derive(Debug, Clone)]
pub(crate) struct ResourceChange {
    pub(crate) kind: talos_proto::cosi::resource::EventType,
    /// The resource before the change (updates, destructions).
    pub(crate) old: Option<talos_proto::cosi::resource::Resource>,
    /// The resource after the change (creations, updates).
    pub(crate) new: Option<talos_proto::cosi::resource::Resource>,
}

impl ResourceChange {
    /// The changed resource's (namespace, type, id).
    pub(crate) fn key(&self) -> Option<(&str, &str, &str)> {
        self.new
            .as_ref()
            .or(self.old.as_ref())
            .and_then(|r| r.metadata.as_ref())
            .map(|m| (m.namespace.as_str(), m.r#type.as_str(), m.id.as_str()))
    }
}

#[derive(Debug, Clone)]
pub(crate) struct ServiceState {
    pub(crate) state: String,
    pub(crate) healthy: bool,
    pub(crate) events: Vec<(String, String, SystemTime)>,
}

#[derive(Debug)]
pub(crate) struct NodeState {
    pub(crate) info: SimNode,
    pub(crate) boot_id: String,
    pub(crate) boots: u32,
    pub(crate) booted_at: SystemTime,
    pub(crate) down_until: Option<Instant>,
    pub(crate) powered_off: bool,
    pub(crate) fault: Fault,
    pub(crate) calls: HashMap<String, u64>,
    /// The calls received, newest last (bounded).
    pub(crate) received: std::collections::VecDeque<ReceivedRecord>,
    pub(crate) services: BTreeMap<String, ServiceState>,
    pub(crate) machine_config: String,
    pub(crate) staged_config: Option<String>,
    pub(crate) images: Vec<String>,
    pub(crate) events: Vec<EventRecord>,
    pub(crate) event_tx: broadcast::Sender<EventRecord>,
    /// Changes of the node's COSI resources, for its open watches.
    pub(crate) resource_tx: broadcast::Sender<ResourceChange>,
    pub(crate) etcd_member_id: Option<u64>,
    /// The Talos version the node runs (changes with an upgrade).
    pub(crate) version: String,
    /// The version an upgrade staged for the next reboot.
    pub(crate) staged_version: Option<String>,
    /// The version the node ran before its last upgrade (what a rollback boots back into).
    pub(crate) previous_version: Option<String>,
    /// How the node's upgrades go wrong.
    pub(crate) upgrade_fault: UpgradeFault,
    /// Behaves like a Talos before 1.13: no ImageService, no LifecycleService.
    pub(crate) legacy_api: bool,
}

impl NodeState {
    pub(crate) fn is_up(&self) -> bool {
        !self.powered_off && self.down_until.is_none_or(|t| Instant::now() >= t)
    }
}

#[derive(Debug)]
pub(crate) struct EtcdState {
    /// Member ids in the cluster, with their hostnames.
    pub(crate) members: Vec<(u64, String)>,
    pub(crate) leader: u64,
    pub(crate) alarms: Vec<(u64, i32)>,
    pub(crate) raft_term: u64,
    /// The store's current revision (what a snapshot holds; it moves on after each snapshot,
    /// as a live cluster keeps writing).
    pub(crate) revision: u64,
    /// Whether etcd serves: false after a quorum loss or before the first bootstrap.
    pub(crate) running: bool,
    /// Snapshots uploaded with `EtcdRecover`, by node index, waiting for `Bootstrap`.
    pub(crate) uploads: HashMap<usize, Vec<u8>>,
}

#[derive(Debug)]
pub(crate) struct Pki {
    pub(crate) ca: CertificateAuthority,
    pub(crate) server: IssuedCert,
    pub(crate) expired_server: IssuedCert,
    pub(crate) foreign_server: IssuedCert,
}

/// State shared by the server tasks and the handle.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: SimConfig,
    pub(crate) pki: Pki,
    roles: Mutex<HashMap<Vec<u8>, String>>,
    cert_fault: Mutex<CertFault>,
    nodes: Mutex<Vec<NodeState>>,
    pub(crate) etcd: Mutex<EtcdState>,
    event_seq: std::sync::atomic::AtomicU64,
    /// Set when the simulator shuts down: long-lived streams and stalled calls end.
    stopping: std::sync::atomic::AtomicBool,
    /// TLS handshakes completed by the endpoint (a reused connection makes none).
    handshakes: std::sync::atomic::AtomicU64,
}

/// Locks a mutex, recovering from poisoning (a panicked handler must not take the server down).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The Talos version a node starts with: its own from `node_versions`, else the cluster's.
fn initial_version(config: &SimConfig, node: &SimNode) -> String {
    config
        .node_versions
        .iter()
        .rev()
        .find(|(n, _)| *n == node.address || *n == node.hostname)
        .map_or_else(|| config.talos_version.clone(), |(_, v)| v.clone())
}

/// The machine configuration a node starts with: generated for its cluster (with secret values
/// of the cluster's own unless it is the default cluster), then `machine_config_patch` merged in.
pub(crate) fn initial_machine_config(
    config: &SimConfig,
    node: &SimNode,
    version: &str,
) -> Result<String, SimError> {
    let mut text = crate::data::machine_config(&config.cluster_name, node, version);
    if config.cluster_name != crate::DEFAULT_CLUSTER {
        text = crate::data::tag_secrets(&text, &config.cluster_name);
    }
    match &config.machine_config_patch {
        None => Ok(text),
        Some(patch) => crate::data::merge_yaml(&text, patch)
            .map_err(|e| SimError::Config(format!("machine_config_patch: {e}"))),
    }
}

/// The address label of the n-th node (0-based).
fn node_address(n: usize) -> String {
    format!("127.0.{}.{}", 10 + n / 200, 11 + n % 200)
}

impl Shared {
    pub(crate) fn new(config: SimConfig) -> Result<Self, SimError> {
        let ca = CertificateAuthority::generate(&config.cluster_name)?;
        let sans = ["127.0.0.1", "localhost", "::1"];
        let foreign = CertificateAuthority::generate("someone-else")?;
        let pki = Pki {
            server: ca.server_cert(&sans, Validity::Current)?,
            expired_server: ca.server_cert(&sans, Validity::Expired)?,
            foreign_server: foreign.server_cert(&sans, Validity::Current)?,
            ca,
        };
        let total = config.control_planes + config.workers;
        if total > 50_000 {
            return Err(SimError::Config("at most 50000 nodes".into()));
        }
        let mut nodes = Vec::with_capacity(total);
        let mut members = Vec::new();
        for n in 0..total {
            let (role, hostname) = if n < config.control_planes {
                (NodeRole::ControlPlane, format!("talos-cp-{}", n + 1))
            } else {
                (
                    NodeRole::Worker,
                    format!("talos-worker-{}", n + 1 - config.control_planes),
                )
            };
            let info = SimNode {
                address: node_address(n),
                hostname,
                role,
            };
            let member_id =
                (role == NodeRole::ControlPlane).then(|| crate::data::seed(&info.hostname) | 1);
            if let Some(id) = member_id {
                members.push((id, info.hostname.clone()));
            }
            let (event_tx, _) = broadcast::channel(64);
            let (resource_tx, _) = broadcast::channel(256);
            let version = initial_version(&config, &info);
            let machine_config = initial_machine_config(&config, &info, &version)?;
            nodes.push(NodeState {
                boot_id: crate::data::boot_id(&info.hostname, 0),
                boots: 0,
                booted_at: SystemTime::now()
                    - Duration::from_secs(3 * 86_400 + crate::data::seed(&info.hostname) % 86_400),
                down_until: None,
                powered_off: false,
                fault: Fault::None,
                calls: HashMap::new(),
                received: std::collections::VecDeque::new(),
                services: crate::data::services(role),
                machine_config,
                staged_config: None,
                images: crate::data::images(role),
                events: Vec::new(),
                event_tx,
                resource_tx,
                etcd_member_id: member_id,
                version,
                staged_version: None,
                previous_version: None,
                upgrade_fault: UpgradeFault::None,
                legacy_api: false,
                info,
            });
        }
        let leader = members.first().map_or(0, |m| m.0);
        let revision = 4_000 + crate::data::seed(&config.cluster_name) % 1_000;
        let shared = Self {
            config,
            pki,
            roles: Mutex::new(HashMap::new()),
            cert_fault: Mutex::new(CertFault::None),
            nodes: Mutex::new(nodes),
            etcd: Mutex::new(EtcdState {
                members,
                leader,
                alarms: Vec::new(),
                raft_term: 2,
                revision,
                running: true,
                uploads: HashMap::new(),
            }),
            event_seq: std::sync::atomic::AtomicU64::new(1),
            stopping: std::sync::atomic::AtomicBool::new(false),
            handshakes: std::sync::atomic::AtomicU64::new(0),
        };
        for idx in 0..total {
            shared.record_boot_events(idx, "boot");
        }
        Ok(shared)
    }

    pub(crate) fn issue_client(
        &self,
        role: &str,
        validity: Validity,
    ) -> Result<IssuedCert, SimError> {
        let cert = self.pki.ca.client_cert(role, validity)?;
        let der = pki::pem_to_der(&cert.cert_pem)
            .ok_or_else(|| SimError::Tls("issued certificate is not PEM".into()))?;
        lock(&self.roles).insert(der, role.to_owned());
        Ok(cert)
    }

    /// The role of a presented client certificate.
    pub(crate) fn role_of(&self, cert_der: &[u8]) -> Option<String> {
        lock(&self.roles).get(cert_der).cloned()
    }

    pub(crate) fn cert_fault(&self) -> CertFault {
        *lock(&self.cert_fault)
    }

    pub(crate) fn set_cert_fault(&self, fault: CertFault) {
        *lock(&self.cert_fault) = fault;
    }

    pub(crate) fn node_count(&self) -> usize {
        lock(&self.nodes).len()
    }

    pub(crate) fn nodes(&self) -> Vec<SimNode> {
        lock(&self.nodes).iter().map(|n| n.info.clone()).collect()
    }

    fn find(nodes: &[NodeState], node: &str) -> Option<usize> {
        nodes
            .iter()
            .position(|n| n.info.address == node || n.info.hostname == node)
    }

    pub(crate) fn clear_faults(&self) {
        for n in lock(&self.nodes).iter_mut() {
            n.fault = Fault::None;
            n.upgrade_fault = UpgradeFault::None;
            n.legacy_api = false;
        }
        self.set_cert_fault(CertFault::None);
    }

    pub(crate) fn set_fault(&self, node: &str, fault: Fault) {
        let mut nodes = lock(&self.nodes);
        if let Some(i) = Self::find(&nodes, node) {
            nodes[i].fault = fault;
        }
    }

    /// Runs `f` on the node named by address or hostname, if there is one.
    pub(crate) fn with_named<R>(
        &self,
        node: &str,
        f: impl FnOnce(&mut NodeState) -> R,
    ) -> Option<R> {
        let mut nodes = lock(&self.nodes);
        Self::find(&nodes, node).map(|i| f(&mut nodes[i]))
    }

    pub(crate) fn calls(&self, node: &str, method: &str) -> u64 {
        let nodes = lock(&self.nodes);
        Self::find(&nodes, node)
            .and_then(|i| nodes[i].calls.get(method).copied())
            .unwrap_or(0)
    }

    pub(crate) fn boot_id(&self, node: &str) -> Option<String> {
        let nodes = lock(&self.nodes);
        Self::find(&nodes, node).map(|i| nodes[i].boot_id.clone())
    }

    pub(crate) fn is_up(&self, node: &str) -> bool {
        let nodes = lock(&self.nodes);
        Self::find(&nodes, node).is_some_and(|i| nodes[i].is_up())
    }

    /// Runs `f` on a node's state.
    pub(crate) fn with_node<R>(&self, idx: usize, f: impl FnOnce(&mut NodeState) -> R) -> R {
        let mut nodes = lock(&self.nodes);
        f(&mut nodes[idx])
    }

    /// Runs `f` over all nodes.
    pub(crate) fn with_nodes<R>(&self, f: impl FnOnce(&mut [NodeState]) -> R) -> R {
        let mut nodes = lock(&self.nodes);
        f(&mut nodes)
    }

    /// Counts a completed TLS handshake.
    pub(crate) fn handshake_done(&self) {
        self.handshakes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// TLS handshakes completed so far.
    pub(crate) fn handshakes(&self) -> u64 {
        self.handshakes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The admission of every RPC ([`crate::admission::AdmissionLayer`] calls it): pick the node
    /// from the `node` metadata (unknown: `Unavailable`, like apid's proxy), record the call,
    /// check the caller's roles against `access`, then apply the node's fault and availability.
    pub(crate) async fn admit(
        &self,
        path: &str,
        access: Access,
        roles: Vec<Role>,
        target: Option<&str>,
    ) -> Result<Admitted, Status> {
        let (idx, fault, up, hostname, seq) = {
            let mut nodes = lock(&self.nodes);
            let idx = match target {
                None => 0,
                Some(t) => Self::find(&nodes, t).ok_or_else(|| {
                    Status::unavailable(format!(
                        "connection error: desc = \"transport: Error while dialing: dial tcp {t}:50000: connect: no route to host\""
                    ))
                })?,
            };
            let node = &mut nodes[idx];
            *node
                .calls
                .entry(crate::admission::call_name(path))
                .or_default() += 1;
            let seq = self
                .event_seq
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            node.received.push_back(ReceivedRecord {
                seq,
                call: ReceivedCall {
                    method: path.to_owned(),
                    detail: None,
                },
            });
            if node.received.len() > MAX_RECEIVED {
                node.received.pop_front();
            }
            (
                idx,
                node.fault.clone(),
                node.is_up(),
                node.info.hostname.clone(),
                seq,
            )
        };
        if !access.allows(&roles) {
            return Err(Status::permission_denied("not authorized"));
        }
        // The round trip from the endpoint to the node, on every call.
        if !self.config.node_latency.is_zero() {
            tokio::time::sleep(self.config.node_latency).await;
        }
        let mut abort_after = None;
        match fault {
            Fault::None => {}
            Fault::Unavailable => {
                return Err(Status::unavailable(format!(
                    "connection error: desc = \"transport: Error while dialing: dial tcp {}:50000: connect: connection refused\"",
                    target.unwrap_or("127.0.0.1")
                )));
            }
            Fault::Latency(d) => tokio::time::sleep(d).await,
            Fault::Stall => {
                // Never answers: the call ends when the client gives up (its future is dropped)
                // or the simulator stops.
                while !self.stopping() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                return Err(Status::unavailable("the simulated apid is shutting down"));
            }
            Fault::Status { code, message } => return Err(Status::new(code, message)),
            Fault::AbortStreamAfter { bytes } => abort_after = Some(bytes),
        }
        if !up {
            return Err(Status::unavailable(format!(
                "connection error: desc = \"transport: Error while dialing: dial tcp {}:50000: connect: connection refused\"",
                target.unwrap_or("127.0.0.1")
            )));
        }
        Ok(Admitted {
            idx,
            hostname,
            abort_after,
            roles,
            seq,
        })
    }

    /// Adds what a mutating call asked for to its record (see [`crate::SimCluster::received`]).
    pub(crate) fn note(&self, admitted: &Admitted, detail: String) {
        self.with_node(admitted.idx, |n| {
            if let Some(r) = n.received.iter_mut().rev().find(|r| r.seq == admitted.seq) {
                r.call.detail = Some(detail);
            }
        });
    }

    /// The calls `node` received, oldest first (at most [`MAX_RECEIVED`]).
    pub(crate) fn received(&self, node: &str) -> Vec<ReceivedCall> {
        let nodes = lock(&self.nodes);
        Self::find(&nodes, node)
            .map(|i| nodes[i].received.iter().map(|r| r.call.clone()).collect())
            .unwrap_or_default()
    }

    /// Appends an event to a node's history and to its live subscribers.
    pub(crate) fn push_event(&self, idx: usize, actor_id: &str, type_name: &str, payload: Vec<u8>) {
        self.record_event(idx, actor_id, type_name, payload, true);
    }

    /// Appends an event to a node's history, and to its live subscribers if `live`.
    fn record_event(
        &self,
        idx: usize,
        actor_id: &str,
        type_name: &str,
        payload: Vec<u8>,
        live: bool,
    ) {
        let seq = self
            .event_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let record = EventRecord {
            id: format!("{seq:020}"),
            actor_id: actor_id.to_owned(),
            type_url: format!("talos/runtime/machine.{type_name}"),
            payload,
        };
        self.with_node(idx, |n| {
            n.events.push(record.clone());
            if n.events.len() > 1000 {
                n.events.remove(0);
            }
            if live {
                let _ = n.event_tx.send(record);
            }
        });
    }

    /// Records the events of a boot. They go to the history only: a node that boots has no live
    /// event streams (they broke when it went down); clients see them when they reconnect.
    fn record_boot_events(&self, idx: usize, actor: &str) {
        for (type_name, payload) in crate::data::boot_events(
            &self.with_node(idx, |n| n.services.keys().cloned().collect::<Vec<_>>()),
        ) {
            self.record_event(idx, actor, type_name, payload, false);
        }
    }

    /// Runs `change` and sends what it changed in the resources of every watched node to that
    /// node's watches (Created / Updated / Destroyed with old and new). Nodes nobody watches cost
    /// nothing. `change` must not hold the state locks when it returns.
    pub(crate) fn tracked<R>(&self, change: impl FnOnce() -> R) -> R {
        self.tracked_except(None, change)
    }

    /// Like [`Self::tracked`], leaving out the watches of node `skip` (a node that is down).
    fn tracked_except<R>(&self, skip: Option<usize>, change: impl FnOnce() -> R) -> R {
        let watched: Vec<usize> = self.with_nodes(|ns| {
            ns.iter()
                .enumerate()
                .filter(|(i, n)| Some(*i) != skip && n.resource_tx.receiver_count() > 0)
                .map(|(i, _)| i)
                .collect()
        });
        let before: Vec<_> = watched
            .iter()
            .map(|&i| (i, crate::services::node_resources(self, i)))
            .collect();
        let out = change();
        for (idx, before) in before {
            let after = crate::services::node_resources(self, idx);
            let changes = diff_resources(before, after);
            self.with_node(idx, |n| {
                for c in changes {
                    let _ = n.resource_tx.send(c);
                }
            });
        }
        out
    }

    /// Takes a node down for the configured downtime; it comes back with a new boot id.
    pub(crate) fn reboot(&self, idx: usize, actor: &str) {
        let downtime = self.config.reboot_downtime;
        self.push_event(
            idx,
            actor,
            "MachineStatusEvent",
            crate::data::machine_status(crate::data::Stage::Rebooting, false),
        );
        // Watches see the node go down (machine status `rebooting`, not ready), then break; what
        // changes while it is down, they see when they reconnect.
        self.tracked(|| {
            self.with_node(idx, |n| n.down_until = Some(Instant::now() + downtime));
        });
        // What changes while it is down, other nodes' watches see (its version in their cluster
        // membership); its own see it when they reconnect.
        self.tracked_except(Some(idx), || {
            self.with_node(idx, |n| {
                n.boots += 1;
                n.boot_id = crate::data::boot_id(&n.info.hostname, n.boots);
                n.booted_at = SystemTime::now() + downtime;
                n.down_until = Some(Instant::now() + downtime);
                if let Some(staged) = n.staged_config.take() {
                    n.machine_config = staged;
                }
                if let Some(version) = n.staged_version.take()
                    && version != n.version
                {
                    n.previous_version = Some(std::mem::replace(&mut n.version, version));
                }
                for s in n.services.values_mut() {
                    s.state = "Running".into();
                    s.healthy = true;
                }
            })
        });
        self.record_boot_events(idx, actor);
    }

    /// Wipes a node back to the state it was created with (configuration, images, services,
    /// event history), as a reset does; the boot identity is left to the caller.
    pub(crate) fn wipe(&self, idx: usize) {
        let config = &self.config;
        self.with_node(idx, |n| {
            let version = initial_version(config, &n.info);
            // The patch was checked when the cluster started, so this cannot fail here.
            if let Ok(text) = initial_machine_config(config, &n.info, &version) {
                n.machine_config = text;
            }
            n.staged_config = None;
            n.staged_version = None;
            n.previous_version = None;
            n.version = version;
            n.images = crate::data::images(n.info.role);
            n.services = crate::data::services(n.info.role);
            n.events.clear();
        });
    }

    /// Whether a node would answer now: up, and not cut off by an `Unavailable` fault. Long-lived
    /// streams end when this turns false, as apid's proxied streams break when a node goes away.
    pub(crate) fn reachable(&self, idx: usize) -> bool {
        !self.stopping() && self.with_node(idx, |n| n.is_up() && n.fault != Fault::Unavailable)
    }

    /// Marks the simulator as stopping.
    pub(crate) fn stop(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Clears the stopping mark (the simulator serves again after a restart).
    pub(crate) fn resume(&self) {
        self.stopping
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether the simulator is stopping.
    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Powers a node off until the simulator stops.
    pub(crate) fn power_off(&self, idx: usize) {
        self.tracked(|| self.with_node(idx, |n| n.powered_off = true));
    }

    pub(crate) fn next_actor_id(&self) -> String {
        format!(
            "actor-{:08x}",
            self.event_seq
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        )
    }
}

/// The node a call was admitted for.
#[derive(Debug, Clone)]
pub(crate) struct Admitted {
    pub(crate) idx: usize,
    pub(crate) hostname: String,
    pub(crate) abort_after: Option<usize>,
    /// The roles the caller acts with.
    pub(crate) roles: Vec<Role>,
    /// The call's record among the node's received calls.
    pub(crate) seq: u64,
}

impl Admitted {
    /// The admission the [`crate::admission::AdmissionLayer`] left on a request.
    pub(crate) fn of<T>(request: &tonic::Request<T>) -> Result<Self, Status> {
        request
            .extensions()
            .get::<Self>()
            .cloned()
            .ok_or_else(|| Status::internal("request was not admitted"))
    }
}

/// Most calls kept per node by [`Shared::received`].
pub(crate) const MAX_RECEIVED: usize = 4096;

/// A call a node received, as [`crate::SimCluster::received`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedCall {
    /// The gRPC method path, e.g. `/machine.MachineService/Reboot`.
    pub method: String,
    /// For mutating calls, what was asked in a form safe to print (modes, ids, image
    /// references, a fingerprint and size of applied configuration bytes); never secret content.
    pub detail: Option<String>,
}

#[derive(Debug)]
pub(crate) struct ReceivedRecord {
    seq: u64,
    call: ReceivedCall,
}

/// What changed between two listings of a node's resources, keyed by (namespace, type, id).
fn diff_resources(
    before: Vec<talos_proto::cosi::resource::Resource>,
    after: Vec<talos_proto::cosi::resource::Resource>,
) -> Vec<ResourceChange> {
    use talos_proto::cosi::resource::EventType;
    let key = |r: &talos_proto::cosi::resource::Resource| {
        r.metadata
            .as_ref()
            .map(|m| (m.namespace.clone(), m.r#type.clone(), m.id.clone()))
            .unwrap_or_default()
    };
    let mut old: BTreeMap<_, _> = before.into_iter().map(|r| (key(&r), r)).collect();
    let mut out = Vec::new();
    for r in after {
        match old.remove(&key(&r)) {
            None => out.push(ResourceChange {
                kind: EventType::Created,
                old: None,
                new: Some(r),
            }),
            Some(prev) if prev.spec != r.spec => out.push(ResourceChange {
                kind: EventType::Updated,
                old: Some(prev),
                new: Some(r),
            }),
            Some(_) => {}
        }
    }
    out.extend(old.into_values().map(|prev| ResourceChange {
        kind: EventType::Destroyed,
        old: Some(prev),
        new: None,
    }));
    out
}
