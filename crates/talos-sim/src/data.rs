//! Deterministic, plausible content for simulated nodes.

use std::collections::BTreeMap;
use std::time::SystemTime;

use prost::Message as _;
use talos_proto::machine;

use crate::state::{NodeRole, ServiceState, SimNode};

/// Secret values planted in the simulated machine config, kubeconfig, secrets resources and the
/// node's files, so tests can prove they never leak. Each sits where a real node keeps such a
/// secret: machine-config fields (keys, tokens, disk passphrase, registry auth, proxy credentials
/// in `env`, `files[].content`, Secret manifests in `inlineManifests`, `extraManifestHeaders`),
/// the node's secret files (`/system/secrets`, `/etc/kubernetes`, reached through
/// `/proc/<pid>/root` like on a real node), a process environment, and a log file.
pub const PLANTED_SECRETS: &[&str] = &[
    "SIM-SECRET-BOOTSTRAP-TOKEN",
    "SIM-SECRET-CA-KEY",
    "SIM-SECRET-KUBECONFIG-KEY",
    "SIM-SECRET-ETCD-KEY",
    "SIM-SECRET-CLUSTER-SECRET",
    "SIM-SECRET-PROXY-PASSWORD",
    "SIM-SECRET-FILE-CONTENT",
    "SIM-SECRET-REGISTRY-USER",
    "SIM-SECRET-REGISTRY-PASSWORD",
    "SIM-SECRET-DISK-PASSPHRASE",
    "SIM-SECRET-SECRETBOX",
    "SIM-SECRET-INLINE-MANIFEST",
    "SIM-SECRET-MANIFEST-HEADER",
    "SIM-SECRET-APISERVER-KEY",
    "SIM-SECRET-KUBELET-TOKEN",
    "SIM-SECRET-ENVIRON-PROXY",
    "SIM-SECRET-LOG-TOKEN",
    "SIM-SECRET-LOG-PRIVATE-KEY",
    "SIM-SECRET-LOG-PROXY",
];

