//! Kubernetes access: the admin kubeconfig, written to a private file and never returned.

use std::path::{Path, PathBuf};

use rmcp::handler::server::common::schema_for_output;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::{ErrorData, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use talos_client::CallOptions;

use crate::error::ToolError;
use crate::output::Keep;
use crate::server::{TalosMcp, TargetArgs};

/// Where the kubeconfig was written, never its content.
#[derive(Debug, Serialize, JsonSchema)]
pub struct KubeconfigOut {
    pub context: String,
    /// The node that issued it.
    pub node: String,
    /// The file (mode 0600).
    pub path: String,
    pub size_bytes: usize,
    /// Hex SHA-256 of the file.
    pub sha256: String,
    /// Cluster name inside the kubeconfig.
    pub cluster_name: Option<String>,
    /// Kubernetes API server URL.
    pub server: Option<String>,
}

/// Arguments of talos_kubeconfig.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct KubeconfigArgs {
    #[serde(flatten)]
    pub target: TargetArgs,
}

/// Writes `data` to a file in `dir` (0700) with mode 0600.
fn write_private(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<PathBuf> {
    use std::io::Write as _;
    crate::files::private_dir(dir)?;
    let path = dir.join(name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&path)?;
    #[cfg(unix)]
    {
        // An existing file keeps its mode on open: force 0600.
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(data)?;
    file.sync_all()?;
    Ok(path)
}

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tool_router(router = kubernetes_router, vis = "pub(crate)")]
impl TalosMcp {
    /// The admin kubeconfig, to a private file.
    #[tool(
        name = "talos_kubeconfig",
        description = "Fetches the cluster's admin kubeconfig from a control-plane node and writes it to a private file (0600) in the server's artifact directory. Returns the path, size, SHA-256, cluster name and API server URL — never the content, which is a secret. Needs the os:admin role.",
        output_schema = schema_for_output::<KubeconfigOut>(),
        annotations(title = "Kubeconfig", read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true)
    )]
    pub(crate) async fn talos_kubeconfig(
        &self,
        Parameters(args): Parameters<KubeconfigArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let result = async {
            let targets = self.clusters.targets(args.target.context.as_deref(), args.target.nodes.as_deref()).await?;
            let mut last_err = None;
            let mut fetched = None;
            // Workers cannot issue kubeconfigs: try the nodes in turn.
            for node in &targets.nodes {
                match targets.entry.api.kubeconfig(&CallOptions::node(node.clone())).await {
                    Ok(kc) => {
                        fetched = Some((kc, node.clone()));
                        break;
                    }
                    Err(e) => last_err = Some(e),
                }
            }
            let (kc, node) = match (fetched, last_err) {
                (Some(f), _) => f,
                (None, Some(e)) => return Err(ToolError::from(e)),
                (None, None) => return Err(ToolError::invalid("nodes", "no node to ask")),
            };
            let parsed: Option<serde_yaml_ng::Value> = serde_yaml_ng::from_slice(kc.expose_bytes()).ok();
            let cluster = parsed
                .as_ref()
                .and_then(|v| v.get("clusters"))
                .and_then(|c| c.get(0));
            let cluster_name = cluster.and_then(|c| c.get("name")).and_then(|n| n.as_str()).map(str::to_owned);
            let server = cluster
                .and_then(|c| c.get("cluster"))
                .and_then(|c| c.get("server"))
                .and_then(|s| s.as_str())
                .map(str::to_owned);
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let safe: String = targets
                .entry
                .name
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
                .collect();
            let name = format!("kubeconfig-{safe}-{stamp}.yaml");
            let path = write_private(&self.settings.artifact_dir, &name, kc.expose_bytes())
                .map_err(|e| ToolError::Local(format!("cannot write the kubeconfig to {}: {e}", self.settings.artifact_dir.display())))?;
            let out = KubeconfigOut {
                context: targets.entry.name.clone(),
                node,
                path: path.display().to_string(),
                size_bytes: kc.len(),
                sha256: sha256_hex(kc.expose_bytes()),
                cluster_name,
                server,
            };
            let summary = format!(
                "talos_kubeconfig: wrote the admin kubeconfig for {} to {} (0600, {} bytes). Use it with KUBECONFIG={}; its content is not shown because it grants cluster-admin.",
                out.server.as_deref().unwrap_or("the cluster"),
                out.path,
                out.size_bytes,
                out.path
            );
            Ok((out, summary))
        }
        .await;
        self.respond_one(result, Keep::First, "")
    }
}
