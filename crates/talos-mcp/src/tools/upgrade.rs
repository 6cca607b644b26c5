//! Upgrading and rolling back Talos on one node (destructive tier, run as long operations), and
//! the node machinery the rolling cluster upgrade shares: version parsing and the version-path
//! rule, installer reference checks, the preflight, and `upgrade_node`, which sends the upgrade
//! and follows the node until it is back on the target version with healthy services.

use std::cmp::Ordering;
use std::fmt;
use std::time::Duration;

use futures_util::StreamExt as _;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use talos_client::{
    CallOptions, ContainerNamespace, HealthCheckRequest, RebootMode, TalosApi, TalosError,
    UpgradeProgress, UpgradeRequest,
};

use super::actions::{ActionOut, Change, NodeTarget, Prepared};
use super::follow::{Follow, follow_node};
use super::lifecycle::RebootModeArg;
use crate::call::{Call, Reply};
use crate::error::ToolError;
use crate::registry::{ToolDef, Toolset, tool};
use crate::safety::Tier;
use crate::server::TalosMcp;

/// Longest installer reference accepted.
const MAX_IMAGE: usize = 512;

/// How long the preflight's cluster health check may take on the node.
const HEALTH_WAIT: Duration = Duration::from_secs(20);

/// A Talos version `vMAJOR.MINOR.PATCH[-PRE]`. Ordered as releases are: a pre-release comes
/// before its release; pre-release parts compare numerically where both are numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TalosVersion {
    pub(crate) major: u32,
    pub(crate) minor: u32,
    pub(crate) patch: u32,
    /// The pre-release part after `-` (e.g. `beta.0`), when there is one.
    pub(crate) pre: Option<String>,
}

impl TalosVersion {
    /// Parses `vMAJOR.MINOR.PATCH[-PRE]` (the leading `v` is required, as in Talos tags).
    pub(crate) fn parse(s: &str) -> Option<Self> {
        if s.len() > 64 {
            return None;
        }
        let rest = s.strip_prefix('v')?;
        let (core, pre) = match rest.split_once('-') {
            Some((core, pre)) => (core, Some(pre)),
            None => (rest, None),
        };
        let mut parts = core.split('.');
        let mut number = || -> Option<u32> {
            let p = parts.next()?;
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.len() > 9 {
                return None;
            }
            p.parse().ok()
        };
        let (major, minor, patch) = (number()?, number()?, number()?);
        if parts.next().is_some() {
            return None;
        }
        let pre = match pre {
            None => None,
            Some(p)
                if !p.is_empty()
                    && p.split('.').all(|part| {
                        !part.is_empty()
                            && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    }) =>
            {
                Some(p.to_owned())
            }
            Some(_) => return None,
        };
        Some(Self {
            major,
            minor,
            patch,
            pre,
        })
    }
}

impl fmt::Display for TalosVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)?;
        if let Some(pre) = &self.pre {
            write!(f, "-{pre}")?;
        }
        Ok(())
    }
}

/// Compares dotted pre-release parts: numbers numerically and before words, words as text.
fn compare_pre(a: &str, b: &str) -> Ordering {
    let mut left = a.split('.');
    let mut right = b.split('.');
    loop {
        match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let order = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(n), Ok(m)) => n.cmp(&m),
                    (Ok(_), Err(_)) => Ordering::Less,
                    (Err(_), Ok(_)) => Ordering::Greater,
                    (Err(_), Err(_)) => x.cmp(y),
                };
                if order != Ordering::Equal {
                    return order;
                }
            }
        }
    }
}

impl Ord for TalosVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| match (&self.pre, &other.pre) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(a), Some(b)) => compare_pre(a, b),
            })
    }
}

impl PartialOrd for TalosVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The version path rule: no downgrade, no re-install of the same version, no change of major
/// version, no skipping a minor release (v1.10 → v1.12). `Err` says why, in words.
pub(crate) fn version_path(current: &TalosVersion, target: &TalosVersion) -> Result<(), String> {
    match target.cmp(current) {
        Ordering::Less => {
            return Err(format!(
                "{target} is older than the node's {current}: a downgrade (use talos_rollback to return to the previous installation)"
            ));
        }
        Ordering::Equal => return Err(format!("the node already runs {target}")),
        Ordering::Greater => {}
    }
    if target.major != current.major {
        return Err(format!(
            "{current} → {target} changes the major version, which is not a supported upgrade path"
        ));
    }
    if target.minor > current.minor + 1 {
        return Err(format!(
            "{current} → {target} skips minor release v{}.{}: upgrade to the latest v{}.{} patch first",
            current.major,
            current.minor + 1,
            current.major,
            current.minor + 1
        ));
    }
    Ok(())
}

