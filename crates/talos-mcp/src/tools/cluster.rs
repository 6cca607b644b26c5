//! Cluster: health check, COSI resources, node files.

use crate::call::{Call, Reply};
use crate::registry::{ToolDef, Toolset, tool};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use talos_client::{CallOptions, HealthCheckRequest, TalosApi};

use super::{bounded, bytes, rfc3339};
use crate::error::ToolError;
use crate::output::{Keep, PerNode};
use crate::server::{TalosMcp, TargetArgs};

/// Arguments of talos_health.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct HealthArgs {
    #[serde(flatten)]
    pub target: TargetArgs,
    /// 1–600, default 30.
    #[serde(default)]
    pub wait_seconds: Option<u32>,
}

/// One check of the health run.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CheckOut {
    pub check: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The cluster health check result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct HealthOut {
    pub context: String,
    /// The node that ran the checks.
    pub checked_by: String,
    pub healthy: bool,
    pub control_plane_nodes: Vec<String>,
    pub worker_nodes: Vec<String>,
    pub checks: Vec<CheckOut>,
}

/// Arguments of talos_get.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct GetArgs {
    #[serde(flatten)]
    pub target: TargetArgs,
    /// Full name (e.g. `Members.cluster.talos.dev`) or alias (`members`, `addresses`, …).
    pub resource_type: String,
    /// Default: the type's own.
    #[serde(default)]
    pub namespace: Option<String>,
    /// One id (default: all).
    #[serde(default)]
    pub id: Option<String>,
    /// Per node (1–500, default 100).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// A resource.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ResourceOut {
    pub namespace: String,
    pub resource_type: String,
    pub id: String,
    pub version: String,
    pub phase: String,
    /// Last update (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated: Option<String>,
    /// The spec (secret-looking values redacted).
    pub spec: serde_json::Map<String, serde_json::Value>,
}

/// Arguments of talos_list_files.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct ListFilesArgs {
    #[serde(flatten)]
    pub target: TargetArgs,
    /// Absolute; no `.`, `..` or `//`.
    pub path: String,
    /// Levels (1–5, default 1).
    #[serde(default)]
    pub depth: Option<u32>,
    /// Entries per node (1–1000, default 200).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// A directory entry.
#[derive(Debug, Serialize, JsonSchema)]
pub struct FileOut {
    pub path: String,
    pub is_dir: bool,
    pub size_bytes: u64,
    /// Unix mode, octal.
    pub mode: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modified: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Arguments of talos_read_file.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct ReadFileArgs {
    #[serde(flatten)]
    pub target: TargetArgs,
    /// Absolute; no `.`, `..` or `//`.
    pub path: String,
    /// 1–65536, default 16384.
    #[serde(default)]
    pub max_bytes: Option<u32>,
}

/// File contents.
#[derive(Debug, Serialize, JsonSchema)]
pub struct FileContentOut {
    /// The content (UTF-8; invalid bytes replaced), with embedded secrets redacted; machine
    /// configs and kubeconfigs are withheld whole.
    pub content: String,
    pub bytes: usize,
    /// The file is longer than `max_bytes`.
    pub truncated: bool,
}

/// Resources per node `talos_get` lists unless told otherwise (and the resource template lists).
pub(crate) const GET_DEFAULT_LIMIT: u32 = 100;

/// Resolved type information.
struct TypeInfo {
    full: String,
    namespace: Option<String>,
    sensitive: bool,
}

fn is_sensitive(namespace: &str, resource_type: &str) -> bool {
    let t = resource_type.to_ascii_lowercase();
    namespace == "secrets"
        || t.ends_with(".secrets.talos.dev")
        || t == "machineconfigs.config.talos.dev"
}

/// Resolves an alias or full type name through the node's ResourceDefinitions.
async fn resolve_type(
    api: &dyn TalosApi,
    opts: &CallOptions,
    wanted: &str,
) -> Result<TypeInfo, talos_client::TalosError> {
    let lower = wanted.to_ascii_lowercase();
    // A node that cannot be reached is that, not a node without the type: the read fails with
    // the node's error. (A node that refuses the definitions is read with the type as given.)
    let defs = match api
        .resource_list(opts, "meta", "ResourceDefinitions.meta.cosi.dev", 1000)
        .await
    {
        Ok(defs) => defs,
        Err(e)
            if matches!(
                e.kind(),
                talos_client::ErrorKind::Connection
                    | talos_client::ErrorKind::Timeout
                    | talos_client::ErrorKind::Authentication
            ) =>
        {
            return Err(e);
        }
        Err(_) => Vec::new(),
    };
    for d in defs {
        let Ok(spec) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&d.spec_yaml) else {
            continue;
        };
        let full = spec
            .get("type")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        let aliases: Vec<String> = spec
            .get("aliases")
            .and_then(|a| a.as_sequence())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str())
                    .map(str::to_ascii_lowercase)
                    .collect()
            })
            .unwrap_or_default();
        let singular = full
            .split('.')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if full.to_ascii_lowercase() == lower || aliases.contains(&lower) || singular == lower {
            return Ok(TypeInfo {
                namespace: spec
                    .get("defaultNamespace")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned),
                sensitive: spec.get("sensitivity").and_then(|v| v.as_str()) == Some("sensitive"),
                full,
            });
        }
    }
    Ok(TypeInfo {
        full: wanted.to_owned(),
        namespace: None,
        sensitive: false,
    })
}

