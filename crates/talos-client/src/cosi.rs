//! COSI resource kinds as typed constants: the namespace and fully qualified type of the
//! resources Talos serves through `cosi.resource.State`.

use std::fmt;

/// A COSI resource kind: the namespace its resources live in and its fully qualified type.
///
/// Pass `kind.namespace` and `kind.resource_type` to [`crate::Resources`] calls; the constants
/// in [`kinds`] name the kinds Talos serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ResourceKind {
    /// The namespace, e.g. `cluster`.
    pub namespace: &'static str,
    /// The fully qualified, plural type, e.g. `Members.cluster.talos.dev`.
    pub resource_type: &'static str,
}

impl ResourceKind {
    /// A kind from its namespace and fully qualified type.
    pub const fn new(namespace: &'static str, resource_type: &'static str) -> Self {
        Self {
            namespace,
            resource_type,
        }
    }

    /// Whether resources of this kind hold secrets: everything in the `secrets` namespace or of a
    /// `*.secrets.talos.dev` type, and the machine configuration (which embeds them).
    pub fn is_sensitive(&self) -> bool {
        is_sensitive(self.namespace, self.resource_type)
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.resource_type)
    }
}

/// Whether resources of `resource_type` in `namespace` hold secrets (see
/// [`ResourceKind::is_sensitive`]); the type is compared without regard to case.
pub fn is_sensitive(namespace: &str, resource_type: &str) -> bool {
    let t = resource_type.to_ascii_lowercase();
    namespace == "secrets"
        || t.ends_with(".secrets.talos.dev")
        || t == kinds::MACHINE_CONFIGS.resource_type.to_ascii_lowercase()
}

/// The resource kinds Talos serves that clients commonly read.
pub mod kinds {
    use super::ResourceKind;

    /// Definitions of every resource type (aliases, default namespace, sensitivity).
    pub const RESOURCE_DEFINITIONS: ResourceKind =
        ResourceKind::new("meta", "ResourceDefinitions.meta.cosi.dev");
    /// Cluster members found by Talos discovery.
    pub const MEMBERS: ResourceKind = ResourceKind::new("cluster", "Members.cluster.talos.dev");
    /// The machine configuration (id `v1alpha1`). Holds secrets.
    pub const MACHINE_CONFIGS: ResourceKind =
        ResourceKind::new("config", "MachineConfigs.config.talos.dev");
    /// The machine's stage and readiness.
    pub const MACHINE_STATUSES: ResourceKind =
        ResourceKind::new("runtime", "MachineStatuses.runtime.talos.dev");
    /// The running Talos version.
    pub const VERSIONS: ResourceKind = ResourceKind::new("runtime", "Versions.runtime.talos.dev");
    /// The boot id, which changes on every boot.
    pub const BOOT_IDS: ResourceKind = ResourceKind::new("runtime", "BootIDs.runtime.talos.dev");
    /// Services and their health.
    pub const SERVICES: ResourceKind = ResourceKind::new("runtime", "Services.v1alpha1.talos.dev");
    /// Block devices.
    pub const DISKS: ResourceKind = ResourceKind::new("runtime", "Disks.block.talos.dev");
    /// etcd members as Talos sees them.
    pub const ETCD_MEMBERS: ResourceKind = ResourceKind::new("etcd", "EtcdMembers.etcd.talos.dev");
    /// The node's Kubernetes node name.
    pub const NODENAMES: ResourceKind = ResourceKind::new("k8s", "Nodenames.kubernetes.talos.dev");
    /// Addresses of the network links.
    pub const ADDRESS_STATUSES: ResourceKind =
        ResourceKind::new("network", "AddressStatuses.net.talos.dev");
    /// Network links.
    pub const LINK_STATUSES: ResourceKind =
        ResourceKind::new("network", "LinkStatuses.net.talos.dev");
    /// Routes.
    pub const ROUTE_STATUSES: ResourceKind =
        ResourceKind::new("network", "RouteStatuses.net.talos.dev");
    /// Hardware: system information (vendor, product, serial).
    pub const SYSTEM_INFORMATIONS: ResourceKind =
        ResourceKind::new("hardware", "SystemInformations.hardware.talos.dev");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_the_machine_config_are_sensitive() {
        assert!(kinds::MACHINE_CONFIGS.is_sensitive());
        assert!(is_sensitive("secrets", "OSRootSecrets.secrets.talos.dev"));
        assert!(is_sensitive("other", "KubeletSecrets.SECRETS.talos.dev"));
        assert!(is_sensitive("config", "machineconfigs.config.talos.dev"));
        for kind in [
            kinds::MEMBERS,
            kinds::VERSIONS,
            kinds::BOOT_IDS,
            kinds::ADDRESS_STATUSES,
            kinds::RESOURCE_DEFINITIONS,
        ] {
            assert!(!kind.is_sensitive(), "{kind}");
        }
    }

    #[test]
    fn kinds_are_plural_qualified_types() {
        for kind in [
            kinds::RESOURCE_DEFINITIONS,
            kinds::MEMBERS,
            kinds::MACHINE_CONFIGS,
            kinds::MACHINE_STATUSES,
            kinds::VERSIONS,
            kinds::BOOT_IDS,
            kinds::SERVICES,
            kinds::DISKS,
            kinds::ETCD_MEMBERS,
            kinds::NODENAMES,
            kinds::ADDRESS_STATUSES,
            kinds::LINK_STATUSES,
            kinds::ROUTE_STATUSES,
            kinds::SYSTEM_INFORMATIONS,
        ] {
            let (singular, group) = kind.resource_type.split_once('.').unwrap_or_default();
            assert!(singular.ends_with('s'), "{kind}");
            assert!(group.ends_with(".dev"), "{kind}");
            assert!(!kind.namespace.is_empty(), "{kind}");
        }
        assert_eq!(
            kinds::MEMBERS.to_string(),
            "cluster/Members.cluster.talos.dev"
        );
    }
}