/// Whether `c` may appear in a repository path component (lowercase, digits, separators).
fn path_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
}

/// A well-formed installer image reference (`[registry[:port]/]path[:tag][@sha256:…]`) whose tag
/// is a Talos version; the version, or `InvalidArgument` naming what is wrong.
pub(crate) fn installer_target(image: &str) -> Result<TalosVersion, ToolError> {
    let bad = |why: &str| ToolError::invalid("image", why.to_owned());
    if image.is_empty() || image.len() > MAX_IMAGE {
        return Err(bad(&format!(
            "must be an installer image reference of 1 to {MAX_IMAGE} characters"
        )));
    }
    if image
        .chars()
        .any(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '@')))
    {
        return Err(bad(
            "contains a character an image reference cannot have (allowed: letters, digits, . _ - / : @)",
        ));
    }
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    if let Some(d) = digest {
        let hex = d.strip_prefix("sha256:").unwrap_or_default();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("has a digest that is not sha256:<64 hex digits>"));
        }
    }
    let (repo, tag) = match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => {
            return Err(bad(
                "needs a Talos version tag, e.g. ghcr.io/siderolabs/installer:v1.12.0",
            ));
        }
    };
    let components: Vec<&str> = repo.split('/').collect();
    let (host, path) = if components.len() > 1
        && (components[0].contains('.')
            || components[0].contains(':')
            || components[0] == "localhost")
    {
        (Some(components[0]), &components[1..])
    } else {
        (None, &components[..])
    };
    if let Some(host) = host {
        let (h, port) = host.split_once(':').unwrap_or((host, ""));
        let host_ok = !h.is_empty()
            && h.split('.').all(|l| {
                !l.is_empty()
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        let port_ok = (port.is_empty() && !host.contains(':'))
            || (!port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit()));
        if !host_ok || !port_ok {
            return Err(bad("has a malformed registry host"));
        }
    }
    let path_ok = !path.is_empty()
        && path.iter().all(|p| {
            !p.is_empty()
                && p.chars().all(path_char)
                && p.starts_with(|c: char| c.is_ascii_alphanumeric())
                && p.ends_with(|c: char| c.is_ascii_alphanumeric())
        });
    if !path_ok {
        return Err(bad(
            "has a malformed repository path (lowercase letters, digits and . _ - between slashes)",
        ));
    }
    TalosVersion::parse(tag).ok_or_else(|| {
        bad("has a tag that is not a Talos version (vMAJOR.MINOR.PATCH[-PRE], e.g. v1.12.0)")
    })
}

/// Which upgrade API a node was (or will be) upgraded with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UpgradeApi {
    /// `LifecycleService.Upgrade` (Talos 1.13+): a progress stream.
    Lifecycle,
    /// `MachineService.Upgrade`: an acknowledgement (older nodes; stage, preserve, powercycle).
    Machine,
}

impl UpgradeApi {
    /// `lifecycle` or `machine`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Lifecycle => "lifecycle",
            Self::Machine => "machine",
        }
    }
}

/// What to upgrade one node to.
#[derive(Debug, Clone)]
pub(crate) struct UpgradeSpec {
    /// The installer image reference (checked with [`installer_target`]).
    pub(crate) image: String,
    /// The version its tag names.
    pub(crate) target: TalosVersion,
    /// Stage the upgrade for the next reboot instead of rebooting now (classic API).
    pub(crate) stage: bool,
    /// Keep ephemeral data (classic API).
    pub(crate) preserve: bool,
    /// How the node reboots (powercycle needs the classic API).
    pub(crate) reboot_mode: RebootMode,
    /// How long to follow the node.
    pub(crate) timeout: Duration,
    /// The API this node is known to support, when an earlier upgrade found out.
    pub(crate) known_api: Option<UpgradeApi>,
}

impl UpgradeSpec {
    /// The API the upgrade will try first: the classic one when an option needs it or the node
    /// is known to lack the lifecycle service, the lifecycle stream otherwise.
    pub(crate) fn first_api(&self) -> UpgradeApi {
        if self.stage
            || self.preserve
            || self.reboot_mode != RebootMode::Default
            || self.known_api == Some(UpgradeApi::Machine)
        {
            UpgradeApi::Machine
        } else {
            UpgradeApi::Lifecycle
        }
    }