/// Resolves a type the way reads do: `Ok(Ok((namespace, full type)))` for a type that may be
/// shown, `Ok(Err(full type))` for a secret type or the machine config (refused: see
/// [`refusal`]), and `NotFound` for a type the node does not know without a `namespace`.
pub(crate) async fn readable_type(
    api: &dyn TalosApi,
    opts: &CallOptions,
    wanted: &str,
    namespace: Option<String>,
) -> Result<Result<(String, String), String>, talos_client::TalosError> {
    let info = resolve_type(api, opts, wanted).await?;
    let namespace =
        namespace
            .or(info.namespace)
            .ok_or_else(|| talos_client::TalosError::NotFound {
                target: talos_client::Target {
                    endpoint: None,
                    node: opts.node.clone(),
                },
                message: format!(
                    "unknown resource type `{wanted}`; pass its full name and `namespace`"
                ),
            })?;
    // A secret type is this server's refusal, not the node's: it ends the whole call (Err here
    // would read as the node denying the role).
    if info.sensitive || is_sensitive(&namespace, &info.full) {
        return Ok(Err(info.full));
    }
    Ok(Ok((namespace, info.full)))
}

/// One node's resources of a type, read the way `talos_get` and the resource template
/// `talos://{context}/nodes/{node}/resources/{resource_type}` both read them: the type resolved
/// through the node's definitions, a secret type or machine config refused (`Ok(Err(full
/// type))`, which the caller turns into [`refusal`]), every spec redacted.
pub(crate) async fn get_on_node(
    api: &dyn TalosApi,
    opts: &CallOptions,
    wanted: &str,
    namespace: Option<String>,
    id: Option<&str>,
    limit: usize,
) -> Result<Result<Vec<ResourceOut>, String>, talos_client::TalosError> {
    let (namespace, full) = match readable_type(api, opts, wanted, namespace).await? {
        Ok(found) => found,
        Err(full) => return Ok(Err(full)),
    };
    let resources = match id {
        Some(id) => vec![api.resource_get(opts, &namespace, &full, id).await?],
        None => api.resource_list(opts, &namespace, &full, limit).await?,
    };
    Ok(Ok(resources
        .into_iter()
        .map(|r| ResourceOut {
            spec: crate::redact::spec_object(&r.spec_yaml),
            updated: r.updated.map(rfc3339),
            namespace: r.namespace,
            resource_type: r.resource_type,
            id: r.id,
            version: r.version,
            phase: r.phase,
        })
        .collect()))
}

pub(crate) use crate::paths::check_path;

