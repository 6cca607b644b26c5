//! Machine configuration and node lifecycle: apply config (write tier); reboot, shutdown, reset
//! (destructive tier). Every call targets one named node, is confirmed, and is audited.

use crate::call::{Call, Reply};
use crate::registry::{Effect, ToolDef, Toolset, tool};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use talos_client::{
    ApplyConfigRequest, ApplyMode, CallOptions, RebootMode, ResetRequest, TalosApi, TalosError,
};

use super::actions::{ActionOut, Change, NodeTarget, Prepared, StagedSlot};
use crate::error::ToolError;
use crate::safety::Tier;
use crate::server::TalosMcp;

/// The tier an apply runs at. Dry runs change nothing. Every real apply can take the node or the
/// cluster down (a bad network or etcd setting, a reboot, a staged config activated later), so
/// every mode is confirmed like a destructive call.
fn apply_tier(args: &ApplyConfigArgs) -> Tier {
    if args.dry_run.unwrap_or(true) {
        Tier::Read
    } else {
        Tier::Destructive
    }
}

/// Arguments of talos_apply_config.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct ApplyConfigArgs {
    #[serde(flatten)]
    pub target: NodeTarget,
    /// Machine config YAML (or config_file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// Path under the operator's allowlist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_file: Option<String>,
    /// auto reboots if needed; staged waits for the next boot; try rolls back after try_timeout_seconds.
    #[serde(default, deserialize_with = "null_is_default")]
    pub mode: ApplyModeArg,
    /// Default 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub try_timeout_seconds: Option<u32>,
    /// Default true: only report what would change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
}

/// Reads a choice whose `null` means its default, as for every other optional argument.
pub(crate) fn null_is_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

// How an apply takes effect (Talos's apply modes); its meaning is in the `mode` field's doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ApplyModeArg {
    #[default]
    Auto,
    #[serde(alias = "no_reboot", alias = "noreboot")]
    NoReboot,
    Reboot,
    Staged,
    Try,
}

impl From<ApplyModeArg> for ApplyMode {
    fn from(mode: ApplyModeArg) -> Self {
        match mode {
            ApplyModeArg::Auto => Self::Auto,
            ApplyModeArg::NoReboot => Self::NoReboot,
            ApplyModeArg::Reboot => Self::Reboot,
            ApplyModeArg::Staged => Self::Staged,
            ApplyModeArg::Try => Self::Try,
        }
    }
}

// How a node reboots; see the `mode` field's doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RebootModeArg {
    #[default]
    Default,
    #[serde(alias = "power-cycle", alias = "power_cycle")]
    Powercycle,
}

impl From<RebootModeArg> for RebootMode {
    fn from(mode: RebootModeArg) -> Self {
        match mode {
            RebootModeArg::Default => Self::Default,
            RebootModeArg::Powercycle => Self::Powercycle,
        }
    }
}

/// What an apply's confirmation is bound to: its arguments and the SHA-256 of the config they
/// name (inline or read from the file).
#[derive(Serialize)]
struct BoundApply<'a> {
    #[serde(flatten)]
    args: &'a ApplyConfigArgs,
    config_sha256: String,
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
    /// powercycle: no kexec.
    #[serde(default, deserialize_with = "null_is_default")]
    pub mode: RebootModeArg,
    /// Follow until the node is back (new boot id), with progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<bool>,
    /// Seconds (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_timeout_seconds: Option<u32>,
    /// Override the etcd quorum refusal (confirmed separately).
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
    /// Override the quorum refusal; Talos also skips cordon and drain (confirmed separately).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
}

/// Arguments of talos_reset.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct ResetArgs {
    #[serde(flatten)]
    pub target: NodeTarget,
    /// Leave etcd and drain first (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graceful: Option<bool>,
    /// Reboot afterwards (default false: power off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot: Option<bool>,
    /// Partition labels, e.g. STATE, EPHEMERAL (default: all; at most 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wipe_partitions: Option<Vec<String>>,
    /// Override the etcd quorum refusal (confirmed separately).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
}

