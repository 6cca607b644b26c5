//! Workloads: containers, container stats, Talos services, images.

use super::actions::Change;
use crate::call::{Call, Reply};
use crate::registry::{Effect, ToolDef, Toolset, tool};
use crate::safety::Tier;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use talos_client::ContainerNamespace;

use super::{bounded, bytes};
use crate::error::ToolError;
use crate::output::{Keep, PerNode};
use crate::server::{TalosMcp, TargetArgs};

/// Arguments of talos_list_containers.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct ContainersArgs {
    #[serde(flatten)]
    pub target: TargetArgs,
    /// Default `system` (Talos services).
    #[serde(default)]
    pub namespace: Option<Namespace>,
    /// Only ids, names, pods or images containing this text.
    #[serde(default)]
    pub filter: Option<String>,
    /// Per node (1–500, default 100).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// Arguments of talos_container_stats: those of talos_list_containers with another default
/// namespace (a type of its own so that each schema states its default in a few words).
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct ContainerStatsArgs {
    #[serde(flatten)]
    pub target: TargetArgs,
    /// Default `k8s.io` (Kubernetes pods).
    #[serde(default)]
    pub namespace: Option<Namespace>,
    /// Only ids, names or pods containing this text.
    #[serde(default)]
    pub filter: Option<String>,
    /// Per node (1–500, default 100).
    #[serde(default)]
    pub limit: Option<u32>,
}

// A containerd namespace: `system` (Talos services) or `k8s.io` (Kubernetes; also spelled
// `cri` or `k8s`). Enum types carry no doc comment: it would be repeated in the schemas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum Namespace {
    #[serde(rename = "system")]
    System,
    #[serde(rename = "k8s.io", alias = "cri", alias = "k8s")]
    K8s,
}

impl From<Namespace> for ContainerNamespace {
    fn from(ns: Namespace) -> Self {
        match ns {
            Namespace::System => Self::System,
            Namespace::K8s => Self::Cri,
        }
    }
}

/// A container.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ContainerOut {
    pub id: String,
    pub name: String,
    /// Pod (`namespace/name`) for Kubernetes containers.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub pod: String,
    pub image: String,
    pub status: String,
    pub pid: u32,
}

/// Containers of a node.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ContainersOut {
    /// Matching containers in total (before `limit`).
    pub matched: usize,
    pub containers: Vec<ContainerOut>,
}

/// Resource use of a container.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ContainerStatOut {
    pub id: String,
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub pod: String,
    pub memory_bytes: u64,
    /// Cumulative CPU time, seconds.
    pub cpu_seconds: f64,
}

/// Arguments of talos_services.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct ServicesArgs {
    #[serde(flatten)]
    pub target: TargetArgs,
    /// Only this service, e.g. `etcd`.
    #[serde(default)]
    pub service: Option<String>,
    /// Recent events per service (0–20, default 3).
    #[serde(default)]
    pub events: Option<u32>,
}

/// A Talos service.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ServiceOut {
    pub id: String,
    /// Running, Finished, Waiting, Preparing, Failed, …
    pub state: String,
    /// Health: `healthy`, `unhealthy` or `unknown`.
    pub health: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub health_message: String,
    /// Most recent events, oldest first: "state: message".
    pub recent_events: Vec<String>,
}

/// Arguments of talos_images.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct ImagesArgs {
    #[serde(flatten)]
    pub target: TargetArgs,
    /// Default `k8s.io` (images Kubernetes uses).
    #[serde(default)]
    pub namespace: Option<Namespace>,
    /// Only references containing this text.
    #[serde(default)]
    pub filter: Option<String>,
    /// Per node (1–500, default 100).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// A cached image.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ImageOut {
    pub name: String,
    pub digest: String,
    pub size_bytes: u64,
}

/// The namespace (with its default) and the 1–500 `limit` (default 100) shared by the container
/// and image tools.
fn namespace_and_limit(
    ns: Option<Namespace>,
    default: Namespace,
    limit: Option<u32>,
) -> Result<(ContainerNamespace, usize), ToolError> {
    Ok((
        ns.unwrap_or(default).into(),
        bounded("limit", limit.unwrap_or(100), 1, 500)? as usize,
    ))
}

