//! Kubernetes access: the admin kubeconfig, written to a private file and never returned.

use crate::call::{Call, Reply};
use crate::registry::{ToolDef, Toolset, tool};
use std::path::{Path, PathBuf};

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

/// Writes `data` to `dir/name` (dir 0700, file 0600), replacing any previous file atomically: the
/// data goes to a fresh temporary file in the same directory, is synced, and is renamed over the
/// target, so a reader never sees a half-written kubeconfig.
fn write_private(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<PathBuf> {
    use std::io::Write as _;
    crate::files::private_dir(dir)?;
    let path = dir.join(name);
    let mut nonce = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce);
    let temp = dir.join(format!(".{name}.{}.tmp", sha256_hex(&nonce)));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let written = options.open(&temp).and_then(|mut file| {
        #[cfg(unix)]
        {
            // The umask cannot widen 0600, but be explicit.
            use std::os::unix::fs::PermissionsExt as _;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        file.write_all(data)?;
        file.sync_all()?;
        std::fs::rename(&temp, &path)
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    Ok(path)
}

/// The one file name of the kubeconfig of `context` issued by `node`: each call replaces the
/// previous one, so kubeconfigs do not pile up (at most one per context and node, and nodes are
/// limited to the context's). Both names are reduced to safe characters; a hash of the exact
/// names keeps distinct contexts (`a.b`, `a_b`) apart.
fn kubeconfig_file_name(context: &str, node: &str) -> String {
    let safe = |s: &str| -> String {
        s.chars()
            .take(64)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let id = sha256_hex(format!("{context}\0{node}").as_bytes());
    format!(
        "kubeconfig-{}-{}-{}.yaml",
        safe(context),
        safe(node),
        id.get(..12).unwrap_or_default()
    )
}

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl TalosMcp {
    /// The admin kubeconfig, to a private file.
    pub(crate) async fn talos_kubeconfig(
        &self,
        _call: &Call,
        args: KubeconfigArgs,
    ) -> Result<Reply<KubeconfigOut>, ToolError> {
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
            let name = kubeconfig_file_name(&targets.entry.name, &node);
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

/// The tools of this module, in listing order.
pub(crate) fn tools() -> Vec<ToolDef> {
    vec![
        tool(
            Toolset::Kubernetes,
            "talos_kubeconfig",
            "Kubeconfig",
            "Writes the admin kubeconfig to a private file (0600) on the server, one per context and node. Returns its path and SHA-256, never the content. Needs os:admin.",
        )
        .run(TalosMcp::talos_kubeconfig)
        .build(),
    ]
}

super::targeted_by_field!(KubeconfigArgs);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn one_kubeconfig_file_per_context_and_node() {
        let dir = tempfile::tempdir().unwrap();
        let name = kubeconfig_file_name("prod", "10.0.0.1");
        assert_eq!(name, kubeconfig_file_name("prod", "10.0.0.1"));
        assert_ne!(name, kubeconfig_file_name("prod", "10.0.0.2"));
        assert_ne!(
            kubeconfig_file_name("a.b", "n"),
            kubeconfig_file_name("a_b", "n")
        );
        assert!(!kubeconfig_file_name("../../x", "/etc").contains('/'));
        for i in 0..5 {
            let path = write_private(dir.path(), &name, format!("v{i}").as_bytes()).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), format!("v{i}").as_bytes());
        }
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1, "{files:?}");
    }
}
