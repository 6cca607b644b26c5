//! Admission: who may call what, decided once for every RPC.
//!
//! apid authorizes by role: the client certificate's subject Organization names the roles, and
//! each gRPC method path has the set of roles allowed to call it; a method missing from the
//! table is admin-only. [`RULES`] is that table for every method the simulator serves, and
//! [`AdmissionLayer`] is the one tower layer in front of all services that applies it (after
//! picking the target node from the `node` metadata and recording the call, before the node's
//! injected fault). Handlers find the outcome, [`Admitted`](crate::state::Admitted), in the
//! request's extensions; COSI handlers additionally refuse sensitive resource types to
//! non-admins, as Talos does per resource type.

use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::http;

use crate::state::Shared;

/// A Talos API role, as carried in a client certificate's subject Organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// `os:admin`: everything.
    Admin,
    /// `os:operator`: reads, plus reboots, service actions, etcd maintenance, image pulls.
    Operator,
    /// `os:reader`: reads that do not reveal secrets.
    Reader,
    /// `os:etcd:backup`: etcd snapshots and etcd reads.
    EtcdBackup,
    /// `os:impersonator`: its requests carry the roles to act with in the `talos-role`
    /// metadata (how apid forwards a caller's roles); without that metadata it has no rights.
    Impersonator,
}

impl Role {
    /// Every role, in the order above.
    pub const ALL: [Self; 5] = [
        Self::Admin,
        Self::Operator,
        Self::Reader,
        Self::EtcdBackup,
        Self::Impersonator,
    ];

    /// The role's name in certificates and metadata (`os:admin`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "os:admin",
            Self::Operator => "os:operator",
            Self::Reader => "os:reader",
            Self::EtcdBackup => "os:etcd:backup",
            Self::Impersonator => "os:impersonator",
        }
    }

    /// The role a name stands for (`None`: not a Talos role).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == name.trim())
    }
}

/// The set of roles allowed to call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// admin, operator, reader.
    Read,
    /// admin, operator, reader, etcd:backup (etcd reads).
    EtcdRead,
    /// admin, operator.
    Operate,
    /// admin, operator, etcd:backup (etcd snapshots).
    EtcdBackup,
    /// admin only (also every method missing from [`RULES`]).
    Admin,
}

impl Access {
    /// The roles this access admits.
    pub fn roles(self) -> &'static [Role] {
        match self {
            Self::Read => &[Role::Admin, Role::Operator, Role::Reader],
            Self::EtcdRead => &[Role::Admin, Role::Operator, Role::Reader, Role::EtcdBackup],
            Self::Operate => &[Role::Admin, Role::Operator],
            Self::EtcdBackup => &[Role::Admin, Role::Operator, Role::EtcdBackup],
            Self::Admin => &[Role::Admin],
        }
    }

    /// Whether a caller holding `roles` is admitted.
    pub fn allows(self, roles: &[Role]) -> bool {
        roles.iter().any(|r| self.roles().contains(r))
    }
}