    /// The plan's words for the API: what will be used, and the fallback.
    pub(crate) fn api_words(&self) -> &'static str {
        match (self.first_api(), self.known_api) {
            (UpgradeApi::Machine, _) if self.stage || self.preserve => {
                "MachineService.Upgrade (stage and preserve need the classic API)"
            }
            (UpgradeApi::Machine, _) if self.reboot_mode != RebootMode::Default => {
                "MachineService.Upgrade (powercycle needs the classic API)"
            }
            (UpgradeApi::Machine, _) => "MachineService.Upgrade (the node has no LifecycleService)",
            (UpgradeApi::Lifecycle, Some(UpgradeApi::Lifecycle)) => {
                "LifecycleService.Upgrade (streamed progress)"
            }
            (UpgradeApi::Lifecycle, _) => {
                "LifecycleService.Upgrade (streamed progress), or MachineService.Upgrade if the node lacks it"
            }
        }
    }
}

/// What upgrading one node did.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct NodeUpgrade {
    pub node: String,
    /// Version before.
    pub from_version: Option<String>,
    /// Version after (when the node answered).
    pub to_version: Option<String>,
    /// `lifecycle` or `machine`.
    pub api: String,
    pub boot_id_before: Option<String>,
    pub boot_id_after: Option<String>,
    /// The node answered again after going down.
    pub back: bool,
    /// It reports the target version.
    pub on_target: bool,
    /// All its services are running and healthy.
    pub services_healthy: bool,
    /// Staged only: the next reboot activates it.
    pub staged: bool,
    pub seconds: u64,
    /// Why the upgrade did not end on the target version with healthy services.
    pub problem: Option<String>,
}

/// What the preflight of one node found (handed to the execution).
#[derive(Debug, Clone)]
pub(crate) struct NodePreflight {
    /// The node's version now.
    pub(crate) current: TalosVersion,
}

/// Reads and parses the node's version.
pub(crate) async fn current_version(
    api: &dyn TalosApi,
    opts: &CallOptions,
) -> Result<TalosVersion, ToolError> {
    let v = api.version(opts).await?;
    TalosVersion::parse(&v.tag).ok_or_else(|| {
        ToolError::Preflight(format!(
            "the node reports version {:?}, which is not a Talos release version; nothing was done",
            v.tag.chars().take(64).collect::<String>()
        ))
    })
}

/// Preflight for upgrading `node` to `target` with `image`: its current version and the version
/// path (a blocker unless forced), the image pulled (a failure refuses: the upgrade could not
/// work), etcd quorum for control planes and the cluster health check (blockers unless forced).
/// The plan binds the current and target versions.
pub(crate) async fn upgrade_preflight(
    api: &dyn TalosApi,
    opts: &CallOptions,
    node: &str,
    target: &TalosVersion,
    image: &str,
    askable: &[String],
) -> Result<Prepared<NodePreflight>, ToolError> {
    let current = current_version(api, opts).await?;
    let mut blockers = Vec::new();
    let mut preflight = vec![format!("version: {current} → {target}")];
    if let Err(why) = version_path(&current, target) {
        blockers.push(why);
    }
    // Pull first: a bad reference or an unreachable registry fails here, before any change.
    match api
        .image_pull(opts, ContainerNamespace::System, image)
        .await
    {
        Ok(_) => preflight.push(format!("installer image pulled on the node: {image}")),
        Err(e) => {
            return Err(ToolError::Preflight(format!(
                "the installer image {image} could not be pulled on {node} ({e}). Nothing was done; check the reference and the node's registry access"
            )));
        }
    }
    let quorum = super::lifecycle::quorum_preflight(api, opts, askable, false, String::new()).await;
    preflight.extend(quorum.preflight);
    blockers.extend(quorum.blocker);
    match cluster_health(api, node, askable).await {
        Ok(()) => preflight.push("cluster health check passed".into()),
        Err(why) => blockers.push(why),
    }
    Ok(Prepared {
        effect: format!(
            "upgrade Talos on the node from {current} to {target} with {image}; the node reboots and is unavailable until it is back"
        ),
        preflight,
        blocker: (!blockers.is_empty()).then(|| blockers.join("; ")),
        details: None,
        binds: Some(serde_json::json!({
            "from_version": current.to_string(),
            "to_version": target.to_string(),
        })),
        resolved: NodePreflight { current },
    })
}

