//! Backup and disaster recovery: snapshot verification and the artifact listing, machine
//! configuration backups, etcd recovery from a snapshot, and the first bootstrap.

use std::time::{Duration, SystemTime};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use talos_client::{BootstrapRequest, CallOptions, TalosApi, TalosError};

use super::actions::{ActionOut, Change, NodeTarget, Prepared};
use super::bytes;
use crate::artifacts::{self, Kind};
use crate::call::{Call, Reply};
use crate::error::ToolError;
use crate::output::{Keep, PerNode};
use crate::registry::{CallTarget, Effect, ToolArgs, ToolDef, Toolset, tool};
use crate::safety::Tier;
use crate::server::{TalosMcp, TargetArgs};
use crate::snapshot::{self, Report};

/// How long a recovery or bootstrap waits for etcd to answer again.
const ETCD_WAIT: Duration = Duration::from_secs(300);
/// How long the snapshot upload may take.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(1800);

/// What a snapshot's checks found.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct VerificationOut {
    /// etcd's trailing SHA-256 was checked (false: skipped on request).
    pub hash_checked: bool,
    /// Highest revision in the snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    /// Revision keys in etcd's `key` bucket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<u64>,
    pub page_size: u32,
    /// Why revision and keys could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl From<&Report> for VerificationOut {
    fn from(r: &Report) -> Self {
        Self {
            hash_checked: r.hash_checked,
            revision: r.revision,
            keys: r.keys,
            page_size: r.page_size,
            note: r.note.clone(),
        }
    }
}

/// A checked snapshot file.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SnapshotFileOut {
    pub name: String,
    pub path: String,
    pub size_bytes: u64,
    pub sha256: String,
    /// When it was taken (UTC), for files this server named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    pub verification: VerificationOut,
}

/// Verifies `name` in `dir` (blocking: run it on the blocking pool). A file that fails is an
/// error naming what is wrong.
pub(crate) fn verify_file(
    dir: &std::path::Path,
    name: &str,
    expect_hash: bool,
) -> Result<SnapshotFileOut, ToolError> {
    let file = artifacts::open_regular(dir, name).map_err(|e| {
        ToolError::invalid(
            "path",
            format!(
                "cannot open `{}` in the artifact directory: {e}",
                crate::error::echo(name)
            ),
        )
    })?;
    let mut src = snapshot::FileSource::new(file)
        .map_err(|e| ToolError::Local(format!("cannot read {name}: {e}")))?;
    let report = snapshot::verify(&mut src, expect_hash).map_err(|fault| {
        ToolError::Refused(format!(
            "snapshot `{}` failed verification: {fault}. It cannot be used for a recovery; take a new snapshot or choose another file",
            crate::error::echo(name)
        ))
    })?;
    Ok(SnapshotFileOut {
        name: name.to_owned(),
        path: dir.join(name).display().to_string(),
        size_bytes: report.size,
        sha256: report.sha256.clone(),
        time: artifacts::parse(name).and_then(|n| artifacts::stamp_rfc3339(&n.stamp)),
        verification: VerificationOut::from(&report),
    })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ToolError> + Send + 'static,
) -> Result<T, ToolError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ToolError::Internal(format!("a file check stopped: {e}")))?
}

/// Arguments of talos_etcd_snapshot_verify.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct VerifyArgs {
    // No doc comments: the description says what they do, and the read-only list is tight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

impl ToolArgs for VerifyArgs {
    fn target(&self) -> CallTarget<'_> {
        CallTarget {
            context: self.context.as_deref(),
            nodes: vec![],
        }
    }
}

/// A verified snapshot (one entry), or the artifact directory's listing (newest first).
#[derive(Debug, Serialize, JsonSchema)]
pub struct VerifyOut {
    pub artifacts: Vec<artifacts::Entry>,
}

/// Arguments of talos_etcd_recover.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct RecoverArgs {
    #[serde(flatten)]
    pub target: NodeTarget,
    pub path: String,
    /// For a copied database without etcd's hash.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_hash_check: bool,
}

/// What a recovery or bootstrap did (the snapshot's name, revision and hash are in `message`).
#[derive(Debug, Serialize, JsonSchema)]
pub struct RecoverOut {
    pub message: String,
    /// etcd members after it.
    pub members: Vec<String>,
}

/// Arguments of talos_config_backup.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct ConfigBackupArgs {
    #[serde(flatten)]
    pub target: TargetArgs,
}

/// One node's configuration backup: where it is, never what it says.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ConfigBackupOut {
    /// The file (0600).
    pub path: String,
    pub size_bytes: u64,
    pub sha256: String,
    /// `controlplane` or `worker`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    /// Older backups of this node deleted by retention.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deleted: Vec<String>,
}