/// A stable 64-bit value derived from a string (FNV-1a).
pub(crate) fn seed(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A small deterministic generator.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(s: &str) -> Self {
        Self(seed(s) | 1)
    }
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

pub(crate) fn boot_id(hostname: &str, boots: u32) -> String {
    let mut r = Rng::new(&format!("{hostname}/boot/{boots}"));
    let (a, b) = (r.next(), r.next());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        (b >> 48) | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

/// Talos system services of a node, all running and healthy.
pub(crate) fn services(role: NodeRole) -> BTreeMap<String, ServiceState> {
    let mut ids = vec![
        "apid",
        "auditd",
        "containerd",
        "cri",
        "dashboard",
        "kubelet",
        "machined",
        "syslogd",
        "udevd",
    ];
    if role == NodeRole::ControlPlane {
        ids.extend(["etcd", "trustd"]);
    }
    let now = SystemTime::now();
    ids.into_iter()
        .map(|id| {
            (
                id.to_owned(),
                ServiceState {
                    state: "Running".into(),
                    healthy: true,
                    events: vec![
                        ("Starting".into(), "Starting service".into(), now),
                        ("Running".into(), "Health check successful".into(), now),
                    ],
                },
            )
        })
        .collect()
}

pub(crate) fn images(role: NodeRole) -> Vec<String> {
    let mut images = vec![
        "ghcr.io/siderolabs/kubelet:v1.34.1",
        "registry.k8s.io/pause:3.10",
        "registry.k8s.io/kube-proxy:v1.34.1",
        "ghcr.io/siderolabs/flannel:v0.27.4",
        "registry.k8s.io/coredns/coredns:v1.12.4",
    ];
    if role == NodeRole::ControlPlane {
        images.extend([
            "registry.k8s.io/kube-apiserver:v1.34.1",
            "registry.k8s.io/kube-controller-manager:v1.34.1",
            "registry.k8s.io/kube-scheduler:v1.34.1",
            "gcr.io/etcd-development/etcd:v3.6.5",
        ]);
    }
    images.into_iter().map(str::to_owned).collect()
}

/// A container of a node, as `Containers` and `Stats` describe it.
#[derive(Debug, Clone)]
pub(crate) struct ContainerSpec {
    /// What `talosctl containers` shows and `Logs` takes: the service id in `system`, and
    /// `<namespace>/<pod>:<container>` for Kubernetes containers (containerd's display name).
    pub(crate) id: String,
    /// The runtime's own id (64 hex digits for Kubernetes containers).
    pub(crate) internal_id: String,
    pub(crate) image: String,
    /// `<namespace>/<pod>` for Kubernetes containers, empty for system ones.
    pub(crate) pod_id: String,
    pub(crate) name: String,
    pub(crate) pid: u32,
}

impl ContainerSpec {
    /// Whether `id` names this container by any of the forms a client may use.
    pub(crate) fn matches(&self, id: &str) -> bool {
        !id.is_empty() && (self.id == id || self.internal_id == id || self.pod_id == id)
    }
}

/// Containers of a node in a containerd namespace (`system` or `k8s.io`).
pub(crate) fn containers(node: &SimNode, namespace: &str) -> Vec<ContainerSpec> {
    let mut r = Rng::new(&format!("{}/containers", node.hostname));
    let mut out = Vec::new();
    if namespace == "system" {
        let mut ids = vec![
            ("apid", "ghcr.io/siderolabs/apid"),
            ("kubelet", "ghcr.io/siderolabs/kubelet:v1.34.1"),
        ];
        if node.role == NodeRole::ControlPlane {
            ids.push(("etcd", "gcr.io/etcd-development/etcd:v3.6.5"));
            ids.push(("trustd", "ghcr.io/siderolabs/trustd"));
        }
        for (id, image) in ids {
            out.push(ContainerSpec {
                id: id.to_owned(),
                internal_id: id.to_owned(),
                image: image.to_owned(),
                pod_id: String::new(),
                name: id.to_owned(),
                pid: 1000 + r.below(3000) as u32,
            });
        }
    } else if namespace == "k8s.io" {
        let suffix = |r: &mut Rng| format!("{:05x}", r.below(0xfffff));
        let mut pods: Vec<(String, &str, &str)> = vec![
            (
                format!("kube-system/kube-proxy-{}", suffix(&mut r)),
                "kube-proxy",
                "registry.k8s.io/kube-proxy:v1.34.1",
            ),
            (
                format!("kube-system/kube-flannel-{}", suffix(&mut r)),
                "kube-flannel",
                "ghcr.io/siderolabs/flannel:v0.27.4",
            ),
        ];
        if node.role == NodeRole::ControlPlane {
            for (c, image) in [
                ("kube-apiserver", "registry.k8s.io/kube-apiserver:v1.34.1"),
                (
                    "kube-controller-manager",
                    "registry.k8s.io/kube-controller-manager:v1.34.1",
                ),
                ("kube-scheduler", "registry.k8s.io/kube-scheduler:v1.34.1"),
            ] {
                pods.push((format!("kube-system/{c}-{}", node.hostname), c, image));
            }
        } else {
            pods.push((
                format!("kube-system/coredns-{}", suffix(&mut r)),
                "coredns",
                "registry.k8s.io/coredns/coredns:v1.12.4",
            ));
        }
        for (pod, name, image) in pods {
            out.push(ContainerSpec {
                id: format!("{pod}:{name}"),
                internal_id: format!(
                    "{:016x}{:016x}{:016x}{:016x}",
                    r.next(),
                    r.next(),
                    r.next(),
                    r.next()
                ),
                image: image.to_owned(),
                pod_id: pod,
                name: name.to_owned(),
                pid: 2000 + r.below(30000) as u32,
            });
        }
    }
    out
}

/// One line of a service or container log.
pub(crate) fn log_line(source: &str, hostname: &str, i: usize) -> String {
    let secs = i as u64;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let (level, msg) = match i % 50 {
        0 => ("error", "failed to reach peer, retrying"),
        7 | 27 => ("warn", "slow request took longer than expected"),
        13 => ("info", "health check successful"),
        _ => ("info", "request processed"),
    };
    format!(
        "2026-11-24T{h:02}:{m:02}:{s:02}.{:03}Z {source}[{hostname}] level={level} msg=\"{msg}\" seq={i}",
        i % 1000
    )
}

/// One line of the kernel ring buffer.
pub(crate) fn dmesg_line(hostname: &str, i: usize) -> String {
    let t = i as f64 * 0.013;
    let (facility, msg) = match i % 40 {
        0 => ("kern: err", "ata1.00: failed command: READ FPDMA QUEUED"),
        5 => (
            "kern: warning",
            "EXT4-fs warning: mounting fs with errors, running e2fsck is recommended",
        ),
        9 => (
            "kern: info",
            "eth0: Link is Up - 10Gbps/Full - flow control off",
        ),
        _ => ("kern: info", "audit: type=1400 audit: apparmor=\"STATUS\""),
    };
    format!("{hostname}: {facility}: [{t:>12.6}]: {msg}")
}

/// Fills `out` with log bytes for lines `from..to`.
pub(crate) fn render_lines(
    from: usize,
    to: usize,
    line: impl Fn(usize) -> String,
    out: &mut Vec<u8>,
) {
    for i in from..to {
        out.extend_from_slice(line(i).as_bytes());
        out.push(b'\n');
    }
}

/// A machine config with the secrets a real one carries (planted values).
pub(crate) fn machine_config(cluster: &str, node: &SimNode, version: &str) -> String {
    let kind = match node.role {
        NodeRole::ControlPlane => "controlplane",
        NodeRole::Worker => "worker",
    };
    format!(
        "version: v1alpha1\ndebug: false\npersist: true\nmachine:\n  type: {kind}\n  token: SIM-SECRET-BOOTSTRAP-TOKEN\n  ca:\n    crt: LS0tLS1CRUdJTi1DRVJU\n    key: SIM-SECRET-CA-KEY\n  certSANs: []\n  kubelet:\n    image: ghcr.io/siderolabs/kubelet:v1.34.1\n  network:\n    hostname: {host}\n  install:\n    disk: /dev/sda\n    image: ghcr.io/siderolabs/installer:{version}\n  env:\n    https_proxy: http://proxyuser:SIM-SECRET-PROXY-PASSWORD@proxy.{cluster}.local:3128\n  files:\n    - path: /var/etc/app/credentials.conf\n      op: create\n      permissions: 0o600\n      content: |\n        login = SIM-SECRET-FILE-CONTENT\n  registries:\n    config:\n      registry.{cluster}.local:\n        auth:\n          username: SIM-SECRET-REGISTRY-USER\n          password: SIM-SECRET-REGISTRY-PASSWORD\n  systemDiskEncryption:\n    state:\n      provider: luks2\n      keys:\n        - slot: 0\n          static:\n            passphrase: SIM-SECRET-DISK-PASSPHRASE\ncluster:\n  id: {id:016x}\n  secret: SIM-SECRET-CLUSTER-SECRET\n  secretboxEncryptionSecret: SIM-SECRET-SECRETBOX\n  controlPlane:\n    endpoint: https://{cluster}.local:6443\n  clusterName: {cluster}\n  etcd:\n    ca:\n      crt: LS0tLS1CRUdJTi1DRVJU\n      key: SIM-SECRET-ETCD-KEY\n  extraManifestHeaders:\n    X-Tenant: SIM-SECRET-MANIFEST-HEADER\n  inlineManifests:\n    - name: app-credentials\n      contents: |\n        apiVersion: v1\n        kind: Secret\n        metadata:\n          name: app-credentials\n          namespace: default\n        stringData:\n          login: SIM-SECRET-INLINE-MANIFEST\n",
        host = node.hostname,
        id = seed(cluster),
    )
}

/// `text` with every planted secret value made the cluster's own: `SIM-SECRET-X` becomes
/// `SIM-SECRET-X-<CLUSTER>` (still matched by leak tests looking for [`PLANTED_SECRETS`]).
pub(crate) fn tag_secrets(text: &str, cluster: &str) -> String {
    const MARK: &str = "SIM-SECRET-";
    let tag: String = cluster
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '-'
            }
        })
        .collect();
    let mut out = String::with_capacity(text.len() + 64);
    let mut rest = text;
    while let Some(at) = rest.find(MARK) {
        let after = &rest[at + MARK.len()..];
        let len = after
            .find(|c: char| !(c.is_ascii_uppercase() || c == '-'))
            .unwrap_or(after.len());
        let name = after[..len].trim_end_matches('-');
        out.push_str(&rest[..at]);
        out.push_str(MARK);
        out.push_str(name);
        out.push('-');
        out.push_str(&tag);
        rest = &after[name.len()..];
    }
    out.push_str(rest);
    out
}