/// Most partition labels one reset names.
const MAX_WIPE_LABELS: usize = 16;

/// The partition labels a reset wipes: trimmed, de-duplicated (first spelling kept), at most
/// [`MAX_WIPE_LABELS`], each a plain volume label (letters, digits, `-`, `_`, `.`; at most 63
/// characters), so the plan and the audit never carry unbounded model text.
fn wipe_labels(given: Option<&[String]>) -> Result<Vec<String>, ToolError> {
    let mut labels: Vec<String> = Vec::new();
    for label in given.unwrap_or_default() {
        let label = label.trim();
        let plain = (1..=63).contains(&label.len())
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !plain {
            return Err(ToolError::invalid(
                "wipe_partitions",
                format!(
                    "has {}, which is not a partition label (letters, digits, `-`, `_`, `.`; 1–63 characters), e.g. STATE or EPHEMERAL",
                    crate::error::echo(label)
                ),
            ));
        }
        if !labels.iter().any(|l| l.eq_ignore_ascii_case(label)) {
            labels.push(label.to_owned());
        }
        if labels.len() > MAX_WIPE_LABELS {
            return Err(ToolError::invalid(
                "wipe_partitions",
                format!("names more than {MAX_WIPE_LABELS} partitions"),
            ));
        }
    }
    Ok(labels)
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

/// The plan of a change with `effect` that takes the call's node down (or, with
/// `leaves_membership`, removes its etcd member): the etcd quorum notes, and a blocker when the
/// remaining healthy members would be below quorum.
pub(crate) async fn quorum_preflight(
    api: &dyn TalosApi,
    opts: &CallOptions,
    askable: &[String],
    leaves_membership: bool,
    effect: impl Into<String>,
) -> Prepared {
    let node = opts.node.as_deref().unwrap_or_default();
    let hostname = api.hostname(opts).await.ok();
    Prepared {
        effect: effect.into(),
        ..quorum_impact(api, node, hostname.as_deref(), askable, leaves_membership).await
    }
}

/// The etcd part of [`quorum_preflight`], for a node known by address and reported hostname.
async fn quorum_impact(
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
            blocker: Some(
                "etcd membership could not be read, so the quorum impact is unknown".into(),
            ),
            ..Prepared::new(
                String::new(),
                vec!["etcd membership could not be read; quorum impact unknown".into()],
            )
        };
    };
    let addresses = super::etcd::member_nodes(&members);
    let target = members
        .iter()
        .zip(&addresses)
        .find(|(m, addr)| *addr == node || Some(m.hostname.as_str()) == hostname);
    let Some((target_member, _)) = target else {
        return Prepared::new(
            String::new(),
            vec!["not an etcd member: no quorum impact".into()],
        );
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
        if member_is_healthy(api, addr).await {
            healthy_others += 1;
        }
    }
    let note = format!(
        "etcd: {healthy_others} of the other {} voting members are healthy; quorum is {quorum}",
        voting.len().saturating_sub(1)
    );
    Prepared {
        blocker: (healthy_others < quorum).then(|| {
            format!("taking this control-plane node down would leave {healthy_others} healthy etcd members, below the quorum of {quorum}: the cluster would stop accepting writes")
        }),
        ..Prepared::new(String::new(), vec![note])
    }
}