/// Runs Talos's cluster health check from a control plane (the first etcd member that answers).
/// `Err` names the first failed check, or why the check could not run.
pub(crate) async fn cluster_health(
    api: &dyn TalosApi,
    node: &str,
    askable: &[String],
) -> Result<(), String> {
    let mut ask: Vec<String> = vec![node.to_owned()];
    ask.extend(askable.iter().filter(|n| *n != node).cloned());
    let (members, checker) = super::etcd::first_members(api, &ask)
        .await
        .map_err(|e| format!("the cluster health could not be checked: {}", e))?;
    let control_planes = super::etcd::member_nodes(&members);
    let workers: Vec<String> = ask
        .iter()
        .filter(|n| !control_planes.contains(n))
        .cloned()
        .collect();
    let request = HealthCheckRequest {
        wait_timeout: HEALTH_WAIT,
        control_plane_nodes: control_planes,
        worker_nodes: workers,
        force_endpoint: None,
    };
    let progress = api
        .health_check(&CallOptions::node(checker), &request)
        .await
        .map_err(|e| format!("the cluster health check could not run: {e}"))?;
    match progress
        .iter()
        .find_map(|p| p.error.as_ref().map(|e| (p, e)))
    {
        Some((p, e)) => Err(format!(
            "the cluster health check fails ({}: {e})",
            p.message.split(": ").next().unwrap_or(&p.message)
        )),
        None if progress.is_empty() => Err("the cluster health check reported nothing".into()),
        None => Ok(()),
    }
}

/// Sends the upgrade (LifecycleService.Upgrade where the node has it, MachineService.Upgrade
/// otherwise or when an option needs it) and follows the node: streamed phases, down, back with a
/// new boot id, on the target version, services healthy. Every phase is a step prefixed by the
/// node. `Err`: the upgrade could not be started (the message says whether anything changed).
/// `Ok` with `problem`: it started but did not end on the target version with healthy services.
pub(crate) async fn upgrade_node(
    api: &dyn TalosApi,
    opts: &CallOptions,
    call: &Call,
    spec: &UpgradeSpec,
) -> Result<NodeUpgrade, ToolError> {
    let node = opts.node.clone().unwrap_or_default();
    let prefix = format!("{node}: ");
    let from_version = api.version(opts).await.ok().map(|v| v.tag);
    let boot_id_before = super::follow::boot_id(api, opts).await;
    let target = spec.target.to_string();
    let mut used = spec.first_api();
    if used == UpgradeApi::Lifecycle {
        call.step(format!(
            "{prefix}starting the upgrade to {target} (LifecycleService)"
        ))
        .await;
        match api.lifecycle_upgrade(opts, &spec.image).await {
            Ok(stream) => follow_stream(stream, call, &node).await?,
            Err(e) if e.is_unimplemented() => {
                call.step(format!(
                    "{prefix}the node has no LifecycleService; using MachineService.Upgrade"
                ))
                .await;
                used = UpgradeApi::Machine;
            }
            Err(e) => return Err(not_started(e)),
        }
    }
    if used == UpgradeApi::Machine {
        call.step(format!(
            "{prefix}starting the upgrade to {target} (MachineService){}",
            if spec.stage { ", staged" } else { "" }
        ))
        .await;
        let request = UpgradeRequest {
            image: spec.image.clone(),
            preserve: spec.preserve,
            stage: spec.stage,
            force: false,
            reboot_mode: spec.reboot_mode,
        };
        api.upgrade(opts, &request).await.map_err(not_started)?;
    }
    let mut out = NodeUpgrade {
        node,
        from_version,
        to_version: None,
        api: used.as_str().to_owned(),
        boot_id_before: boot_id_before.clone(),
        boot_id_after: None,
        back: false,
        on_target: false,
        services_healthy: false,
        staged: spec.stage,
        seconds: 0,
        problem: None,
    };
    if spec.stage {
        call.step(format!(
            "{prefix}upgrade to {target} staged; the node's next reboot activates it"
        ))
        .await;
        out.to_version = out.from_version.clone();
        return Ok(out);
    }
    let what = Follow {
        prefix,
        boot_id_before,
        expect_version: Some(target),
        version_before: out.from_version.clone(),
        expect_changed_version: false,
        services_healthy: true,
        timeout: spec.timeout,
    };
    let followed = follow_node(api, opts, call, &what).await;
    out.to_version = followed.version_after;
    out.boot_id_after = followed.boot_id_after;
    out.back = followed.back;
    out.on_target = followed.back && followed.on_version;
    out.services_healthy = followed.back && followed.services_healthy;
    out.seconds = followed.seconds;
    out.problem = followed.problem;
    Ok(out)
}

/// The error of an upgrade or rollback call that failed: the node refused or could not be
/// reached, so nothing started (a timeout leaves it unknown, which its kind says).
fn not_started(e: TalosError) -> ToolError {
    ToolError::Talos(append(e, "it did not start; nothing was changed"))
}