/// Merges the YAML mapping `patch` into the YAML document `base`: mappings merge key by key,
/// anything else in the patch replaces what was there (`null` removes the key).
pub(crate) fn merge_yaml(base: &str, patch: &str) -> Result<String, String> {
    use serde_yaml_ng::Value;
    fn merge(base: &mut Value, patch: Value) {
        match (base, patch) {
            (Value::Mapping(b), Value::Mapping(p)) => {
                for (k, v) in p {
                    if v.is_null() {
                        b.remove(&k);
                    } else if let Some(slot) = b.get_mut(&k) {
                        merge(slot, v);
                    } else {
                        b.insert(k, v);
                    }
                }
            }
            (slot, v) => *slot = v,
        }
    }
    let mut doc: Value = serde_yaml_ng::from_str(base).map_err(|e| e.to_string())?;
    let patch: Value = serde_yaml_ng::from_str(patch).map_err(|e| e.to_string())?;
    if !patch.is_mapping() {
        return Err("the patch must be a YAML mapping".into());
    }
    merge(&mut doc, patch);
    serde_yaml_ng::to_string(&doc).map_err(|e| e.to_string())
}

/// The node's secret files, as machined sees them under `/` (and so under `/proc/1/root`).
pub(crate) fn secret_files(cluster: &str) -> Vec<(String, String)> {
    vec![
        (
            "/system/secrets/kubernetes/kube-apiserver/apiserver.key".into(),
            "-----BEGIN RSA PRIVATE KEY-----\nSIM-SECRET-APISERVER-KEY\n-----END RSA PRIVATE KEY-----\n"
                .into(),
        ),
        (
            "/etc/kubernetes/kubeconfig-kubelet".into(),
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n  - name: {cluster}\n    cluster:\n      server: https://{cluster}.local:6443\nusers:\n  - name: kubelet\n    user:\n      token: SIM-SECRET-KUBELET-TOKEN\n"
            ),
        ),
    ]
}

