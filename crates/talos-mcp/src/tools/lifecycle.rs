//! Machine configuration and node lifecycle: apply config (write tier); reboot, shutdown, reset
//! (destructive tier). Every call targets one named node, is confirmed, and is audited.

use futures_util::future::BoxFuture;
use std::time::{Duration, Instant};

use rmcp::handler::server::common::schema_for_output;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{ProgressNotificationParam, RequestMetaObject};
use rmcp::{ErrorData, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use talos_client::{
    ApplyConfigRequest, ApplyMode, CallOptions, RebootMode, ResetRequest, TalosApi, TalosError,
};

use super::actions::{ActionOut, NodeTarget, Prepared};
use crate::error::ToolError;
use crate::output::failure;
use crate::safety::Tier;
use crate::server::TalosMcp;

/// Arguments of talos_apply_config.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct ApplyConfigArgs {
    #[serde(flatten)]
    pub target: NodeTarget,
    /// The machine configuration (YAML). Give this or `config_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// A file with the machine configuration, under the operator's config allowlist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_file: Option<String>,
    /// `auto` (default), `no-reboot`, `reboot`, `staged` or `try`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// For mode `try`: seconds before Talos rolls the change back unless applied again (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub try_timeout_seconds: Option<u32>,
    /// Only report what would change (default true). Set false to apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
}

/// What an apply did or would do.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ApplyOut {
    pub dry_run: bool,
    /// The mode Talos used.
    pub mode: String,
    /// Talos's summary with secret values redacted; the config diff Talos quotes is left out
    /// (see `diff`).
    pub summary: String,
    /// Line diff of the current and the new config, both redacted (absent when the current
    /// config could not be read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    pub warnings: Vec<String>,
}

/// Arguments of talos_reboot.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct RebootArgs {
    #[serde(flatten)]
    pub target: NodeTarget,
    /// `default` (may use kexec) or `powercycle`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Follow the node until it is back with a new boot id (progress is reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<bool>,
    /// Longest wait in seconds (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_timeout_seconds: Option<u32>,
    /// Proceed even when etcd would lose quorum (needs its own confirmation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
}

/// What a reboot did.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RebootOut {
    /// Actor id to find the reboot's events (talos_events with actor_id).
    pub actor_id: String,
    /// Whether the reboot was followed.
    pub waited: bool,
    /// Boot id before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_id_before: Option<String>,
    /// Boot id after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_id_after: Option<String>,
    /// The node answered again after going down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub back: Option<bool>,
    /// Seconds waited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waited_seconds: Option<u64>,
}

/// Arguments of talos_shutdown.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct ShutdownArgs {
    #[serde(flatten)]
    pub target: NodeTarget,
    /// Proceed even when etcd would lose quorum (needs its own confirmation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
}

/// Arguments of talos_reset.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct ResetArgs {
    #[serde(flatten)]
    pub target: NodeTarget,
    /// Leave etcd and drain cleanly first (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graceful: Option<bool>,
    /// Reboot after the reset instead of powering off (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot: Option<bool>,
    /// System partition labels to wipe, e.g. ["EPHEMERAL", "STATE"] (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wipe_partitions: Option<Vec<String>>,
    /// Proceed even when etcd would lose quorum (needs its own confirmation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
}

/// What a shutdown or reset returned.
#[derive(Debug, Serialize, JsonSchema)]
pub struct AckOut {
    pub actor_id: String,
}