/// Adds a sentence to an API error's message (other errors are kept as they are).
fn append(e: TalosError, sentence: &str) -> TalosError {
    match e {
        TalosError::Api {
            target,
            code,
            message,
        } => TalosError::Api {
            target,
            code,
            message: format!("{message}; {sentence}"),
        },
        TalosError::Connection { target, message } => TalosError::Connection {
            target,
            message: format!("{message}; {sentence}"),
        },
        // A timeout's message is fixed ("no answer within …"); its kind already says the
        // outcome is unknown.
        other => other,
    }
}

/// An installer progress line as the model sees it: secrets an installer could echo (registry
/// credentials in a URL, tokens, keys) redacted.
fn installer_line(line: &str) -> String {
    crate::redact::redact_text(line)
}

/// What a broken progress stream means: after progress, the upgrade is under way (the node going
/// down breaks the stream) and the node is followed (`Ok(step)`); before any, it is unknown
/// whether the upgrade started (`Err`).
fn stream_broke(seen: usize, e: TalosError) -> Result<String, ToolError> {
    if seen > 0 {
        return Ok(format!(
            "the progress stream ended early ({}); following the node",
            e.kind()
        ));
    }
    Err(ToolError::Talos(append(
        e,
        "the upgrade's progress stream broke before any progress; it is unknown whether the upgrade started: check the node's version before retrying",
    )))
}

/// Reads the lifecycle progress stream, a step per line. A non-zero exit code is an error (the
/// installer failed before the reboot: the node keeps its version). A stream that breaks after
/// progress was seen (the node going down for its reboot, or a long silence) is followed like a
/// started upgrade: the follow reports what really happened. One that breaks before any progress
/// leaves it unknown whether the upgrade started.
async fn follow_stream(
    mut stream: talos_client::UpgradeProgressStream,
    call: &Call,
    node: &str,
) -> Result<(), ToolError> {
    let prefix = format!("{node}: ");
    let mut last = String::new();
    let mut seen = 0usize;
    while let Some(item) = stream.next().await {
        match item {
            Ok(UpgradeProgress::Message(m)) => {
                seen += 1;
                last = installer_line(&m);
                call.step(format!("{prefix}installer: {last}")).await;
            }
            Ok(UpgradeProgress::ExitCode(0)) => {
                call.step(format!("{prefix}installer finished; the node reboots"))
                    .await;
                return Ok(());
            }
            Ok(UpgradeProgress::ExitCode(code)) => {
                return Err(ToolError::Talos(TalosError::Api {
                    target: talos_client::Target {
                        endpoint: None,
                        node: Some(node.to_owned()),
                    },
                    code: talos_client::Code::Aborted,
                    message: format!(
                        "the installer failed with exit code {code} ({last}); the node was not rebooted and keeps its version"
                    ),
                }));
            }
            Err(e) => {
                let note = stream_broke(seen, e)?;
                call.step(format!("{prefix}{note}")).await;
                return Ok(());
            }
        }
    }
    // Ended without an exit code: treat as started and follow the node.
    Ok(())
}

// ---- the tools ----------------------------------------------------------------------------

/// Arguments of talos_upgrade.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct UpgradeArgs {
    #[serde(flatten)]
    pub target: NodeTarget,
    /// Installer image with a version tag, e.g. ghcr.io/siderolabs/installer:v1.12.0.
    pub image: String,
    /// Install now, activate at the next reboot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<bool>,
    /// Keep ephemeral data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preserve: Option<bool>,
    /// powercycle: no kexec.
    #[serde(default, deserialize_with = "super::lifecycle::null_is_default")]
    pub reboot_mode: RebootModeArg,
    /// Override version-path, quorum and health refusals (confirmed separately).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
    /// Seconds to follow the node (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_timeout_seconds: Option<u32>,
}

/// Arguments of talos_rollback.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct RollbackArgs {
    #[serde(flatten)]
    pub target: NodeTarget,
    /// Override the quorum and health refusals (confirmed separately).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
    /// Seconds to follow the node (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_timeout_seconds: Option<u32>,
}

/// What a rollback did.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct RollbackOut {
    /// Version before.
    pub from_version: String,
    /// Version after (when the node answered).
    pub to_version: Option<String>,
    pub boot_id_before: Option<String>,
    pub boot_id_after: Option<String>,
    /// The node answered again after going down.
    pub back: bool,
    /// It runs a version other than before.
    pub version_changed: bool,
    /// All its services are running and healthy.
    pub services_healthy: bool,
    pub seconds: u64,
    /// Why the rollback did not end on another version with healthy services.
    pub problem: Option<String>,
}