/// A log file that quotes secrets, as careless software does.
pub(crate) fn leaky_log(hostname: &str) -> String {
    format!(
        "{hostname} app[412]: level=info msg=\"starting\" token=SIM-SECRET-LOG-TOKEN\n\
         {hostname} app[412]: level=debug msg=\"proxy\" url=http://svc:SIM-SECRET-LOG-PROXY@proxy.local:3128/\n\
         {hostname} app[412]: level=debug msg=\"loaded key\"\n\
         -----BEGIN EC PRIVATE KEY-----\nSIM-SECRET-LOG-PRIVATE-KEY\n-----END EC PRIVATE KEY-----\n\
         {hostname} app[412]: level=info msg=\"ready\"\n"
    )
}

/// Stages of the machine status event.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stage {
    Booting,
    Running,
    Rebooting,
    ShuttingDown,
    Resetting,
}

pub(crate) fn machine_status(stage: Stage, ready: bool) -> Vec<u8> {
    use machine::machine_status_event::MachineStage;
    let stage = match stage {
        Stage::Booting => MachineStage::Booting,
        Stage::Running => MachineStage::Running,
        Stage::Rebooting => MachineStage::Rebooting,
        Stage::ShuttingDown => MachineStage::ShuttingDown,
        Stage::Resetting => MachineStage::Resetting,
    };
    machine::MachineStatusEvent {
        stage: stage as i32,
        status: Some(machine::machine_status_event::MachineStatus {
            ready,
            unmet_conditions: if ready {
                vec![]
            } else {
                vec![
                    machine::machine_status_event::machine_status::UnmetCondition {
                        name: "services".into(),
                        reason: "some services are not healthy".into(),
                    },
                ]
            },
        }),
    }
    .encode_to_vec()
}

/// The events a node emits while booting.
pub(crate) fn boot_events(services: &[String]) -> Vec<(&'static str, Vec<u8>)> {
    let mut out = vec![
        ("MachineStatusEvent", machine_status(Stage::Booting, false)),
        (
            "SequenceEvent",
            machine::SequenceEvent {
                sequence: "boot".into(),
                action: machine::sequence_event::Action::Start as i32,
                error: None,
            }
            .encode_to_vec(),
        ),
    ];
    for phase in ["validateConfig", "startEverything"] {
        out.push((
            "PhaseEvent",
            machine::PhaseEvent {
                phase: phase.into(),
                action: machine::phase_event::Action::Start as i32,
            }
            .encode_to_vec(),
        ));
    }
    for service in services {
        out.push((
            "ServiceStateEvent",
            machine::ServiceStateEvent {
                service: service.clone(),
                action: machine::service_state_event::Action::Running as i32,
                message: "Health check successful".into(),
                health: Some(machine::ServiceHealth {
                    unknown: false,
                    healthy: true,
                    last_message: String::new(),
                    last_change: None,
                }),
            }
            .encode_to_vec(),
        ));
    }
    out.push((
        "SequenceEvent",
        machine::SequenceEvent {
            sequence: "boot".into(),
            action: machine::sequence_event::Action::Stop as i32,
            error: None,
        }
        .encode_to_vec(),
    ));
    out.push(("MachineStatusEvent", machine_status(Stage::Running, true)));
    out
}

/// A kubeconfig for the cluster, with a planted client key.
pub(crate) fn kubeconfig(cluster: &str) -> String {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n  - name: {cluster}\n    cluster:\n      server: https://{cluster}.local:6443\n      certificate-authority-data: {ca}\nusers:\n  - name: admin@{cluster}\n    user:\n      client-certificate-data: {crt}\n      client-key-data: {key}\ncontexts:\n  - context:\n      cluster: {cluster}\n      namespace: default\n      user: admin@{cluster}\n    name: admin@{cluster}\ncurrent-context: admin@{cluster}\n",
        ca = b64("sim-ca-certificate"),
        crt = b64("sim-client-certificate"),
        key = b64("SIM-SECRET-KUBECONFIG-KEY"),
    )
}