/// A member counts as healthy when its etcd answers and its etcd service is running (a stopped
/// service may still have answered a moment ago; it is about to be, or already is, down).
async fn member_is_healthy(api: &dyn TalosApi, node: &str) -> bool {
    let opts = CallOptions::node(node.to_owned());
    if api.etcd_status(&opts).await.is_err() {
        return false;
    }
    match api.services(&opts).await {
        Ok(services) => services
            .iter()
            .find(|s| s.id == "etcd")
            .is_none_or(|s| s.state == "Running"),
        Err(_) => false,
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

fn talos(e: TalosError) -> ToolError {
    ToolError::Talos(e)
}

/// Largest `config_file` read (machine configurations are a few tens of KiB).
const MAX_CONFIG_FILE: u64 = 4 << 20;

/// Reads a `config_file` under the allowlist and checks it is YAML. Errors name the file and the
/// error class, never its content (YAML errors can quote the text).
fn read_config_file(path: &str, allowlist: &[String]) -> Result<Vec<u8>, ToolError> {
    use std::io::Read as _;
    let checked =
        super::cluster::check_path(path, allowlist).map_err(|_| ToolError::PathNotAllowed {
            path: path.to_owned(),
            allowed: allowlist.to_vec(),
        })?;
    let unreadable = |e: std::io::Error| {
        ToolError::Local(format!("cannot read config_file `{checked}`: {}", e.kind()))
    };
    let file = std::fs::File::open(&checked).map_err(unreadable)?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_CONFIG_FILE {
        return Err(ToolError::invalid(
            "config_file",
            format!(
                "`{checked}` is larger than {MAX_CONFIG_FILE} bytes; it is not a machine configuration"
            ),
        ));
    }
    for doc in serde_yaml_ng::Deserializer::from_slice(&bytes) {
        if let Err(e) = <serde_yaml_ng::Value as serde::Deserialize>::deserialize(doc) {
            let at = e
                .location()
                .map(|l| format!(" at line {}, column {}", l.line(), l.column()))
                .unwrap_or_default();
            return Err(ToolError::invalid(
                "config_file",
                format!(
                    "`{checked}` is not valid YAML{at} (the file's content is not shown); fix the file and call again"
                ),
            ));
        }
    }
    Ok(bytes)
}

/// A Talos error about a configuration read from a file: Talos's message can quote the file,
/// so only its class is shown (connection-level errors, which cannot, keep their message).
fn file_refused(path: &str, e: TalosError) -> ToolError {
    use talos_client::ErrorKind as K;
    match e.kind() {
        K::Connection | K::Timeout | K::Authentication | K::PermissionDenied => ToolError::Talos(e),
        kind => ToolError::invalid(
            "config_file",
            format!(
                "Talos refused the configuration in `{path}` ({kind}); its message is not shown because it can quote the file. Check the file (e.g. with `talosctl validate`) and call again"
            ),
        ),
    }
}

/// Keeps a plan's diff readable; the full redacted diff is one dry run away.
fn clip_diff(diff: &str) -> String {
    const MAX: usize = 4000;
    if diff.len() <= MAX {
        return diff.to_owned();
    }
    let mut end = MAX;
    while !diff.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}\n… (diff shortened; call with dry_run=true to see all of it)",
        &diff[..end]
    )
}