/// Method path → who may call it, for every method the simulator serves (apid's table).
pub const RULES: &[(&str, Access)] = &[
    ("/machine.MachineService/ApplyConfiguration", Access::Admin),
    ("/machine.MachineService/Bootstrap", Access::Admin),
    ("/machine.MachineService/CPUInfo", Access::Read),
    ("/machine.MachineService/Containers", Access::Read),
    ("/machine.MachineService/DiskStats", Access::Read),
    ("/machine.MachineService/DiskUsage", Access::Read),
    ("/machine.MachineService/Dmesg", Access::Read),
    ("/machine.MachineService/EtcdAlarmDisarm", Access::Operate),
    ("/machine.MachineService/EtcdAlarmList", Access::EtcdRead),
    ("/machine.MachineService/EtcdDefragment", Access::Operate),
    (
        "/machine.MachineService/EtcdForfeitLeadership",
        Access::Admin,
    ),
    ("/machine.MachineService/EtcdLeaveCluster", Access::Admin),
    ("/machine.MachineService/EtcdMemberList", Access::EtcdRead),
    ("/machine.MachineService/EtcdRecover", Access::Admin),
    (
        "/machine.MachineService/EtcdRemoveMemberByID",
        Access::Admin,
    ),
    ("/machine.MachineService/EtcdSnapshot", Access::EtcdBackup),
    ("/machine.MachineService/EtcdStatus", Access::EtcdRead),
    ("/machine.MachineService/Events", Access::Read),
    ("/machine.MachineService/Hostname", Access::Read),
    ("/machine.MachineService/ImageList", Access::Read),
    ("/machine.MachineService/ImagePull", Access::Operate),
    ("/machine.MachineService/Kubeconfig", Access::Admin),
    ("/machine.MachineService/List", Access::Read),
    ("/machine.MachineService/LoadAvg", Access::Read),
    ("/machine.MachineService/Logs", Access::Read),
    ("/machine.MachineService/LogsContainers", Access::Read),
    ("/machine.MachineService/Memory", Access::Read),
    ("/machine.MachineService/Mounts", Access::Read),
    ("/machine.MachineService/NetworkDeviceStats", Access::Read),
    ("/machine.MachineService/Netstat", Access::Read),
    ("/machine.MachineService/Processes", Access::Read),
    ("/machine.MachineService/Read", Access::Admin),
    ("/machine.MachineService/Reboot", Access::Operate),
    ("/machine.MachineService/Reset", Access::Admin),
    ("/machine.MachineService/Restart", Access::Operate),
    ("/machine.MachineService/Rollback", Access::Admin),
    ("/machine.MachineService/ServiceList", Access::Read),
    ("/machine.MachineService/ServiceRestart", Access::Operate),
    ("/machine.MachineService/ServiceStart", Access::Operate),
    ("/machine.MachineService/ServiceStop", Access::Operate),
    ("/machine.MachineService/Shutdown", Access::Operate),
    ("/machine.MachineService/Stats", Access::Read),
    ("/machine.MachineService/SystemStat", Access::Read),
    ("/machine.MachineService/Upgrade", Access::Admin),
    ("/machine.MachineService/Version", Access::Read),
    ("/machine.ImageService/List", Access::Read),
    ("/machine.ImageService/Pull", Access::Operate),
    ("/machine.ImageService/Remove", Access::Admin),
    ("/machine.ImageService/Verify", Access::Read),
    ("/machine.LifecycleService/Install", Access::Admin),
    ("/machine.LifecycleService/Upgrade", Access::Admin),
    ("/cluster.ClusterService/HealthCheck", Access::Read),
    ("/storage.StorageService/Disks", Access::Read),
    ("/storage.StorageService/BlockDeviceWipe", Access::Admin),
    ("/time.TimeService/Time", Access::Read),
    ("/time.TimeService/TimeCheck", Access::Read),
    // Reads are checked again per resource type by the handlers (sensitive types: admin).
    ("/cosi.resource.State/Get", Access::Read),
    ("/cosi.resource.State/List", Access::Read),
    ("/cosi.resource.State/Watch", Access::Read),
    ("/cosi.resource.State/Create", Access::Admin),
    ("/cosi.resource.State/Update", Access::Admin),
    ("/cosi.resource.State/Destroy", Access::Admin),
    ("/cosi.resource.State/Teardown", Access::Admin),
    ("/cosi.resource.State/TeardownAndDestroy", Access::Admin),
];

/// Who may call the method at `path`: its entry in [`RULES`], else admin only (apid's fallback).
pub fn required(path: &str) -> Access {
    RULES
        .iter()
        .find(|(p, _)| *p == path)
        .map_or(Access::Admin, |(_, a)| *a)
}