/// Default seconds to follow an upgrading node.
const DEFAULT_WAIT: u32 = 600;

impl TalosMcp {
    /// The follow budget of a call: asked (default 600 s), at most the server's maximum.
    fn follow_budget(&self, asked: Option<u32>) -> Duration {
        Duration::from_secs(u64::from(asked.unwrap_or(DEFAULT_WAIT).max(1)))
            .min(self.settings.max_wait)
    }

    /// Upgrade Talos on one node.
    pub(crate) async fn talos_upgrade(
        &self,
        call: &Call,
        args: UpgradeArgs,
    ) -> Result<Reply<ActionOut<NodeUpgrade>>, ToolError> {
        let target_version = installer_target(&args.image)?;
        let askable = self.askable(args.target.context.as_deref());
        let entry = self.clusters.entry(args.target.context.as_deref()).ok();
        let spec = UpgradeSpec {
            image: args.image.clone(),
            target: target_version,
            stage: args.stage.unwrap_or(false),
            preserve: args.preserve.unwrap_or(false),
            reboot_mode: RebootMode::from(args.reboot_mode),
            timeout: self.follow_budget(args.wait_timeout_seconds),
            known_api: None,
        };
        let target = args.target.clone();
        let prepare_entry = entry.clone();
        let prepare_spec = spec.clone();
        self.action(
            call,
            Change {
                args: &args,
                target: &target,
                force: args.force.unwrap_or(false),
            },
            |api, opts| async move {
                let node = opts.node.clone().unwrap_or_default();
                let mut spec = prepare_spec;
                spec.known_api = prepare_entry.as_ref().and_then(|e| e.upgrade_api(&node));
                let mut p = upgrade_preflight(
                    api.as_ref(),
                    &opts,
                    &node,
                    &spec.target,
                    &spec.image,
                    &askable,
                )
                .await?;
                if spec.stage {
                    p.effect = format!(
                        "stage the upgrade of Talos on the node from {} to {} with {}; nothing reboots now, the node's next reboot activates it",
                        p.resolved.current, spec.target, spec.image
                    );
                }
                p.preflight.push(format!("API: {}", spec.api_words()));
                Ok(Prepared {
                    effect: p.effect,
                    preflight: p.preflight,
                    blocker: p.blocker,
                    details: p.details,
                    binds: p.binds,
                    resolved: spec,
                })
            },
            |api, opts, spec| async move {
                let out = upgrade_node(api.as_ref(), &opts, call, &spec).await?;
                if let (Some(entry), Some(node)) = (&entry, opts.node.as_deref()) {
                    let used = if out.api == UpgradeApi::Lifecycle.as_str() {
                        UpgradeApi::Lifecycle
                    } else {
                        UpgradeApi::Machine
                    };
                    // Only a fallback proves the node lacks the lifecycle service; a classic call
                    // chosen for its options proves nothing.
                    if used == UpgradeApi::Lifecycle || spec.first_api() == UpgradeApi::Lifecycle {
                        entry.remember_upgrade_api(node, used);
                    }
                }
                Ok(out)
            },
            |o| match (&o.problem, o.staged) {
                (_, true) => format!(
                    "upgrade to {} staged ({} API); the next reboot activates it",
                    o.to_version.as_deref().unwrap_or("?"),
                    o.api
                ),
                (None, false) => format!(
                    "upgraded {} → {} in {} s ({} API); services healthy",
                    o.from_version.as_deref().unwrap_or("?"),
                    o.to_version.as_deref().unwrap_or("?"),
                    o.seconds,
                    o.api
                ),
                (Some(problem), false) => format!("upgrade started but failed: {problem}"),
            },
        )
        .await
    }