/// Redacts `key: value` lines whose key looks secret (Talos's dry-run summary quotes config lines).
fn redact_lines(text: &str) -> String {
    text.lines()
        .map(|line| match line.split_once(':') {
            Some((key, value))
                if !value.trim().is_empty()
                    && crate::redact::is_secret_key(
                        key.trim_start_matches(['+', '-', ' ']).trim(),
                    ) =>
            {
                format!("{key}: {}", crate::redact::REDACTED)
            }
            _ => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn line_diff(old: &str, new: &str) -> String {
    let old_lines: std::collections::HashSet<&str> = old.lines().collect();
    let new_lines: std::collections::HashSet<&str> = new.lines().collect();
    let mut out = Vec::new();
    out.extend(
        old.lines()
            .filter(|l| !new_lines.contains(l))
            .map(|l| format!("- {l}")),
    );
    out.extend(
        new.lines()
            .filter(|l| !old_lines.contains(l))
            .map(|l| format!("+ {l}")),
    );
    if out.is_empty() {
        "no changes".into()
    } else {
        out.join("\n")
    }
}

/// etcd quorum impact of taking `node` down (or, with `leaves_membership`, of removing its
/// member): notes, and a blocker when the remaining healthy members would be below quorum.
pub(crate) async fn quorum_preflight(
    api: &dyn TalosApi,
    node: &str,
    hostname: Option<&str>,
    askable: &[String],
    leaves_membership: bool,
) -> Prepared {
    let mut ask: Vec<String> = vec![node.to_owned()];
    ask.extend(askable.iter().filter(|n| *n != node).cloned());
    let Ok((members, _)) = super::etcd::first_members(api, &ask).await else {
        return Prepared {
            effect: String::new(),
            preflight: vec!["etcd membership could not be read; quorum impact unknown".into()],
            blocker: Some(
                "etcd membership could not be read, so the quorum impact is unknown".into(),
            ),
        };
    };
    let addresses = super::etcd::member_nodes(&members);
    let target = members
        .iter()
        .zip(&addresses)
        .find(|(m, addr)| *addr == node || Some(m.hostname.as_str()) == hostname);
    let Some((target_member, _)) = target else {
        return Prepared {
            effect: String::new(),
            preflight: vec!["not an etcd member: no quorum impact".into()],
            blocker: None,
        };
    };
    let voting: Vec<_> = members
        .iter()
        .zip(&addresses)
        .filter(|(m, _)| !m.is_learner)
        .collect();
    // A node that goes down still counts in the membership; one that leaves does not.
    let members_after = if leaves_membership {
        voting.len().saturating_sub(1).max(1)
    } else {
        voting.len()
    };
    let quorum = members_after / 2 + 1;
    let mut healthy_others = 0;
    for (m, addr) in &voting {
        if m.id == target_member.id {
            continue;
        }
        if api
            .etcd_status(&CallOptions::node((*addr).clone()))
            .await
            .is_ok()
        {
            healthy_others += 1;
        }
    }
    let note = format!(
        "etcd: {healthy_others} of the other {} voting members are healthy; quorum is {quorum}",
        voting.len().saturating_sub(1)
    );
    Prepared {
        effect: String::new(),
        blocker: (healthy_others < quorum).then(|| {
            format!("taking this control-plane node down would leave {healthy_others} healthy etcd members, below the quorum of {quorum}: the cluster would stop accepting writes")
        }),
        preflight: vec![note],
    }
}

/// The node's current machine configuration with secrets redacted (needs the os:admin role).
pub(crate) async fn redacted_machine_config(
    api: &dyn TalosApi,
    opts: &CallOptions,
) -> Result<String, TalosError> {
    let r = api
        .resource_get(
            opts,
            "config",
            "MachineConfigs.config.talos.dev",
            "v1alpha1",
        )
        .await?;
    Ok(crate::redact::redact_yaml(&r.spec_yaml))
}

/// Reads the node's boot id (admin role), if possible.
async fn boot_id(api: &dyn TalosApi, opts: &CallOptions) -> Option<String> {
    api.read_file(opts, "/proc/sys/kernel/random/boot_id", 128)
        .await
        .ok()
        .map(|f| String::from_utf8_lossy(&f.data).trim().to_owned())
        .filter(|b| !b.is_empty())
}

/// Reports one step of a long call; resolves once the notification is sent, so every step
/// reaches the client before the result does.
type Progress<'a> = &'a (dyn Fn(f64, &'static str) -> BoxFuture<'static, ()> + Send + Sync);

/// Follows a rebooting node: down, then up with a different boot id. Reports progress.
async fn follow_reboot(
    api: &dyn TalosApi,
    opts: &CallOptions,
    before: Option<String>,
    timeout: Duration,
    progress: Progress<'_>,
) -> RebootOut {
    let started = Instant::now();
    let poll = Duration::from_millis(250);
    let quick = opts.clone().with_timeout(Duration::from_secs(2));
    let mut went_down = false;
    progress(1.0, "reboot requested; waiting for the node to go down").await;
    while started.elapsed() < timeout {
        let up = api.version(&quick).await.is_ok();
        if !up && !went_down {
            went_down = true;
            progress(2.0, "node is down; waiting for it to come back").await;
        }
        if up {
            let now = boot_id(api, &quick).await;
            let changed = match (&before, &now) {
                (Some(b), Some(n)) => b != n,
                _ => went_down,
            };
            if changed {
                progress(3.0, "node is back with a new boot id").await;
                return RebootOut {
                    actor_id: String::new(),
                    waited: true,
                    boot_id_before: before,
                    boot_id_after: now,
                    back: Some(true),
                    waited_seconds: Some(started.elapsed().as_secs()),
                };
            }
        }
        tokio::time::sleep(poll).await;
    }
    progress(3.0, "gave up waiting").await;
    RebootOut {
        actor_id: String::new(),
        waited: true,
        boot_id_before: before,
        boot_id_after: None,
        back: Some(false),
        waited_seconds: Some(started.elapsed().as_secs()),
    }
}

fn talos(e: TalosError) -> ToolError {
    ToolError::Talos(e)
}

#[tool_router(router = lifecycle_write_router, vis = "pub(crate)")]
impl TalosMcp {
    /// Apply a machine configuration.
    #[tool(
        name = "talos_apply_config",
        description = "Applies a machine configuration to one node (inline YAML or a file under the operator's allowlist). dry_run defaults to true and reports what would change (Talos's summary plus a redacted diff against the current config). Modes: auto, no-reboot, reboot, staged, try. A real apply needs the write tier; modes that may reboot need confirmation. Secrets are never echoed back.",
        output_schema = schema_for_output::<ActionOut<ApplyOut>>(),
        annotations(title = "Apply machine config", read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = true)
    )]
    pub(crate) async fn talos_apply_config(
        &self,
        ask: crate::confirm::Ask,
        Parameters(args): Parameters<ApplyConfigArgs>,
    ) -> Result<rmcp::model::CallToolResponse, ErrorData> {
        let mode = match args.mode.as_deref() {
            None | Some("auto") => ApplyMode::Auto,
            Some("no-reboot") => ApplyMode::NoReboot,
            Some("reboot") => ApplyMode::Reboot,
            Some("staged") => ApplyMode::Staged,
            Some("try") => ApplyMode::Try,
            Some(other) => {
                return Ok(failure(&ToolError::invalid(
                    "mode",
                    format!("must be auto, no-reboot, reboot, staged or try, got `{other}`"),
                ))
                .into());
            }
        };
        let config = match (&args.config, &args.config_file) {
            (Some(c), None) => c.clone().into_bytes(),
            (None, Some(path)) => {
                let checked = super::cluster::check_path(path, &self.settings.config_allowlist)
                    .map_err(|_| ToolError::PathNotAllowed {
                        path: path.clone(),
                        allowed: self.settings.config_allowlist.clone(),
                    })
                    .and_then(|p| {
                        std::fs::read(&p)
                            .map_err(|e| ToolError::Local(format!("cannot read {p}: {e}")))
                    });
                match checked {
                    Ok(bytes) => bytes,
                    Err(e) => return Ok(failure(&e).into()),
                }
            }
            _ => {
                return Ok(failure(&ToolError::invalid(
                    "config",
                    "give exactly one of `config` (inline YAML) or `config_file`",
                ))
                .into());
            }
        };
        let dry_run = args.dry_run.unwrap_or(true);
        let request = ApplyConfigRequest {
            config,
            mode,
            dry_run,
            try_timeout: (mode == ApplyMode::Try)
                .then(|| Duration::from_secs(u64::from(args.try_timeout_seconds.unwrap_or(60)))),
        };
        // Dry runs change nothing; real applies that may reboot are treated as destructive for
        // confirmation.
        let tier = match (dry_run, mode) {
            (true, _) => Tier::Read,
            (false, ApplyMode::Reboot | ApplyMode::Auto) => Tier::Destructive,
            (false, _) => Tier::Write,
        };
        let effect = if dry_run {
            "dry run: report what would change; nothing is applied".to_owned()
        } else {
            format!(
                "apply a new machine configuration in mode {mode:?}{}",
                if tier == Tier::Destructive {
                    " (the node may reboot)"
                } else {
                    ""
                }
            )
        };
        let target = args.target.clone();
        let config_text = String::from_utf8_lossy(&request.config).into_owned();
        self.action(
            &ask,
            "talos_apply_config",
            tier,
            &args,
            &target,
            false,
            |_, _| async move {
                Ok(Prepared {
                    effect,
                    preflight: vec![],
                    blocker: None,
                })
            },
            |api, opts| async move {
                let current = redacted_machine_config(api.as_ref(), &opts).await.ok();
                let result = api
                    .apply_configuration(&opts, &request)
                    .await
                    .map_err(talos)?;
                Ok(ApplyOut {
                    dry_run,
                    mode: format!("{:?}", result.mode),
                    summary: crate::redact::redact_apply_summary(&redact_lines(
                        &result.mode_details,
                    )),
                    diff: current.map(|c| line_diff(&c, &crate::redact::redact_yaml(&config_text))),
                    warnings: result.warnings,
                })
            },
            |o| {
                if o.dry_run {
                    format!(
                        "dry run in mode {}: {}",
                        o.mode,
                        o.summary.lines().next().unwrap_or_default()
                    )
                } else {
                    format!(
                        "applied in mode {}: {}",
                        o.mode,
                        o.summary.lines().next().unwrap_or_default()
                    )
                }
            },
        )
        .await
    }
}

#[tool_router(router = lifecycle_destructive_router, vis = "pub(crate)")]
impl TalosMcp {
    /// Reboot one node.
    #[tool(
        name = "talos_reboot",
        description = "Reboots one node after confirmation. Refuses to take a control-plane node down when etcd would lose quorum (unless force, which needs its own confirmation). With wait=true, follows the node until it is back with a new boot id, reporting progress.",
        output_schema = schema_for_output::<ActionOut<RebootOut>>(),
        annotations(title = "Reboot node", read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = true)
    )]
    pub(crate) async fn talos_reboot(
        &self,
        ask: crate::confirm::Ask,
        meta: RequestMetaObject,
        Parameters(args): Parameters<RebootArgs>,
    ) -> Result<rmcp::model::CallToolResponse, ErrorData> {
        let mode = match args.mode.as_deref() {
            None | Some("default") => RebootMode::Default,
            Some("powercycle") => RebootMode::Powercycle,
            Some(other) => {
                return Ok(failure(&ToolError::invalid(
                    "mode",
                    format!("must be default or powercycle, got `{other}`"),
                ))
                .into());
            }
        };
        let wait = args.wait.unwrap_or(false);
        let timeout = Duration::from_secs(u64::from(args.wait_timeout_seconds.unwrap_or(300)))
            .min(self.settings.max_wait);
        let askable = self.askable(args.target.context.as_deref());
        let target = args.target.clone();
        let progress_token = meta.get_progress_token();
        let progress_peer = ask.peer.clone();
        self.action(
            &ask,
            "talos_reboot",
            Tier::Destructive,
            &args,
            &target,
            args.force.unwrap_or(false),
            |api, opts| async move {
                let hostname = api.hostname(&opts).await.ok();
                let mut p = quorum_preflight(
                    api.as_ref(),
                    opts.node.as_deref().unwrap_or_default(),
                    hostname.as_deref(),
                    &askable,
                    false,
                )
                .await;
                p.effect = format!(
                    "reboot the node ({mode:?} mode); it is unavailable until it boots again"
                );
                Ok(p)
            },
            |api, opts| async move {
                let before = if wait {
                    boot_id(api.as_ref(), &opts).await
                } else {
                    None
                };
                let ack = api.reboot(&opts, mode).await.map_err(talos)?;
                if !wait {
                    return Ok(RebootOut {
                        actor_id: ack.actor_id,
                        waited: false,
                        boot_id_before: None,
                        boot_id_after: None,
                        back: None,
                        waited_seconds: None,
                    });
                }
                let notify = |progress: f64, message: &'static str| -> BoxFuture<'static, ()> {
                    let token = progress_token.clone();
                    let peer = progress_peer.clone();
                    Box::pin(async move {
                        if let Some(token) = token {
                            let param = ProgressNotificationParam::new(token, progress)
                                .with_total(3.0)
                                .with_message(message);
                            let _ = peer.notify_progress(param).await;
                        }
                    })
                };
                let mut out = follow_reboot(api.as_ref(), &opts, before, timeout, &notify).await;
                out.actor_id = ack.actor_id;
                Ok(out)
            },
            |o| match o.back {
                Some(true) => format!(
                    "rebooted and back after {} s",
                    o.waited_seconds.unwrap_or(0)
                ),
                Some(false) => format!(
                    "reboot requested, but the node was not back within {} s",
                    o.waited_seconds.unwrap_or(0)
                ),
                None => format!(
                    "reboot requested (actor {}); follow with talos_events actor_id",
                    o.actor_id
                ),
            },
        )
        .await
    }

    /// Shut one node down.
    #[tool(
        name = "talos_shutdown",
        description = "Powers one node off after confirmation; it stays off until someone powers it on. Refuses when etcd would lose quorum (unless force, which needs its own confirmation).",
        output_schema = schema_for_output::<ActionOut<AckOut>>(),
        annotations(title = "Shut down node", read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = true)
    )]
    pub(crate) async fn talos_shutdown(
        &self,
        ask: crate::confirm::Ask,
        Parameters(args): Parameters<ShutdownArgs>,
    ) -> Result<rmcp::model::CallToolResponse, ErrorData> {
        let askable = self.askable(args.target.context.as_deref());
        let force = args.force.unwrap_or(false);
        let target = args.target.clone();
        self.action(
            &ask,
            "talos_shutdown",
            Tier::Destructive,
            &args,
            &target,
            force,
            |api, opts| async move {
                let hostname = api.hostname(&opts).await.ok();
                let mut p = quorum_preflight(
                    api.as_ref(),
                    opts.node.as_deref().unwrap_or_default(),
                    hostname.as_deref(),
                    &askable,
                    false,
                )
                .await;
                p.effect = "power the node off; it stays off until powered on out of band".into();
                Ok(p)
            },
            |api, opts| async move {
                let ack = api.shutdown(&opts, force).await.map_err(talos)?;
                Ok(AckOut {
                    actor_id: ack.actor_id,
                })
            },
            |o| format!("shutdown requested (actor {})", o.actor_id),
        )
        .await
    }

    /// Reset one node.
    #[tool(
        name = "talos_reset",
        description = "Resets (wipes) one node after confirmation: graceful by default (leaves etcd first), then reboots or powers off. Data on the wiped partitions is lost. Refuses when etcd would lose quorum (unless force, which needs its own confirmation).",
        output_schema = schema_for_output::<ActionOut<AckOut>>(),
        annotations(title = "Reset node", read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = true)
    )]
    pub(crate) async fn talos_reset(
        &self,
        ask: crate::confirm::Ask,
        Parameters(args): Parameters<ResetArgs>,
    ) -> Result<rmcp::model::CallToolResponse, ErrorData> {
        let askable = self.askable(args.target.context.as_deref());
        let request = ResetRequest {
            graceful: args.graceful.unwrap_or(true),
            reboot: args.reboot.unwrap_or(false),
            system_partitions_to_wipe: args.wipe_partitions.clone().unwrap_or_default(),
            user_disks_to_wipe: vec![],
        };
        let target = args.target.clone();
        let wipe = if request.system_partitions_to_wipe.is_empty() {
            "all system partitions".to_owned()
        } else {
            request.system_partitions_to_wipe.join(", ")
        };
        let effect = format!(
            "reset the node: wipe {wipe}{}, then {}",
            if request.graceful {
                " after leaving etcd gracefully"
            } else {
                " without leaving etcd first"
            },
            if request.reboot {
                "reboot"
            } else {
                "power off"
            }
        );
        self.action(
            &ask,
            "talos_reset",
            Tier::Destructive,
            &args,
            &target,
            args.force.unwrap_or(false),
            |api, opts| async move {
                let hostname = api.hostname(&opts).await.ok();
                let mut p = quorum_preflight(
                    api.as_ref(),
                    opts.node.as_deref().unwrap_or_default(),
                    hostname.as_deref(),
                    &askable,
                    false,
                )
                .await;
                p.effect = effect;
                Ok(p)
            },
            |api, opts| async move {
                let ack = api.reset(&opts, &request).await.map_err(talos)?;
                Ok(AckOut {
                    actor_id: ack.actor_id,
                })
            },
            |o| format!("reset requested (actor {})", o.actor_id),
        )
        .await
    }
}

impl TalosMcp {
    /// Nodes that may answer etcd questions for a context (its default nodes).
    pub(crate) fn askable(&self, context: Option<&str>) -> Vec<String> {
        self.clusters
            .entry(context)
            .map(|e| e.default_nodes.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_lines_with_secrets_are_redacted() {
        let text = "Config diff:\n+   token: abc\n-   secret: old\n    hostname: cp-1\n+ key: K";
        let out = redact_lines(text);
        assert!(
            !out.contains("abc") && !out.contains("old") && !out.contains(": K"),
            "{out}"
        );
        assert!(out.contains("hostname: cp-1"));
    }

    #[test]
    fn diffs_show_changed_lines() {
        assert_eq!(line_diff("a\nb", "a\nc"), "- b\n+ c");
        assert_eq!(line_diff("a", "a"), "no changes");
    }
}