fn matches(filter: &Option<String>, fields: &[&str]) -> bool {
    filter.as_ref().is_none_or(|f| {
        fields
            .iter()
            .any(|x| x.to_lowercase().contains(&f.to_lowercase()))
    })
}

impl TalosMcp {
    /// Containers per node.
    pub(crate) async fn talos_list_containers(
        &self,
        _call: &Call,
        args: ContainersArgs,
    ) -> Result<Reply<PerNode<ContainersOut>>, ToolError> {
        let (ns, limit) = namespace_and_limit(args.namespace, Namespace::System, args.limit)?;
        let filter = args.filter.clone();
        let result = self
            .per_node(&args.target, |api, opts| {
                let filter = filter.clone();
                async move {
                    let all: Vec<_> = api
                        .containers(&opts, ns)
                        .await?
                        .into_iter()
                        .filter(|c| matches(&filter, &[&c.id, &c.name, &c.pod_id, &c.image]))
                        .collect();
                    Ok(ContainersOut {
                        matched: all.len(),
                        containers: all
                            .into_iter()
                            .take(limit)
                            .map(|c| ContainerOut {
                                id: c.id,
                                name: c.name,
                                pod: c.pod_id,
                                image: c.image,
                                status: c.status,
                                pid: c.pid,
                            })
                            .collect(),
                    })
                }
            })
            .await;
        self.respond(
            "talos_list_containers",
            result,
            |c| {
                let names: Vec<String> = c
                    .containers
                    .iter()
                    .take(5)
                    .map(|x| {
                        if x.pod.is_empty() {
                            x.name.clone()
                        } else {
                            x.pod.clone()
                        }
                    })
                    .collect();
                format!("{} containers: {}", c.matched, names.join(", "))
            },
            Keep::First,
            "add a `filter` or lower `limit`",
        )
    }

    /// Container resource use per node.
    pub(crate) async fn talos_container_stats(
        &self,
        _call: &Call,
        args: ContainerStatsArgs,
    ) -> Result<Reply<PerNode<Vec<ContainerStatOut>>>, ToolError> {
        let (ns, limit) = namespace_and_limit(args.namespace, Namespace::K8s, args.limit)?;
        let filter = args.filter.clone();
        let result = self
            .per_node(&args.target, |api, opts| {
                let filter = filter.clone();
                async move {
                    let mut stats: Vec<_> = api
                        .container_stats(&opts, ns)
                        .await?
                        .into_iter()
                        .filter(|s| matches(&filter, &[&s.id, &s.name, &s.pod_id]))
                        .collect();
                    stats.sort_by_key(|s| std::cmp::Reverse(s.memory_usage));
                    Ok(stats
                        .into_iter()
                        .take(limit)
                        .map(|s| ContainerStatOut {
                            id: s.id,
                            name: s.name,
                            pod: s.pod_id,
                            memory_bytes: s.memory_usage,
                            cpu_seconds: s.cpu_usage as f64 / 1e9,
                        })
                        .collect::<Vec<_>>())
                }
            })
            .await;
        self.respond(
            "talos_container_stats",
            result,
            |s| match s.first() {
                Some(top) => format!(
                    "{} containers; largest {} ({})",
                    s.len(),
                    top.name,
                    bytes(top.memory_bytes)
                ),
                None => "no containers".into(),
            },
            Keep::First,
            "add a `filter` or lower `limit`",
        )
    }