    /// Roll Talos back on one node.
    pub(crate) async fn talos_rollback(
        &self,
        call: &Call,
        args: RollbackArgs,
    ) -> Result<Reply<ActionOut<RollbackOut>>, ToolError> {
        let askable = self.askable(args.target.context.as_deref());
        let timeout = self.follow_budget(args.wait_timeout_seconds);
        let target = args.target.clone();
        self.action(
            call,
            Change {
                args: &args,
                target: &target,
                force: args.force.unwrap_or(false),
            },
            |api, opts| async move {
                let node = opts.node.clone().unwrap_or_default();
                let current = api.version(&opts).await?.tag;
                let quorum = super::lifecycle::quorum_preflight(
                    api.as_ref(),
                    &opts,
                    &askable,
                    false,
                    String::new(),
                )
                .await;
                let mut blockers: Vec<String> = quorum.blocker.into_iter().collect();
                let mut preflight = quorum.preflight;
                match cluster_health(api.as_ref(), &node, &askable).await {
                    Ok(()) => preflight.push("cluster health check passed".into()),
                    Err(why) => blockers.push(why),
                }
                Ok(Prepared {
                    effect: format!(
                        "roll Talos on the node back from {current} to the installation before its last upgrade; the node reboots and is unavailable until it is back"
                    ),
                    preflight,
                    blocker: (!blockers.is_empty()).then(|| blockers.join("; ")),
                    details: None,
                    binds: Some(serde_json::json!({ "from_version": current })),
                    resolved: current,
                })
            },
            |api, opts, current| async move {
                let node = opts.node.clone().unwrap_or_default();
                let before = super::follow::boot_id(api.as_ref(), &opts).await;
                call.step(format!("{node}: rolling back from {current}")).await;
                api.rollback(&opts).await.map_err(not_started)?;
                let what = Follow {
                    prefix: format!("{node}: "),
                    boot_id_before: before.clone(),
                    expect_version: None,
                    version_before: Some(current.clone()),
                    expect_changed_version: true,
                    services_healthy: true,
                    timeout,
                };
                let f = follow_node(api.as_ref(), &opts, call, &what).await;
                Ok(RollbackOut {
                    from_version: current,
                    to_version: f.version_after,
                    boot_id_before: before,
                    boot_id_after: f.boot_id_after,
                    back: f.back,
                    version_changed: f.back && f.on_version,
                    services_healthy: f.back && f.services_healthy,
                    seconds: f.seconds,
                    problem: f.problem,
                })
            },
            |o| match &o.problem {
                None => format!(
                    "rolled back {} → {} in {} s; services healthy",
                    o.from_version,
                    o.to_version.as_deref().unwrap_or("?"),
                    o.seconds
                ),
                Some(problem) => format!("rollback started but failed: {problem}"),
            },
        )
        .await
    }
}

/// The tools of this module, in listing order.
pub(crate) fn tools() -> Vec<ToolDef> {
    vec![
        tool(
            Toolset::Lifecycle,
            "talos_upgrade",
            "Upgrade Talos on node",
            "Upgrades Talos on one node after confirmation and follows it until it is back on the new version; refuses downgrades, skipped minors and quorum or health risks (unless force).",
        )
        .tier(Tier::Destructive)
        .run(TalosMcp::talos_upgrade)
        .long_running()
        .build(),
        tool(
            Toolset::Lifecycle,
            "talos_rollback",
            "Roll back Talos on node",
            "Boots one node back into its previous Talos after confirmation and follows it until it is back.",
        )
        .tier(Tier::Destructive)
        .run(TalosMcp::talos_rollback)
        .long_running()
        .build(),
    ]
}