/// The name calls to `path` are counted under ([`SimCluster::calls`](crate::SimCluster::calls)):
/// the method for the Machine, Cluster, Storage and Time services (`Version`, `HealthCheck`),
/// `Service.Method` for the others (`ImageService.List`, `State.Get`).
pub fn call_name(path: &str) -> String {
    let path = path.trim_start_matches('/');
    let (service, method) = path.rsplit_once('/').unwrap_or(("", path));
    let service = service.rsplit('.').next().unwrap_or(service);
    match service {
        "MachineService" | "ClusterService" | "StorageService" | "TimeService" => method.to_owned(),
        _ => format!("{service}.{method}"),
    }
}

/// The roles a request acts with: the certificate's role, or for an `os:impersonator`
/// certificate the roles in its `talos-role` metadata.
fn roles_of(peer: Option<&str>, headers: &http::HeaderMap) -> Vec<Role> {
    let Some(role) = peer.and_then(Role::parse) else {
        return Vec::new();
    };
    if role == Role::Impersonator {
        let forwarded: Vec<Role> = headers
            .get_all("talos-role")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(Role::parse)
            .collect();
        if !forwarded.is_empty() {
            return forwarded;
        }
    }
    vec![role]
}

/// The tower layer that admits every RPC (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct AdmissionLayer(pub(crate) Arc<Shared>);

impl<S> tower::Layer<S> for AdmissionLayer {
    type Service = Admission<S>;

    fn layer(&self, inner: S) -> Admission<S> {
        Admission {
            shared: self.0.clone(),
            inner,
        }
    }
}

/// The service [`AdmissionLayer`] wraps around the router.
#[derive(Debug, Clone)]
pub(crate) struct Admission<S> {
    shared: Arc<Shared>,
    inner: S,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Admission<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The ready service is the one to call; leave a fresh clone in its place.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let shared = self.shared.clone();
        Box::pin(async move {
            let path = request.uri().path().to_owned();
            let peer = request
                .extensions()
                .get::<crate::tls::PeerRole>()
                .and_then(|r| r.0.clone());
            let roles = roles_of(peer.as_deref(), request.headers());
            let target = request
                .headers()
                .get("node")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            match shared
                .admit(&path, required(&path), roles, target.as_deref())
                .await
            {
                Ok(admitted) => {
                    request.extensions_mut().insert(admitted);
                    inner.call(request).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_are_admin_only() {
        assert_eq!(required("/machine.MachineService/Version"), Access::Read);
        assert_eq!(
            required("/machine.MachineService/NoSuchThing"),
            Access::Admin
        );
        assert_eq!(required(""), Access::Admin);
    }

    #[test]
    fn call_names_match_the_counters() {
        assert_eq!(call_name("/machine.MachineService/Version"), "Version");
        assert_eq!(call_name("/machine.ImageService/List"), "ImageService.List");
        assert_eq!(call_name("/cosi.resource.State/Get"), "State.Get");
        assert_eq!(
            call_name("/cluster.ClusterService/HealthCheck"),
            "HealthCheck"
        );
    }

    #[test]
    fn impersonators_act_with_forwarded_roles_only() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(
            roles_of(Some("os:impersonator"), &headers),
            vec![Role::Impersonator]
        );
        headers.append("talos-role", http::HeaderValue::from_static("os:reader"));
        assert_eq!(
            roles_of(Some("os:impersonator"), &headers),
            vec![Role::Reader]
        );
        // Only an impersonator may forward roles.
        headers.insert("talos-role", http::HeaderValue::from_static("os:admin"));
        assert_eq!(roles_of(Some("os:reader"), &headers), vec![Role::Reader]);
        assert!(roles_of(None, &headers).is_empty());
        assert!(roles_of(Some("os:root"), &headers).is_empty());
    }

    #[test]
    fn every_rule_is_unique() {
        let mut paths: Vec<&str> = RULES.iter().map(|(p, _)| *p).collect();
        paths.sort_unstable();
        let before = paths.len();
        paths.dedup();
        assert_eq!(before, paths.len());
    }
}