impl TalosMcp {
    /// Apply a machine configuration.
    pub(crate) async fn talos_apply_config(
        &self,
        call: &Call,
        args: ApplyConfigArgs,
    ) -> Result<Reply<ActionOut<ApplyOut>>, ToolError> {
        let mode = ApplyMode::from(args.mode);
        let (config, from_file) = match (&args.config, &args.config_file) {
            (Some(c), None) => (c.clone().into_bytes(), None),
            (None, Some(path)) => match read_config_file(path, &self.settings.config_allowlist) {
                Ok(bytes) => (bytes, Some(path.clone())),
                Err(e) => return Err(e),
            },
            _ => {
                return Err(ToolError::invalid(
                    "config",
                    "give exactly one of `config` (inline YAML) or `config_file`",
                ));
            }
        };
        let dry_run = args.dry_run.unwrap_or(true);
        let config_sha256 = super::kubernetes::sha256_hex(&config);
        let request = ApplyConfigRequest {
            config,
            mode,
            dry_run,
            try_timeout: (mode == ApplyMode::Try)
                .then(|| Duration::from_secs(u64::from(args.try_timeout_seconds.unwrap_or(60)))),
        };
        let effect = if dry_run {
            "dry run: report what would change; nothing is applied".to_owned()
        } else {
            match mode {
                ApplyMode::Auto => "apply a new machine configuration (mode auto: the node reboots if the change needs it)".to_owned(),
                ApplyMode::Reboot => "apply a new machine configuration and reboot the node".to_owned(),
                ApplyMode::NoReboot => "apply a new machine configuration now, without a reboot (refused by Talos if the change needs one)".to_owned(),
                ApplyMode::Staged => "stage a new machine configuration: nothing changes now; the node's next boot activates it".to_owned(),
                ApplyMode::Try => format!(
                    "apply a new machine configuration for {} s, then roll it back unless applied again",
                    args.try_timeout_seconds.unwrap_or(60)
                ),
            }
        };
        let target = args.target.clone();
        let config_text = String::from_utf8_lossy(&request.config).into_owned();
        let new_redacted = crate::redact::redact_yaml(&config_text);
        // The confirmation is bound to the exact bytes: a file changed between plan and apply
        // no longer matches the token (or the round-trip state).
        let bound = BoundApply {
            args: &args,
            config_sha256: config_sha256.clone(),
        };
        let context = self.context_name(args.target.context.as_deref());
        let changes = self.changes.clone();
        let sha = config_sha256.clone();
        let diff_new = new_redacted.clone();
        self.action(
            call,
            Change {
                args: &bound,
                target: &target,
                force: false,
            },
            move |api, opts| async move {
                let slot = changes.staged_slot(&context, opts.node.as_deref().unwrap_or_default());
                if dry_run {
                    return Ok(handing(Prepared::new(effect, vec![]), slot));
                }
                let mut preflight = Vec::new();
                if let Some(note) = super::actions::staged_note(slot.pending()) {
                    preflight.push(format!("{note}; this apply replaces it"));
                }
                let details = match redacted_machine_config(api.as_ref(), &opts).await {
                    Ok(current) => format!(
                        "Configuration SHA-256: {sha}\nRedacted diff against the node's current configuration:\n{}",
                        clip_diff(&line_diff(&current, &diff_new))
                    ),
                    Err(e) => format!(
                        "Configuration SHA-256: {sha}\nThe node's current configuration could not be read ({}), so there is no diff; a dry run shows Talos's own summary.",
                        e.kind()
                    ),
                };
                Ok(Prepared {
                    effect,
                    preflight,
                    blocker: None,
                    details: Some(details),
                    binds: None,
                    resolved: slot,
                })
            },
            |api, opts, slot| async move {
                let current = redacted_machine_config(api.as_ref(), &opts).await.ok();
                let result = api
                    .apply_configuration(&opts, &request)
                    .await
                    .map_err(|e| match &from_file {
                        Some(path) => file_refused(path, e),
                        None => talos(e),
                    })?;
                if !dry_run {
                    let staged = (mode == ApplyMode::Staged).then(|| super::actions::StagedConfig {
                        sha256: config_sha256.clone(),
                        at: crate::audit::now(),
                    });
                    slot.set(staged);
                }
                Ok(ApplyOut {
                    dry_run,
                    mode: format!("{:?}", result.mode),
                    summary: crate::redact::redact_apply_summary(&redact_lines(&result.mode_details)),
                    diff: current.map(|c| line_diff(&c, &new_redacted)),
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

impl TalosMcp {
    /// Reboot one node.
    pub(crate) async fn talos_reboot(
        &self,
        call: &Call,
        args: RebootArgs,
    ) -> Result<Reply<ActionOut<RebootOut>>, ToolError> {
        let mode = RebootMode::from(args.mode);
        let wait = args.wait.unwrap_or(false);
        let timeout = Duration::from_secs(u64::from(args.wait_timeout_seconds.unwrap_or(300)))
            .min(self.settings.max_wait);
        let askable = self.askable(args.target.context.as_deref());
        let target = args.target.clone();
        let context = self.context_name(args.target.context.as_deref());
        let changes = self.changes.clone();
        self.action(
            call,
            Change {
                args: &args,
                target: &target,
                force: args.force.unwrap_or(false),
            },
            |api, opts| async move {
                let slot = changes.staged_slot(&context, opts.node.as_deref().unwrap_or_default());
                let mut p = quorum_preflight(
                    api.as_ref(),
                    &opts,
                    &askable,
                    false,
                    format!(
                        "reboot the node ({mode:?} mode); it is unavailable until it boots again"
                    ),
                )
                .await;
                note_staged(&slot, &mut p);
                Ok(handing(p, slot))
            },
            |api, opts, slot| async move {
                let before = if wait {
                    super::follow::boot_id(api.as_ref(), &opts).await
                } else {
                    None
                };
                let ack = api.reboot(&opts, mode).await.map_err(talos)?;
                booted(&slot);
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
                let what = super::follow::Follow {
                    prefix: String::new(),
                    boot_id_before: before.clone(),
                    expect_version: None,
                    version_before: None,
                    expect_changed_version: false,
                    services_healthy: false,
                    timeout,
                };
                let followed = super::follow::follow_node(api.as_ref(), &opts, call, &what).await;
                Ok(RebootOut {
                    actor_id: ack.actor_id,
                    waited: true,
                    boot_id_before: before,
                    boot_id_after: followed.boot_id_after,
                    back: Some(followed.back),
                    waited_seconds: Some(followed.seconds),
                })
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
    pub(crate) async fn talos_shutdown(
        &self,
        call: &Call,
        args: ShutdownArgs,
    ) -> Result<Reply<ActionOut<AckOut>>, ToolError> {
        let askable = self.askable(args.target.context.as_deref());
        let force = args.force.unwrap_or(false);
        let target = args.target.clone();
        let context = self.context_name(args.target.context.as_deref());
        let changes = self.changes.clone();
        self.action(
            call,
            Change {
                args: &args,
                target: &target,
                force,
            },
            |api, opts| async move {
                let slot = changes.staged_slot(&context, opts.node.as_deref().unwrap_or_default());
                let mut p = quorum_preflight(
                    api.as_ref(),
                    &opts,
                    &askable,
                    false,
                    "power the node off; it stays off until powered on out of band",
                )
                .await;
                note_staged(&slot, &mut p);
                Ok(handing(p, slot))
            },
            |api, opts, slot| async move {
                let ack = api.shutdown(&opts, force).await.map_err(talos)?;
                booted(&slot);
                Ok(AckOut {
                    actor_id: ack.actor_id,
                })
            },
            |o| format!("shutdown requested (actor {})", o.actor_id),
        )
        .await
    }

    /// Reset one node.
    pub(crate) async fn talos_reset(
        &self,
        call: &Call,
        args: ResetArgs,
    ) -> Result<Reply<ActionOut<AckOut>>, ToolError> {
        let askable = self.askable(args.target.context.as_deref());
        let request = ResetRequest {
            graceful: args.graceful.unwrap_or(true),
            reboot: args.reboot.unwrap_or(false),
            system_partitions_to_wipe: wipe_labels(args.wipe_partitions.as_deref())?,
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
            call,
            Change {
                args: &args,
                target: &target,
                force: args.force.unwrap_or(false),
            },
            |api, opts| async move {
                Ok(quorum_preflight(api.as_ref(), &opts, &askable, false, effect).await)
            },
            |api, opts, ()| async move {
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

/// Adds the configuration pending on the slot's node, if any, to the plan of a call that boots
/// the node.
fn note_staged(slot: &StagedSlot, p: &mut Prepared) {
    if let Some(note) = super::actions::staged_note(slot.pending()) {
        p.effect
            .push_str("; the boot activates a staged machine configuration");
        p.preflight.push(note);
    }
}

/// The node is about to boot (or power off and boot later): its staged configuration is no
/// longer pending here.
fn booted(slot: &StagedSlot) {
    slot.set(None);
}

/// A plan that hands `resolved` to the execution.
fn handing<X>(p: Prepared, resolved: X) -> Prepared<X> {
    Prepared {
        effect: p.effect,
        preflight: p.preflight,
        blocker: p.blocker,
        details: p.details,
        binds: p.binds,
        resolved,
    }
}

impl TalosMcp {
    /// The name of a context (the current one when `None`); empty when it does not resolve (the
    /// call then fails on resolving its node anyway).
    pub(crate) fn context_name(&self, context: Option<&str>) -> String {
        self.clusters
            .entry(context)
            .map(|e| e.name.clone())
            .unwrap_or_default()
    }

    /// Nodes that may answer etcd questions for a context (its default nodes).
    pub(crate) fn askable(&self, context: Option<&str>) -> Vec<String> {
        self.clusters
            .entry(context)
            .map(|e| e.default_nodes.clone())
            .unwrap_or_default()
    }
}

/// The tools of this module, in listing order.
pub(crate) fn tools() -> Vec<ToolDef> {
    vec![
        tool(
            Toolset::Lifecycle,
            "talos_apply_config",
            "Apply machine config",
            "Applies a machine config to one node; a dry run by default (Talos's summary, redacted diff). A real apply is confirmed, bound to the config's SHA-256. Never echoes secrets or the file.",
        )
        .tier(Tier::Write)
        .effect(Effect::Destroys { idempotent: false })
        .run(TalosMcp::talos_apply_config)
        .tier_by(apply_tier)
        .build(),
        tool(
            Toolset::Lifecycle,
            "talos_reboot",
            "Reboot node",
            "Reboots one node after confirmation; refused if etcd would lose quorum (unless force).",
        )
        .tier(Tier::Destructive)
        .run(TalosMcp::talos_reboot)
        .long_running()
        .build(),
        tool(
            Toolset::Lifecycle,
            "talos_shutdown",
            "Shut down node",
            "Powers one node off (until powered on out of band) after confirmation; refused if etcd would lose quorum (unless force).",
        )
        .tier(Tier::Destructive)
        .run(TalosMcp::talos_shutdown)
        .build(),
        tool(
            Toolset::Lifecycle,
            "talos_reset",
            "Reset node",
            "Wipes one node after confirmation (the data is lost), then powers it off or reboots; refused if etcd would lose quorum (unless force).",
        )
        .tier(Tier::Destructive)
        .run(TalosMcp::talos_reset)
        .build(),
    ]
}

super::targeted_by_field!(ApplyConfigArgs, RebootArgs, ShutdownArgs, ResetArgs);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wipe_labels_are_plain_bounded_and_deduplicated() {
        let given = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(wipe_labels(None).unwrap(), Vec::<String>::new());
        assert_eq!(
            wipe_labels(Some(&given(&[" STATE ", "EPHEMERAL", "state"]))).unwrap(),
            ["STATE", "EPHEMERAL"]
        );
        let many: Vec<String> = (0..17).map(|i| format!("P{i}")).collect();
        assert!(wipe_labels(Some(&many)).is_err());
        // Repeats do not count against the cap.
        assert_eq!(
            wipe_labels(Some(&vec!["STATE".into(); 1000])).unwrap(),
            ["STATE"]
        );
        for bad in ["", "a b", "../x", "x\ny", &"L".repeat(64)] {
            assert!(wipe_labels(Some(&given(&[bad]))).is_err(), "{bad:?}");
        }
        let err = wipe_labels(Some(&given(&[&"é".repeat(100_000)]))).unwrap_err();
        assert!(err.to_string().len() < 1024);
    }

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

    /// The closed choices are listed in the schemas (the accepted spellings, not the aliases).
    #[test]
    fn modes_are_enums_in_the_schemas() {
        let enum_of = |schema: &rmcp::model::JsonObject| {
            schema["properties"]["mode"]["enum"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        };
        assert_eq!(
            enum_of(&crate::schema::input_schema::<ApplyConfigArgs>()),
            ["auto", "no-reboot", "reboot", "staged", "try"]
        );
        assert_eq!(
            enum_of(&crate::schema::input_schema::<RebootArgs>()),
            ["default", "powercycle"]
        );
    }

    #[test]
    fn diffs_show_changed_lines() {
        assert_eq!(line_diff("a\nb", "a\nc"), "- b\n+ c");
        assert_eq!(line_diff("a", "a"), "no changes");
    }
}