    /// Talos services.
    pub(crate) async fn talos_services(
        &self,
        _call: &Call,
        args: ServicesArgs,
    ) -> Result<Reply<PerNode<Vec<ServiceOut>>>, ToolError> {
        let events = bounded("events", args.events.unwrap_or(3), 0, 20)? as usize;
        let only = args.service.clone();
        let result = self
            .per_node(&args.target, |api, opts| {
                let only = only.clone();
                async move {
                    let services = api.services(&opts).await?;
                    if let Some(name) = &only
                        && !services.iter().any(|s| &s.id == name)
                    {
                        return Err(talos_client::TalosError::NotFound {
                            target: talos_client::Target {
                                endpoint: None,
                                node: opts.node.clone(),
                            },
                            message: format!(
                                "no service `{name}`; services: {}",
                                services
                                    .iter()
                                    .map(|s| s.id.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        });
                    }
                    Ok(services
                        .into_iter()
                        .filter(|s| only.as_ref().is_none_or(|n| &s.id == n))
                        .map(|s| {
                            let skip = s.events.len().saturating_sub(events);
                            ServiceOut {
                                health: if s.health.unknown {
                                    "unknown".into()
                                } else if s.health.healthy {
                                    "healthy".into()
                                } else {
                                    "unhealthy".into()
                                },
                                health_message: s.health.last_message,
                                recent_events: s
                                    .events
                                    .into_iter()
                                    .skip(skip)
                                    .map(|e| format!("{}: {}", e.state, e.message))
                                    .collect(),
                                id: s.id,
                                state: s.state,
                            }
                        })
                        .collect::<Vec<_>>())
                }
            })
            .await;
        self.respond(
            "talos_services",
            result,
            |ss| {
                let bad: Vec<String> = ss
                    .iter()
                    .filter(|s| s.state != "Running" || s.health == "unhealthy")
                    .map(|s| format!("{} {} ({})", s.id, s.state, s.health))
                    .collect();
                if bad.is_empty() {
                    format!("{} services, all running", ss.len())
                } else {
                    format!("{} services; attention: {}", ss.len(), bad.join(", "))
                }
            },
            Keep::First,
            "name one `service`, or lower `events`",
        )
    }

    /// Cached images.
    pub(crate) async fn talos_images(
        &self,
        _call: &Call,
        args: ImagesArgs,
    ) -> Result<Reply<PerNode<Vec<ImageOut>>>, ToolError> {
        let (ns, limit) = namespace_and_limit(args.namespace, Namespace::K8s, args.limit)?;
        let filter = args.filter.clone();
        let result = self
            .per_node(&args.target, |api, opts| {
                let filter = filter.clone();
                async move {
                    Ok(api
                        .images(&opts, ns)
                        .await?
                        .into_iter()
                        .filter(|i| matches(&filter, &[&i.name]))
                        .take(limit)
                        .map(|i| ImageOut {
                            name: i.name,
                            digest: i.digest,
                            size_bytes: i.size,
                        })
                        .collect::<Vec<_>>())
                }
            })
            .await;
        self.respond(
            "talos_images",
            result,
            |is| {
                format!(
                    "{} images ({})",
                    is.len(),
                    bytes(is.iter().map(|i| i.size_bytes).sum())
                )
            },
            Keep::First,
            "add a `filter` or lower `limit`",
        )
    }
}

/// Arguments of the service action tools.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct ServiceActionArgs {
    #[serde(flatten)]
    pub target: super::actions::NodeTarget,
    /// Service id, e.g. `kubelet`.
    pub service: String,
}

/// Arguments of talos_image_pull.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct ImagePullArgs {
    #[serde(flatten)]
    pub target: super::actions::NodeTarget,
    /// Image reference, e.g. `registry.k8s.io/pause:3.10`.
    pub image: String,
    /// Default `k8s.io`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<Namespace>,
}

/// What a service or image action did.
#[derive(Debug, Serialize, JsonSchema)]
pub struct MessageOut {
    pub message: String,
}

/// Services whose stop or restart takes the node's part of the cluster down: confirmed like
/// destructive calls.
const CRITICAL_SERVICES: &[&str] = &[
    "apid",
    "containerd",
    "cri",
    "etcd",
    "kubelet",
    "machined",
    "trustd",
    "udevd",
];

/// Services whose stop or restart runs the etcd quorum preflight.
const QUORUM_SERVICES: &[&str] = &["etcd", "kubelet", "apid"];

/// The tier a stop or restart runs at: stopping a service the node (or the cluster) depends on
/// is an outage, confirmed like a destructive call.
fn takes_down_tier(args: &ServiceActionArgs) -> Tier {
    if CRITICAL_SERVICES.contains(&args.service.trim()) {
        Tier::Destructive
    } else {
        Tier::Write
    }
}