impl TalosMcp {
    /// The cluster health check.
    pub(crate) async fn talos_health(
        &self,
        _call: &Call,
        args: HealthArgs,
    ) -> Result<Reply<HealthOut>, ToolError> {
        let result = async {
            let wait = bounded("wait_seconds", args.wait_seconds.unwrap_or(30), 1, 600)?;
            let targets = self
                .clusters
                .targets(args.target.context.as_deref(), args.target.nodes.as_deref())
                .await?;
            let api = targets.entry.api.clone();
            let (members, checker) =
                super::etcd::first_members(api.as_ref(), &targets.nodes).await?;
            let control_planes = super::etcd::member_nodes(&members);
            let workers: Vec<String> = targets
                .entry
                .default_nodes
                .iter()
                .filter(|n| !control_planes.contains(n))
                .cloned()
                .collect();
            let request = HealthCheckRequest {
                wait_timeout: Duration::from_secs(u64::from(wait)),
                control_plane_nodes: control_planes.clone(),
                worker_nodes: workers.clone(),
                force_endpoint: None,
            };
            let progress = api
                .health_check(&CallOptions::node(checker.clone()), &request)
                .await?;
            let checks: Vec<CheckOut> = progress
                .into_iter()
                .map(|p| {
                    let check = p
                        .message
                        .split(": ")
                        .next()
                        .unwrap_or(&p.message)
                        .to_owned();
                    CheckOut {
                        ok: p.error.is_none(),
                        error: p.error,
                        check,
                    }
                })
                .collect();
            let healthy = !checks.is_empty() && checks.iter().all(|c| c.ok);
            let failed: Vec<String> = checks
                .iter()
                .filter(|c| !c.ok)
                .map(|c| format!("{}: {}", c.check, c.error.as_deref().unwrap_or("")))
                .collect();
            let summary = if healthy {
                format!(
                    "talos_health: healthy — {} checks passed (run by {checker})",
                    checks.len()
                )
            } else {
                format!("talos_health: NOT healthy — {}", failed.join("; "))
            };
            Ok((
                HealthOut {
                    context: targets.entry.name.clone(),
                    checked_by: checker,
                    healthy,
                    control_plane_nodes: control_planes,
                    worker_nodes: workers,
                    checks,
                },
                summary,
            ))
        }
        .await;
        self.respond_one(result, Keep::First, "")
    }

    /// Any COSI resource.
    pub(crate) async fn talos_get(
        &self,
        _call: &Call,
        args: GetArgs,
    ) -> Result<Reply<PerNode<Vec<ResourceOut>>>, ToolError> {
        let limit = bounded("limit", args.limit.unwrap_or(GET_DEFAULT_LIMIT), 1, 500)? as usize;
        if args.resource_type.trim().is_empty() {
            return Err(ToolError::invalid(
                "resource_type",
                "is required, e.g. `members` or `Members.cluster.talos.dev`",
            ));
        }
        if let Some(ns) = &args.namespace
            && is_sensitive(ns, &args.resource_type)
        {
            return Err(refusal(&args.resource_type));
        }
        let (wanted, ns_arg, id) = (
            args.resource_type.trim().to_owned(),
            args.namespace.clone(),
            args.id.clone(),
        );
        let result = self
            .per_node(&args.target, |api, opts| {
                let (wanted, ns_arg, id) = (wanted.clone(), ns_arg.clone(), id.clone());
                async move {
                    get_on_node(api.as_ref(), &opts, &wanted, ns_arg, id.as_deref(), limit).await
                }
            })
            .await;
        let result = result.and_then(|per_node| match per_node.first_err() {
            Some(full) => Err(refusal(full)),
            None => Ok(per_node.map(|r| r.unwrap_or_default())),
        });
        self.respond(
            "talos_get",
            result,
            |rs| {
                let ids: Vec<&str> = rs.iter().take(8).map(|r| r.id.as_str()).collect();
                format!("{} resources: {}", rs.len(), ids.join(", "))
            },
            Keep::First,
            "name an `id` or lower `limit`",
        )
    }

    /// Directory listing under the allowlist.
    pub(crate) async fn talos_list_files(
        &self,
        _call: &Call,
        args: ListFilesArgs,
    ) -> Result<Reply<PerNode<Vec<FileOut>>>, ToolError> {
        let path = check_path(&args.path, &self.settings.file_allowlist)?;
        let depth = bounded("depth", args.depth.unwrap_or(1), 1, 5)?;
        let limit = bounded("limit", args.limit.unwrap_or(200), 1, 1000)?;
        let result = self
            .per_node(&args.target, |api, opts| {
                let path = path.clone();
                async move {
                    Ok(api
                        .list_files(&opts, &path, depth as i32, limit as usize)
                        .await?
                        .into_iter()
                        // The node lists symlinks without following them, but their names and
                        // targets (`/proc/1/fd/3 -> /system/state/config.yaml`) are not shown.
                        .filter(|f| f.name.is_empty() || crate::paths::may_show(&f.name))
                        .map(|f| FileOut {
                            path: f.name,
                            is_dir: f.is_dir,
                            size_bytes: f.size,
                            mode: format!("{:o}", f.mode & 0o7777),
                            modified: f.modified.map(rfc3339),
                            link: f.link,
                            error: f.error,
                        })
                        .collect::<Vec<_>>())
                }
            })
            .await;
        self.respond(
            "talos_list_files",
            result,
            |fs| format!("{} entries", fs.len()),
            Keep::First,
            "lower `depth` or `limit`, or list a subdirectory",
        )
    }