/// Whether the node runs an etcd service (control planes do), and its state.
async fn etcd_service(api: &dyn TalosApi, opts: &CallOptions) -> Result<Option<String>, ToolError> {
    let services = api.services(opts).await?;
    Ok(services
        .into_iter()
        .find(|s| s.id == "etcd")
        .map(|s| s.state))
}

/// Waits until the node's etcd answers, then returns its members' names.
async fn until_etcd(
    call: &Call,
    api: &dyn TalosApi,
    opts: &CallOptions,
) -> Result<Vec<String>, ToolError> {
    let deadline = tokio::time::Instant::now() + ETCD_WAIT;
    loop {
        match api.etcd_status(opts).await {
            Ok(_) => {
                let members = api.etcd_members(opts).await?;
                return Ok(members.into_iter().map(|m| m.hostname).collect());
            }
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(ToolError::Local(format!(
                    "etcd did not answer within {} s after the bootstrap: {e}. Check talos_service_logs for etcd on the node",
                    ETCD_WAIT.as_secs()
                )));
            }
            Err(_) => {
                call.step("waiting for etcd to answer").await;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

impl TalosMcp {
    /// Verify a snapshot file, or list the artifact directory.
    pub(crate) async fn talos_etcd_snapshot_verify(
        &self,
        _call: &Call,
        args: VerifyArgs,
    ) -> Result<Reply<VerifyOut>, ToolError> {
        let dir = self.settings.artifact_dir.clone();
        let directory = dir.display().to_string();
        let result = async {
            let context = match args.context.as_deref() {
                Some(c) => Some(self.clusters.entry(Some(c))?.name.clone()),
                None => None,
            };
            match args.path.as_deref() {
                Some(given) => {
                    let name = artifacts::resolve(&dir, given)?;
                    let d = dir.clone();
                    let file = blocking(move || verify_file(&d, &name, true)).await?;
                    let parsed = artifacts::parse(&file.name);
                    let v = &file.verification;
                    let summary = format!(
                        "talos_etcd_snapshot_verify: {} in {directory} verifies (etcd hash, bbolt pages): revision {}, {} keys, {}, sha256 {}{}",
                        file.name,
                        v.revision.map_or("unknown".into(), |r| r.to_string()),
                        v.keys.map_or("unknown".into(), |k| k.to_string()),
                        bytes(file.size_bytes),
                        file.sha256,
                        v.note.as_ref().map_or(String::new(), |n| format!("; revision unreadable: {n}"))
                    );
                    let entry = artifacts::Entry {
                        kind: Kind::Snapshot,
                        context: parsed.as_ref().map(|p| p.context.clone()),
                        node: parsed.as_ref().map(|p| p.node.clone()),
                        time: file.time.clone(),
                        size_bytes: file.size_bytes,
                        sha256: Some(file.sha256.clone()),
                        revision: v.revision,
                        keys: v.keys,
                        name: file.name,
                    };
                    Ok((VerifyOut { artifacts: vec![entry] }, summary))
                }
                None => {
                    let d = dir.clone();
                    let (mut listed, more) = blocking(move || artifacts::list(&d)).await?;
                    if let Some(c) = &context {
                        listed.retain(|e| e.context.as_ref() == Some(c));
                    }
                    let summary = format!(
                        "talos_etcd_snapshot_verify: {} artifact(s) in {directory}{}",
                        listed.len(),
                        if more > 0 { format!(" ({more} more not listed)") } else { String::new() }
                    );
                    Ok((VerifyOut { artifacts: listed }, summary))
                }
            }
        }
        .await;
        self.respond_one(result, Keep::First, "")
    }

    /// Back up every target node's machine configuration to private files.
    pub(crate) async fn talos_config_backup(
        &self,
        _call: &Call,
        args: ConfigBackupArgs,
    ) -> Result<Reply<PerNode<ConfigBackupOut>>, ToolError> {
        let dir = self.settings.artifact_dir.clone();
        let keep = self.settings.snapshot_retention;
        let result = async {
            let targets = self
                .clusters
                .targets(args.target.context.as_deref(), args.target.nodes.as_deref())
                .await?;
            let context = targets.entry.name.clone();
            artifacts::ensure_dir(&dir)?;
            self.per_node(&args.target, |api, opts| {
                let (dir, context) = (dir.clone(), context.clone());
                async move {
                    let config = api
                        .resource_get(
                            &opts,
                            "config",
                            "MachineConfigs.config.talos.dev",
                            "v1alpha1",
                        )
                        .await?;
                    let node = opts.node.clone().unwrap_or_default();
                    tokio::task::spawn_blocking(move || {
                        write_config(&dir, &context, &node, &config.spec_yaml, keep)
                    })
                    .await
                    .map_err(|e| TalosError::Local {
                        message: format!("the backup stopped: {e}"),
                    })?
                }
            })
            .await
        }
        .await;
        self.respond(
            "talos_config_backup",
            result,
            |o| format!("{} ({}, sha256 {})", o.path, bytes(o.size_bytes), o.sha256),
            Keep::First,
            "pass fewer `nodes`",
        )
    }

    /// Recover etcd on one control plane from a verified snapshot.
    pub(crate) async fn talos_etcd_recover(
        &self,
        call: &Call,
        args: RecoverArgs,
    ) -> Result<Reply<ActionOut<RecoverOut>>, ToolError> {
        let dir = self.settings.artifact_dir.clone();
        let name = artifacts::resolve(&dir, &args.path)?;
        let skip = args.skip_hash_check;
        let target = args.target.clone();
        let prepare_dir = dir.clone();
        self.action(
            call,
            Change { args: &args, target: &target, force: false },
            move |api, opts| {
                let dir = prepare_dir;
                async move {
                    // The snapshot first: a file that does not verify is refused before any
                    // call reaches the node.
                    let d = dir.clone();
                    let file = blocking(move || verify_file(&d, &name, !skip)).await?;
                    match etcd_service(api.as_ref(), &opts).await? {
                        None => {
                            return Err(ToolError::Preflight(
                                "this node runs no etcd: it is not a control plane. Nothing was done; name a control-plane node".into(),
                            ));
                        }
                        Some(state) if state == "Running" || api.etcd_status(&opts).await.is_ok() => {
                            return Err(ToolError::Preflight(format!(
                                "etcd is running on this node (service {state}): recovery replaces the cluster's etcd data and is only for a cluster that lost quorum. Nothing was done. Check talos_etcd_status; a member that is down is replaced with talos_etcd_remove_member and by rejoining its node, not by a recovery"
                            )));
                        }
                        Some(_) => {}
                    }
                    let revision = file.verification.revision.map_or("unknown".into(), |r| r.to_string());
                    let details = format!(
                        "snapshot {}: taken {}, revision {revision}, {} keys, {}, sha256 {}; etcd hash check {}",
                        file.name,
                        file.time.as_deref().unwrap_or("at an unknown time"),
                        file.verification.keys.map_or("unknown".into(), |k| k.to_string()),
                        bytes(file.size_bytes),
                        file.sha256,
                        if skip { "SKIPPED on request" } else { "on" },
                    );
                    Ok(Prepared {
                        effect: format!(
                            "upload snapshot {} to this node and bootstrap etcd from it (revision {revision}); the cluster's etcd data becomes the snapshot's",
                            file.name
                        ),
                        preflight: vec![
                            "the snapshot verifies".into(),
                            "this node is a control plane and its etcd is not running".into(),
                        ],
                        blocker: None,
                        details: Some(details),
                        // The token fits only this file content.
                        binds: Some(serde_json::json!({"sha256": file.sha256, "revision": file.verification.revision})),
                        resolved: file,
                    })
                }
            },
            |api, opts, file: SnapshotFileOut| async move {
                call.step(format!("uploading {} ({})", file.name, bytes(file.size_bytes))).await;
                let source = artifacts::open_regular(&dir, &file.name)
                    .map_err(|e| ToolError::Local(format!("cannot open {}: {e}", file.name)))?;
                let mut upload_opts = opts.clone();
                upload_opts.timeout = Some(UPLOAD_TIMEOUT);
                let sent = api
                    .etcd_recover(&upload_opts, Box::new(tokio::fs::File::from_std(source)))
                    .await?;
                if sent.sha256 != file.sha256 {
                    return Err(ToolError::Local(format!(
                        "{} changed after it was verified (uploaded sha256 {}, verified {}); etcd was not bootstrapped. Verify the file again",
                        file.name, sent.sha256, file.sha256
                    )));
                }
                call.step("bootstrapping etcd from the snapshot").await;
                api.bootstrap(&opts, BootstrapRequest { recover_etcd: true, recover_skip_hash_check: skip })
                    .await?;
                let members = until_etcd(call, api.as_ref(), &opts).await?;
                Ok(RecoverOut {
                    message: format!(
                        "etcd recovered from {} (revision {}, sha256 {}); {} member(s) answer",
                        file.name,
                        file.verification.revision.map_or("unknown".into(), |r| r.to_string()),
                        file.sha256,
                        members.len()
                    ),
                    members,
                })
            },
            |o| o.message.clone(),
        )
        .await
    }

    /// Bootstrap a new cluster's etcd on one control plane.
    pub(crate) async fn talos_bootstrap(
        &self,
        call: &Call,
        args: NodeTarget,
    ) -> Result<Reply<ActionOut<RecoverOut>>, ToolError> {
        let target = args.clone();
        self.action(
            call,
            Change { args: &args, target: &target, force: false },
            |api, opts| async move {
                let state = etcd_service(api.as_ref(), &opts).await?.ok_or_else(|| {
                    ToolError::Preflight(
                        "this node runs no etcd: it is not a control plane. Nothing was done; name a control-plane node".into(),
                    )
                })?;
                if let Ok(members) = api.etcd_members(&opts).await
                    && !members.is_empty()
                {
                    return Err(ToolError::Preflight(format!(
                        "etcd already has {} member(s): the cluster is bootstrapped. Nothing was done; a second bootstrap would split it",
                        members.len()
                    )));
                }
                if state == "Running" {
                    return Err(ToolError::Preflight(
                        "etcd is running on this node: the cluster is bootstrapped. Nothing was done".into(),
                    ));
                }
                Ok(Prepared::new(
                    "bootstrap etcd on this node: a new, empty single-member cluster that the other control planes join".into(),
                    vec![
                        format!("etcd on this node is not running (service {state}) and reports no members"),
                        "if this cluster had data, use talos_etcd_recover with a snapshot instead".into(),
                    ],
                ))
            },
            |api, opts, ()| async move {
                call.step("bootstrapping etcd").await;
                api.bootstrap(&opts, BootstrapRequest::default()).await?;
                let members = until_etcd(call, api.as_ref(), &opts).await?;
                Ok(RecoverOut {
                    message: format!("etcd bootstrapped; {} member(s) answer", members.len()),
                    members,
                })
            },
            |o| o.message.clone(),
        )
        .await
    }
}

/// Writes one node's configuration to a new 0600 file and applies retention for the node.
fn write_config(
    dir: &std::path::Path,
    context: &str,
    node: &str,
    yaml: &str,
    keep: usize,
) -> Result<ConfigBackupOut, TalosError> {
    use std::io::Write as _;
    let local = |e: std::io::Error| TalosError::Local {
        message: format!(
            "cannot write the configuration backup in {}: {e}",
            dir.display()
        ),
    };
    let name = artifacts::file_name(Kind::Config, context, node, SystemTime::now());
    let path = dir.join(&name);
    let mut file = artifacts::create_private(&path).map_err(local)?;
    file.write_all(yaml.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| {
            let _ = std::fs::remove_file(&path);
            local(e)
        })?;
    let sha256 = ring::digest::digest(&ring::digest::SHA256, yaml.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let doc: Option<serde_yaml_ng::Value> = serde_yaml_ng::from_str(yaml).ok();
    let field = |path: &[&str]| {
        let mut v = doc.as_ref()?;
        for p in path {
            v = v.get(p)?;
        }
        v.as_str().map(crate::error::echo)
    };
    let deleted = artifacts::prune(dir, Kind::Config, context, Some(node), keep).map_err(|e| {
        TalosError::Local {
            message: e.to_string(),
        }
    })?;
    Ok(ConfigBackupOut {
        path: path.display().to_string(),
        size_bytes: yaml.len() as u64,
        sha256,
        machine_type: field(&["machine", "type"]),
        cluster_name: field(&["cluster", "clusterName"]),
        deleted,
    })
}

/// The tools of this module, in listing order.
pub(crate) fn tools() -> Vec<ToolDef> {
    vec![
        tool(
            Toolset::Etcd,
            "talos_etcd_snapshot_verify",
            "Verify snapshot",
            "Checks an etcd snapshot file offline (hash, bbolt, revision). No `path`: lists artifacts.",
        )
        .run(TalosMcp::talos_etcd_snapshot_verify)
        .build(),
        tool(
            Toolset::Etcd,
            "talos_etcd_recover",
            "Recover etcd",
            "After etcd quorum loss: uploads a verified snapshot to a control plane whose etcd is down and recovers etcd from it.",
        )
        .tier(Tier::Destructive)
        .long_running()
        .run(TalosMcp::talos_etcd_recover)
        .build(),
        tool(
            Toolset::Etcd,
            "talos_bootstrap",
            "Bootstrap etcd",
            "First etcd bootstrap of a new cluster, on one control plane. Refused when etcd has members.",
        )
        .tier(Tier::Destructive)
        .long_running()
        .run(TalosMcp::talos_bootstrap)
        .build(),
        tool(
            Toolset::Lifecycle,
            "talos_config_backup",
            "Back up machine configs",
            "Saves each node's machine config to a 0600 file on the server; returns path, size, hash and a summary, never secrets.",
        )
        .tier(Tier::Write)
        .effect(Effect::Changes { idempotent: false })
        .run(TalosMcp::talos_config_backup)
        .build(),
    ]
}

super::targeted_by_field!(RecoverArgs, ConfigBackupArgs);