super::targeted_by_field!(UpgradeArgs, RollbackArgs);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn v(s: &str) -> TalosVersion {
        TalosVersion::parse(s).unwrap()
    }

    #[test]
    fn versions_parse_print_and_order_like_releases() {
        assert_eq!(v("v1.12.0").to_string(), "v1.12.0");
        assert_eq!(v("v1.13.0-beta.0").to_string(), "v1.13.0-beta.0");
        for bad in [
            "1.12.0",
            "v1.12",
            "v1.12.0.1",
            "v1..0",
            "v1.12.0-",
            "v1.12.0-a..b",
            "vx.1.2",
            "v1.12.0+meta",
            "",
            "v1.12.0-beta 1",
        ] {
            assert_eq!(TalosVersion::parse(bad), None, "{bad}");
        }
        let mut list = [
            v("v1.12.0"),
            v("v1.12.0-beta.0"),
            v("v1.11.5"),
            v("v1.12.0-alpha.10"),
            v("v1.12.0-alpha.2"),
            v("v1.12.1"),
        ];
        list.sort();
        let names: Vec<String> = list.iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            [
                "v1.11.5",
                "v1.12.0-alpha.2",
                "v1.12.0-alpha.10",
                "v1.12.0-beta.0",
                "v1.12.0",
                "v1.12.1"
            ]
        );
    }

    #[test]
    fn the_version_path_refuses_downgrades_repeats_and_skipped_minors() {
        assert_eq!(version_path(&v("v1.11.5"), &v("v1.12.0")), Ok(()));
        assert_eq!(version_path(&v("v1.11.5"), &v("v1.11.6")), Ok(()));
        assert_eq!(version_path(&v("v1.12.0-beta.0"), &v("v1.12.0")), Ok(()));
        let down = version_path(&v("v1.12.0"), &v("v1.11.5")).unwrap_err();
        assert!(down.contains("downgrade"), "{down}");
        let same = version_path(&v("v1.12.0"), &v("v1.12.0")).unwrap_err();
        assert!(same.contains("already"), "{same}");
        let skip = version_path(&v("v1.10.3"), &v("v1.12.0")).unwrap_err();
        assert!(skip.contains("skips minor release v1.11"), "{skip}");
        let major = version_path(&v("v1.12.0"), &v("v2.0.0")).unwrap_err();
        assert!(major.contains("major"), "{major}");
    }

    #[test]
    fn installer_references_need_a_version_tag_and_a_sane_shape() {
        for (ok, version) in [
            ("ghcr.io/siderolabs/installer:v1.12.0", "v1.12.0"),
            (
                "factory.talos.dev/installer/376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba:v1.12.1",
                "v1.12.1",
            ),
            (
                "registry.local:5000/talos/installer:v1.13.0-beta.0",
                "v1.13.0-beta.0",
            ),
            ("localhost/installer:v1.12.0", "v1.12.0"),
            (
                "ghcr.io/siderolabs/installer:v1.12.0@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "v1.12.0",
            ),
        ] {
            assert_eq!(installer_target(ok).unwrap().to_string(), version, "{ok}");
        }
        for bad in [
            "",
            "ghcr.io/siderolabs/installer",
            "ghcr.io/siderolabs/installer:latest",
            "ghcr.io/siderolabs/installer:1.12.0",
            "ghcr.io/siderolabs/installer:v1.12.0 --force",
            "ghcr.io/Siderolabs/installer:v1.12.0",
            "ghcr.io//installer:v1.12.0",
            "ghcr.io/siderolabs/installer:v1.12.0@sha256:abc",
            "-ghcr.io/installer:v1.12.0",
            "ghcr.io:99999x/installer:v1.12.0",
            "ghcr.io/siderolabs/installer:v1.12.0\n",
            &format!("ghcr.io/{}:v1.12.0", "a".repeat(600)),
        ] {
            let err = installer_target(bad).unwrap_err();
            assert!(
                err.to_string().starts_with("InvalidArgument: `image`"),
                "{bad}: {err}"
            );
        }
    }

    /// A stream that breaks once progress was seen is followed, whatever broke it (the node
    /// going down, or silence past the idle timeout); before any progress it is an error.
    #[test]
    fn a_stream_that_breaks_after_progress_is_followed() {
        let target = talos_client::Target::default();
        let timeout = || TalosError::Timeout {
            target: target.clone(),
            after: Duration::from_secs(30),
        };
        let gone = || TalosError::Connection {
            target: target.clone(),
            message: "error reading from server: EOF".into(),
        };
        for e in [timeout(), gone()] {
            let step = stream_broke(3, e).unwrap();
            assert!(step.contains("following the node"), "{step}");
        }
        let err = stream_broke(0, gone()).unwrap_err().to_string();
        assert!(err.contains("unknown whether the upgrade started"), "{err}");
        assert!(stream_broke(0, timeout()).is_err());
    }

    #[test]
    fn installer_lines_are_redacted() {
        let line = installer_line(
            "pulling https://robot:hunter2-registry-pass@registry.example/talos/installer:v1.12.0",
        );
        assert!(!line.contains("hunter2-registry-pass"), "{line}");
        assert!(
            line.contains("registry.example/talos/installer:v1.12.0"),
            "{line}"
        );
        assert_eq!(installer_line("installing"), "installing");
    }

    #[test]
    fn options_that_need_the_classic_api_choose_it() {
        let spec = UpgradeSpec {
            image: "ghcr.io/siderolabs/installer:v1.12.0".into(),
            target: v("v1.12.0"),
            stage: false,
            preserve: false,
            reboot_mode: RebootMode::Default,
            timeout: Duration::from_secs(60),
            known_api: None,
        };
        assert_eq!(spec.first_api(), UpgradeApi::Lifecycle);
        for changed in [
            UpgradeSpec {
                stage: true,
                ..spec.clone()
            },
            UpgradeSpec {
                preserve: true,
                ..spec.clone()
            },
            UpgradeSpec {
                reboot_mode: RebootMode::Powercycle,
                ..spec.clone()
            },
            UpgradeSpec {
                known_api: Some(UpgradeApi::Machine),
                ..spec.clone()
            },
        ] {
            assert_eq!(changed.first_api(), UpgradeApi::Machine, "{changed:?}");
        }
    }
}