    /// File contents under the allowlist.
    pub(crate) async fn talos_read_file(
        &self,
        _call: &Call,
        args: ReadFileArgs,
    ) -> Result<Reply<PerNode<FileContentOut>>, ToolError> {
        let path = check_path(&args.path, &self.settings.file_allowlist)?;
        let max = bounded(
            "max_bytes",
            args.max_bytes.unwrap_or(16 * 1024),
            1,
            64 * 1024,
        )?;
        let result = self
            .per_node(&args.target, |api, opts| {
                let path = path.clone();
                async move {
                    let f = api.read_file(&opts, &path, max as usize).await?;
                    Ok(FileContentOut {
                        bytes: f.data.len(),
                        content: crate::redact::redact_file(&String::from_utf8_lossy(&f.data)),
                        truncated: f.truncated,
                    })
                }
            })
            .await;
        self.respond(
            "talos_read_file",
            result,
            |f| {
                let first = f.content.lines().next().unwrap_or_default();
                format!(
                    "{}{}; first line: {first}",
                    bytes(f.bytes as u64),
                    if f.truncated { " (truncated)" } else { "" }
                )
            },
            Keep::First,
            "lower `max_bytes` or pass fewer `nodes`",
        )
    }
}

pub(crate) fn refusal(resource_type: &str) -> ToolError {
    ToolError::Refused(format!(
        "`{resource_type}` holds secrets (keys, tokens or the full machine config), which talos-mcp never shows. \
         For the machine config, read the resource talos://{{context}}/nodes/{{node}}/machineconfig, which is redacted."
    ))
}

/// The tools of this module, in listing order.
pub(crate) fn tools() -> Vec<ToolDef> {
    vec![
        tool(
            Toolset::Cluster,
            "talos_health",
            "Cluster health",
            "Talos's cluster health check (etcd, apid, kubelet, nodes, static pods, …), run from one node. Control planes: the etcd members; other nodes: workers.",
        )
        .run(TalosMcp::talos_health)
        .build(),
        tool(
            Toolset::Cluster,
            "talos_get",
            "Get resources",
            "Gets or lists Talos (COSI) resources like `talosctl get`. Secret types and machine configs are refused; secret-looking values redacted.",
        )
        .run(TalosMcp::talos_get)
        .build(),
        tool(
            Toolset::Cluster,
            "talos_list_files",
            "List files",
            "Lists a directory on each node to `depth`, under allowed paths (default /proc, /sys, /var/log); /proc links and secret locations are refused.",
        )
        .run(TalosMcp::talos_list_files)
        .build(),
        tool(
            Toolset::Cluster,
            "talos_read_file",
            "Read file",
            "Reads a file on each node under allowed paths (default /proc, /sys, /var/log). /proc links and secret locations refused; secrets redacted, configs withheld. Needs os:admin.",
        )
        .run(TalosMcp::talos_read_file)
        .build(),
    ]
}

super::targeted_by_field!(HealthArgs, GetArgs, ListFilesArgs, ReadFileArgs);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_node_that_cannot_be_reached_is_not_a_node_without_the_type() {
        let mut api = talos_client::MockTalosApi::new();
        api.expect_resource_list().returning(|opts, _, _, _| {
            Err(talos_client::TalosError::Connection {
                target: talos_client::Target {
                    endpoint: None,
                    node: opts.node.clone(),
                },
                message: "connection refused".into(),
            })
        });
        let opts = CallOptions::node("10.5.0.2");
        let err = get_on_node(&api, &opts, "machinestatuses", None, None, 10)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), talos_client::ErrorKind::Connection, "{err}");
    }

    #[test]
    fn secrets_are_recognised() {
        assert!(is_sensitive("secrets", "Anything"));
        assert!(is_sensitive("x", "OSRootSecrets.secrets.talos.dev"));
        assert!(is_sensitive("config", "MachineConfigs.config.talos.dev"));
        assert!(!is_sensitive("cluster", "Members.cluster.talos.dev"));
    }
}