impl TalosMcp {
    async fn service_action(
        &self,
        call: &Call,
        args: ServiceActionArgs,
        action: talos_client::ServiceAction,
    ) -> Result<Reply<super::actions::ActionOut<MessageOut>>, ToolError> {
        let service = args.service.trim().to_owned();
        if service.is_empty() {
            return Err(ToolError::invalid("service", "is required, e.g. `kubelet`"));
        }
        let verb = format!("{action:?}").to_lowercase();
        let target = args.target.clone();
        let svc = service.clone();
        let takes_down = action != talos_client::ServiceAction::Start;
        // Stopping or restarting a service the node (or the cluster) depends on is checked
        // against etcd quorum where it matters (and confirmed as destructive: `takes_down_tier`).
        let quorum_check = takes_down && QUORUM_SERVICES.contains(&service.as_str());
        let askable = self.askable(args.target.context.as_deref());
        self.action(
            call,
            Change {
                args: &args,
                target: &target,
                force: false,
            },
            |api, opts| async move {
                let services = api.services(&opts).await?;
                let current = services.iter().find(|s| s.id == svc).ok_or_else(|| {
                    ToolError::invalid(
                        "service",
                        format!(
                            "`{svc}` is not a service of this node; services: {}",
                            services
                                .iter()
                                .map(|s| s.id.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                })?;
                let effect = format!("{verb} the Talos service {svc} (now {})", current.state);
                if !quorum_check {
                    return Ok(super::actions::Prepared::new(effect, vec![]));
                }
                Ok(super::lifecycle::quorum_preflight(api.as_ref(), &opts, &askable, false, format!(
                    "{effect}; while it is down the node's control-plane part (etcd member, API access or kubelet) is unavailable"
                ))
                .await)
            },
            |api, opts, ()| async move {
                Ok(MessageOut {
                    message: api.service_action(&opts, &service, action).await?,
                })
            },
            |o| o.message.clone(),
        )
        .await
    }
}

impl TalosMcp {
    /// Start a service.
    pub(crate) async fn talos_service_start(
        &self,
        call: &Call,
        args: ServiceActionArgs,
    ) -> Result<Reply<super::actions::ActionOut<MessageOut>>, ToolError> {
        self.service_action(call, args, talos_client::ServiceAction::Start)
            .await
    }

    /// Stop a service.
    pub(crate) async fn talos_service_stop(
        &self,
        call: &Call,
        args: ServiceActionArgs,
    ) -> Result<Reply<super::actions::ActionOut<MessageOut>>, ToolError> {
        self.service_action(call, args, talos_client::ServiceAction::Stop)
            .await
    }

    /// Restart a service.
    pub(crate) async fn talos_service_restart(
        &self,
        call: &Call,
        args: ServiceActionArgs,
    ) -> Result<Reply<super::actions::ActionOut<MessageOut>>, ToolError> {
        self.service_action(call, args, talos_client::ServiceAction::Restart)
            .await
    }

    /// Pull an image.
    pub(crate) async fn talos_image_pull(
        &self,
        call: &Call,
        args: ImagePullArgs,
    ) -> Result<Reply<super::actions::ActionOut<MessageOut>>, ToolError> {
        let ns = ContainerNamespace::from(args.namespace.unwrap_or(Namespace::K8s));
        let image = args.image.trim().to_owned();
        if image.is_empty() || image.contains(char::is_whitespace) {
            return Err(ToolError::invalid(
                "image",
                "must be an image reference such as registry.k8s.io/pause:3.10",
            ));
        }
        let target = args.target.clone();
        let effect = format!("pull {image} into the {} image cache", ns.as_str());
        self.action(
            call,
            Change {
                args: &args,
                target: &target,
                force: false,
            },
            |_, _| async move { Ok(super::actions::Prepared::new(effect, vec![])) },
            |api, opts, ()| async move {
                Ok(MessageOut {
                    message: format!("pulled {}", api.image_pull(&opts, ns, &image).await?),
                })
            },
            |o| o.message.clone(),
        )
        .await
    }
}

/// The tools of this module, in listing order.
pub(crate) fn tools() -> Vec<ToolDef> {
    vec![
        tool(
            Toolset::Workloads,
            "talos_list_containers",
            "List containers",
            "Containers of each node: Talos services (`system`) or Kubernetes pods (`k8s.io`).",
        )
        .run(TalosMcp::talos_list_containers)
        .build(),
        tool(
            Toolset::Workloads,
            "talos_container_stats",
            "Container stats",
            "Memory and CPU of containers on each node, largest memory first.",
        )
        .run(TalosMcp::talos_container_stats)
        .build(),
        tool(
            Toolset::Workloads,
            "talos_services",
            "Services",
            "Talos services of each node (etcd, kubelet, apid, …): state, health, recent events.",
        )
        .run(TalosMcp::talos_services)
        .build(),
        tool(
            Toolset::Workloads,
            "talos_images",
            "Images",
            "Container images cached on each node.",
        )
        .run(TalosMcp::talos_images)
        .build(),
        tool(
            Toolset::Workloads,
            "talos_service_start",
            "Start service",
            "Starts a Talos service on one node.",
        )
        .tier(Tier::Write)
        .effect(Effect::Changes { idempotent: true })
        .run(TalosMcp::talos_service_start)
        .build(),
        tool(
            Toolset::Workloads,
            "talos_service_stop",
            "Stop service",
            "Stops a Talos service on one node. etcd, kubelet, apid, trustd, containerd, cri, machined, udevd: always confirmed; etcd, kubelet, apid: refused if etcd would lose quorum.",
        )
        .tier(Tier::Write)
        .effect(Effect::Destroys { idempotent: true })
        .run(TalosMcp::talos_service_stop)
        .tier_by(takes_down_tier)
        .build(),
        tool(
            Toolset::Workloads,
            "talos_service_restart",
            "Restart service",
            "Restarts a Talos service on one node. etcd, kubelet, apid, trustd, containerd, cri, machined, udevd: always confirmed; etcd, kubelet, apid: refused if etcd would lose quorum.",
        )
        .tier(Tier::Write)
        .run(TalosMcp::talos_service_restart)
        .tier_by(takes_down_tier)
        .build(),
        tool(
            Toolset::Workloads,
            "talos_image_pull",
            "Pull image",
            "Pulls an image into one node's cache, e.g. to pre-stage an upgrade.",
        )
        .tier(Tier::Write)
        .effect(Effect::Changes { idempotent: true })
        .run(TalosMcp::talos_image_pull)
        .build(),
    ]
}

super::targeted_by_field!(
    ContainersArgs,
    ContainerStatsArgs,
    ServicesArgs,
    ImagesArgs,
    ServiceActionArgs,
    ImagePullArgs
);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::registry::Registry;
    use serde_json::json;

    #[test]
    fn namespaces_are_an_enum_in_every_schema() {
        for tool in [
            "talos_list_containers",
            "talos_container_stats",
            "talos_images",
            "talos_image_pull",
        ] {
            let def = Registry::get().find(tool).unwrap();
            assert_eq!(
                def.listing.input_schema["properties"]["namespace"]["enum"],
                json!(["system", "k8s.io"]),
                "{tool}"
            );
        }
    }

    #[test]
    fn each_container_tool_states_its_own_default_namespace() {
        let described = |tool: &str| {
            let def = Registry::get().find(tool).unwrap();
            def.listing.input_schema["properties"]["namespace"]["description"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        assert!(described("talos_list_containers").starts_with("Default `system`"));
        assert!(described("talos_container_stats").starts_with("Default `k8s.io`"));
        assert!(described("talos_images").starts_with("Default `k8s.io`"));
        assert!(described("talos_image_pull").starts_with("Default `k8s.io`"));
    }

    #[test]
    fn namespace_aliases_mean_k8s_io() {
        for alias in ["k8s.io", "cri", "k8s"] {
            let a: ImagesArgs = serde_json::from_value(json!({"namespace": alias})).unwrap();
            assert_eq!(a.namespace, Some(Namespace::K8s), "{alias}");
            assert_eq!(ContainerNamespace::from(Namespace::K8s).as_str(), "k8s.io");
        }
        let a: ImagesArgs = serde_json::from_value(json!({"namespace": "system"})).unwrap();
        assert_eq!(
            ContainerNamespace::from(a.namespace.unwrap()),
            ContainerNamespace::System
        );
    }
}
