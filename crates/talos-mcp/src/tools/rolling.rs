//! `talos_cluster_upgrade`: a rolling Talos upgrade of a cluster. The plan (every node's role,
//! current and target version, the order: control planes one at a time, then workers in
//! batches) is confirmed once as a whole, bound to its digest; the run upgrades step by step
//! with a health gate (etcd with full membership, the upgraded nodes' services, Talos's cluster
//! health check) between steps, and stops at the first failure. Nodes already on the target
//! version are skipped, so a stopped run is resumed by running the same plan again.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use talos_client::{CallOptions, EtcdMember, HealthCheckRequest, RebootMode, TalosApi};

use super::actions::ActionOut;
use super::upgrade::{NodeUpgrade, TalosVersion, UpgradeApi, UpgradeSpec};
use crate::call::{Call, Confirmation, Reply};
use crate::clusters::ContextEntry;
use crate::confirm::{Gate, Plan, PlanSteps};
use crate::error::ToolError;
use crate::registry::{Effect, ToolDef, Toolset, tool};
use crate::safety::Tier;
use crate::server::{TalosMcp, TargetArgs};

/// Most workers upgraded at once.
const MAX_WORKER_BATCH: u32 = 5;
/// Seconds a node may take to come back healthy, and a health gate to pass, by default.
const DEFAULT_HEALTH_TIMEOUT: u32 = 600;
/// How long the cluster health check before the plan may take.
const PLAN_HEALTH_WAIT: Duration = Duration::from_secs(10);
/// Pause between two attempts of a health gate.
const GATE_RETRY: Duration = Duration::from_secs(1);

/// Arguments of talos_cluster_upgrade.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct ClusterUpgradeArgs {
    /// The context, and a subset of its nodes (default: all).
    #[serde(flatten)]
    pub target: TargetArgs,
    /// Installer image; its tag is the target version.
    pub image: String,
    /// Workers upgraded at once (1–5, default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_batch_size: Option<u32>,
    /// Allow a downgrade or a skipped minor release (confirmed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
    /// Seconds for each node to be back healthy, and for each health gate (10–3600, default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_timeout_seconds: Option<u32>,
    /// From the plan a first call returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmation_token: Option<String>,
}

super::targeted_by_field!(ClusterUpgradeArgs);

/// A node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    ControlPlane,
    Worker,
}

/// What the plan does with a node (`skip`: already on the target version).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeAction {
    Upgrade,
    Skip,
}

/// One node of the plan (serialised only into the digest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedNode {
    pub node: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    pub role: Role,
    pub from_version: String,
    pub to_version: String,
    pub action: NodeAction,
    /// Step number (a worker batch shares one); absent when skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
}

impl PlannedNode {
    /// The node as people read it: hostname and address.
    fn who(&self) -> String {
        match &self.hostname {
            Some(h) => format!("{h} ({})", self.node),
            None => self.node.clone(),
        }
    }
}

/// Where and why a run stopped.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Stopped {
    /// The node (or nodes of a batch) where it stopped.
    pub nodes: Vec<String>,
    pub step: u32,
    /// `upgrade` or `health_gate`.
    pub phase: String,
    pub reason: String,
}

/// What a rolling upgrade did.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RollingOut {
    /// `completed`, or `stopped` (see `stopped`).
    pub result: String,
    pub target_version: String,
    /// The confirmed plan's digest.
    pub plan_digest: String,
    /// The nodes upgraded, in order (with a stop: as far as they got).
    pub upgraded: Vec<NodeUpgrade>,
    /// Already on the target version.
    pub skipped: Vec<String>,
    /// Not touched because the run stopped first.
    pub untouched: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<Stopped>,
}

/// A hostname a node reported, kept only when it is a plain DNS-like name (letters, digits, `.`,
/// `-`, `_`; at most 253 characters): it is shown in the plan the human confirms, so a node must
/// not be able to write other lines into it.
fn plain(hostname: &str) -> Option<String> {
    let h = hostname.trim();
    ((1..=253).contains(&h.len())
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    .then(|| h.to_owned())
}

/// A reported hostname for a message: itself when plain, else a placeholder.
fn label(hostname: &str) -> String {
    plain(hostname).unwrap_or_else(|| "(unnamed)".into())
}

/// What is known of one node before planning.
#[derive(Debug, Clone)]
struct NodeFacts {
    node: String,
    hostname: Option<String>,
    role: Role,
    version: TalosVersion,
}

/// The plan's order: control planes one per step, then workers in batches of `batch`, in the
/// order given; nodes already on `target` are skipped and get no step.
fn order(facts: &[NodeFacts], target: &TalosVersion, batch: usize) -> Vec<PlannedNode> {
    let planned = |f: &NodeFacts, step: Option<u32>| PlannedNode {
        node: f.node.clone(),
        hostname: f.hostname.clone(),
        role: f.role,
        from_version: f.version.to_string(),
        to_version: target.to_string(),
        action: if step.is_some() {
            NodeAction::Upgrade
        } else {
            NodeAction::Skip
        },
        step,
    };
    let mut out = Vec::with_capacity(facts.len());
    let mut step = 0u32;
    for f in facts.iter().filter(|f| f.role == Role::ControlPlane) {
        if f.version == *target {
            out.push(planned(f, None));
        } else {
            step += 1;
            out.push(planned(f, Some(step)));
        }
    }
    let mut in_batch = batch;
    for f in facts.iter().filter(|f| f.role == Role::Worker) {
        if f.version == *target {
            out.push(planned(f, None));
            continue;
        }
        if in_batch >= batch {
            step += 1;
            in_batch = 0;
        }
        in_batch += 1;
        out.push(planned(f, Some(step)));
    }
    out
}

/// The plan's lines and digest. The digest covers the context, the image, the batch size,
/// force, and every node's address, hostname, role, versions, action and step, in order.
fn plan_steps(
    context: &str,
    image: &str,
    batch: usize,
    force: bool,
    plan: &[PlannedNode],
) -> PlanSteps {
    let lines = plan
        .iter()
        .map(|p| {
            let role = match p.role {
                Role::ControlPlane => "control plane",
                Role::Worker => "worker",
            };
            match p.step {
                Some(step) => format!(
                    "step {step}: {} ({role}) {} -> {}",
                    p.who(),
                    p.from_version,
                    p.to_version
                ),
                None => format!("skip: {} ({role}) already on {}", p.who(), p.from_version),
            }
        })
        .collect();
    let canonical = serde_json::json!([context, image, batch, force, plan]).to_string();
    PlanSteps::new(lines, &canonical)
}

/// The cluster around the plan: its control planes and workers (all of them, not only the
/// plan's), the etcd members, and the node that answered for them.
#[derive(Debug, Clone)]
struct Cluster {
    /// Control planes: address and hostname.
    control_planes: BTreeMap<String, String>,
    workers: Vec<String>,
    /// The node that answered the etcd membership question.
    checker: String,
}

/// Roles from Talos's discovery (`Members.cluster.talos.dev`: machine type, addresses,
/// hostname), read from `node`; empty when the node does not serve it.
async fn discovered_roles(api: &dyn TalosApi, node: &str) -> Vec<(Vec<String>, String, Role)> {
    let Ok(members) = api
        .resource_list(
            &CallOptions::node(node.to_owned()),
            "cluster",
            "Members.cluster.talos.dev",
            1000,
        )
        .await
    else {
        return Vec::new();
    };
    members
        .iter()
        .filter_map(|m| {
            let spec: serde_yaml_ng::Value = serde_yaml_ng::from_str(&m.spec_yaml).ok()?;
            let role = match spec.get("machineType")?.as_str()? {
                "controlplane" | "init" => Role::ControlPlane,
                _ => Role::Worker,
            };
            let hostname = spec.get("hostname")?.as_str()?.to_owned();
            let addresses = spec
                .get("addresses")
                .and_then(|a| a.as_sequence())
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            Some((addresses, hostname, role))
        })
        .collect()
}

/// Reads what the plan needs: every planned node's hostname, role and version, and the
/// cluster's control planes and workers. A node that does not answer its version, or a cluster
/// whose etcd membership cannot be read, cannot be planned.
async fn survey(
    api: &dyn TalosApi,
    entry: &ContextEntry,
    nodes: &[String],
) -> Result<(Vec<NodeFacts>, Cluster), ToolError> {
    let mut ask: Vec<String> = nodes.to_vec();
    ask.extend(
        entry
            .default_nodes
            .iter()
            .filter(|n| !nodes.contains(n))
            .cloned(),
    );
    let (members, checker) = super::etcd::first_members(api, &ask).await.map_err(|e| {
        ToolError::Preflight(format!(
            "the etcd membership could not be read, so the control planes are unknown ({e}). Nothing was done"
        ))
    })?;
    let discovered = discovered_roles(api, &checker).await;
    // Control planes: the etcd members, and the nodes discovery says are control planes.
    let mut cps: BTreeMap<String, String> = members
        .iter()
        .zip(super::etcd::member_nodes(&members))
        .map(|(m, a)| (a, plain(&m.hostname).unwrap_or_default()))
        .collect();
    for (addresses, hostname, role) in &discovered {
        let Some(hostname) = plain(hostname) else {
            continue;
        };
        if *role == Role::ControlPlane
            && !cps.values().any(|h| *h == hostname)
            && let Some(a) = addresses.first()
        {
            cps.insert(a.clone(), hostname);
        }
    }
    let mut facts = Vec::with_capacity(nodes.len());
    for node in nodes {
        let opts = CallOptions::node(node.clone());
        let hostname = match entry.hostname(node) {
            Some(h) => Some(h),
            None => api.hostname(&opts).await.ok(),
        }
        .and_then(|h| plain(&h));
        let tag = api.version(&opts).await.map_err(|e| {
            ToolError::Preflight(format!(
                "{node} did not answer its version ({}), so it cannot be planned. Nothing was done; bring it back or leave it out with `nodes`",
                e.kind()
            ))
        })?;
        let version = TalosVersion::parse(&tag.tag).ok_or_else(|| {
            ToolError::Preflight(format!(
                "{node} reports version {}, which is not a Talos version. Nothing was done",
                crate::error::echo(&tag.tag)
            ))
        })?;
        // A node is a control plane by address, or by hostname (an etcd member's peer URL
        // may name another of its addresses).
        let by_name = hostname
            .as_ref()
            .and_then(|h| cps.iter().find(|(_, ch)| *ch == h).map(|(a, _)| a.clone()));
        let is_cp = cps.contains_key(node) || by_name.is_some();
        if let Some(other) = by_name.filter(|a| a != node) {
            let h = cps.remove(&other).unwrap_or_default();
            cps.insert(node.clone(), h);
        }
        facts.push(NodeFacts {
            node: node.clone(),
            hostname,
            role: if is_cp {
                Role::ControlPlane
            } else {
                Role::Worker
            },
            version,
        });
    }
    let workers = entry
        .default_nodes
        .iter()
        .chain(nodes)
        .filter(|n| !cps.contains_key(*n))
        .fold(Vec::new(), |mut acc: Vec<String>, n| {
            if !acc.contains(n) {
                acc.push(n.clone());
            }
            acc
        });
    Ok((
        facts,
        Cluster {
            control_planes: cps,
            workers,
            checker,
        },
    ))
}

/// What is wrong with etcd's membership: a control plane that is not a member, a learner, a
/// member that does not answer its status, no leader, members disagreeing on the leader.
async fn etcd_problems(api: &dyn TalosApi, cluster: &Cluster) -> Vec<String> {
    let mut ask = vec![cluster.checker.clone()];
    ask.extend(cluster.control_planes.keys().cloned());
    let members = match super::etcd::first_members(api, &ask).await {
        Ok((members, _)) => members,
        Err(e) => return vec![format!("etcd membership could not be read: {e}")],
    };
    let mut problems = membership_problems(&members, cluster);
    let mut leaders = std::collections::BTreeSet::new();
    for (m, addr) in members.iter().zip(super::etcd::member_nodes(&members)) {
        match api.etcd_status(&CallOptions::node(addr.clone())).await {
            Ok(s) => {
                leaders.insert(s.leader);
            }
            Err(e) => problems.push(format!(
                "etcd member {} ({addr}) does not answer: {}",
                label(&m.hostname),
                e.kind()
            )),
        }
    }
    if leaders.contains(&0) {
        problems.push("etcd has no leader".into());
    } else if leaders.len() > 1 {
        problems.push("etcd members disagree on the leader".into());
    }
    problems
}

/// The membership part of [`etcd_problems`]: every control plane a voting member.
fn membership_problems(members: &[EtcdMember], cluster: &Cluster) -> Vec<String> {
    let addresses = super::etcd::member_nodes(members);
    let mut problems = Vec::new();
    for m in members.iter().filter(|m| m.is_learner) {
        problems.push(format!(
            "etcd member {} is a learner still catching up",
            label(&m.hostname)
        ));
    }
    for (cp, hostname) in &cluster.control_planes {
        let member = addresses.iter().any(|a| a == cp)
            || (!hostname.is_empty() && members.iter().any(|m| m.hostname == *hostname));
        if !member {
            problems.push(format!(
                "control plane {} ({cp}) is not an etcd member",
                label(hostname)
            ));
        }
    }
    problems
}

/// What is wrong with a node's services: one not running, or failing its health check.
async fn service_problems(api: &dyn TalosApi, node: &str) -> Vec<String> {
    match api.services(&CallOptions::node(node.to_owned())).await {
        Err(e) => vec![format!("{node}: services could not be read: {}", e.kind())],
        Ok(services) => services
            .iter()
            .filter_map(|s| {
                if !matches!(s.state.as_str(), "Running" | "Finished") {
                    Some(format!("{node}: service {} is {}", s.id, s.state))
                } else if !s.health.unknown && !s.health.healthy {
                    Some(format!(
                        "{node}: service {} is unhealthy ({})",
                        s.id,
                        crate::error::clip(&s.health.last_message, 200)
                    ))
                } else {
                    None
                }
            })
            .collect(),
    }
}

/// Talos's cluster health check, run by the checker node: the failed checks.
async fn health_problems(api: &dyn TalosApi, cluster: &Cluster, wait: Duration) -> Vec<String> {
    let request = HealthCheckRequest {
        wait_timeout: wait,
        control_plane_nodes: cluster.control_planes.keys().cloned().collect(),
        worker_nodes: cluster.workers.clone(),
        force_endpoint: None,
    };
    // Any control plane that answers runs it (the checker may be the node just upgraded).
    let mut last = None;
    for node in std::iter::once(&cluster.checker).chain(cluster.control_planes.keys()) {
        match api
            .health_check(&CallOptions::node(node.clone()), &request)
            .await
        {
            Ok(progress) => {
                let failed: Vec<String> = progress
                    .iter()
                    .filter_map(|p| {
                        p.error
                            .as_ref()
                            .map(|e| format!("health check `{}` failed: {e}", p.message))
                    })
                    .collect();
                return if progress.is_empty() {
                    vec!["the cluster health check reported nothing".into()]
                } else {
                    failed
                };
            }
            Err(e) => last = Some(e),
        }
    }
    vec![format!(
        "the cluster health check could not be run: {}",
        last.map_or_else(|| "no control plane to run it".into(), |e| e.to_string())
    )]
}

/// One pass of the health gate: etcd, the services of `upgraded`, the cluster health check.
async fn gate_once(
    api: &dyn TalosApi,
    cluster: &Cluster,
    upgraded: &[String],
    wait: Duration,
) -> Vec<String> {
    let mut problems = etcd_problems(api, cluster).await;
    for node in upgraded {
        problems.extend(service_problems(api, node).await);
    }
    if problems.is_empty() {
        problems = health_problems(api, cluster, wait).await;
    }
    problems
}

/// The health gate: passes once a pass finds nothing wrong; fails with the last pass's
/// problems when `timeout` runs out.
async fn health_gate(
    api: &dyn TalosApi,
    cluster: &Cluster,
    upgraded: &[String],
    timeout: Duration,
) -> Result<(), Vec<String>> {
    let started = Instant::now();
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        let problems = gate_once(api, cluster, upgraded, left.max(Duration::from_secs(1))).await;
        if problems.is_empty() {
            return Ok(());
        }
        if started.elapsed() + GATE_RETRY >= timeout {
            return Err(problems);
        }
        tokio::time::sleep(GATE_RETRY).await;
    }
}

impl TalosMcp {
    /// The rolling upgrade.
    pub(crate) async fn talos_cluster_upgrade(
        &self,
        call: &Call,
        args: ClusterUpgradeArgs,
    ) -> Result<Reply<ActionOut<RollingOut>>, ToolError> {
        let target = super::upgrade::installer_target(&args.image)?;
        let image = args.image.trim().to_owned();
        let batch = super::bounded(
            "worker_batch_size",
            args.worker_batch_size.unwrap_or(1),
            1,
            MAX_WORKER_BATCH,
        )? as usize;
        let gate_timeout = Duration::from_secs(u64::from(super::bounded(
            "health_timeout_seconds",
            args.health_timeout_seconds
                .unwrap_or(DEFAULT_HEALTH_TIMEOUT),
            10,
            3600,
        )?))
        .min(self.settings.max_wait);
        let force = args.force.unwrap_or(false);
        let targets = self
            .clusters
            .targets(args.target.context.as_deref(), args.target.nodes.as_deref())
            .await?;
        // One change at a time per cluster, from the plan to the end of the run.
        let change_lock = self
            .changes
            .lock(
                &targets.entry.name,
                call.ask.caller.as_deref(),
                &format!("{} on {} nodes", call.tool, targets.nodes.len()),
            )
            .await?;
        self.learn_hostnames(&targets).await;
        let entry = targets.entry.clone();
        let api = entry.api.clone();
        let context = entry.name.clone();

        // The plan: changes nothing.
        let (facts, cluster) = survey(api.as_ref(), &entry, &targets.nodes).await?;
        let plan = order(&facts, &target, batch);
        let steps = plan_steps(&context, &image, batch, force, &plan);
        if !plan.iter().any(|p| p.action == NodeAction::Upgrade) {
            // Nothing to upgrade: nothing to confirm either.
            call.confirmed(Confirmation::NotRequiredReads);
            let out = RollingOut {
                result: "completed".into(),
                target_version: target.to_string(),
                plan_digest: steps.digest.clone(),
                upgraded: Vec::new(),
                skipped: plan.iter().map(|p| p.node.clone()).collect(),
                untouched: Vec::new(),
                stopped: None,
            };
            let text = format!(
                "every planned node is already on {target}: nothing to do\n{}",
                steps.lines.join("\n")
            );
            return Ok(Reply::small(
                &ActionOut {
                    status: "done".into(),
                    confirmation: Confirmation::NotRequiredReads.as_str().into(),
                    context,
                    node: plan
                        .iter()
                        .map(|p| p.node.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    hostname: None,
                    outcome: Some(out),
                    plan: None,
                    confirmation_token: None,
                    expires_in_seconds: None,
                },
                text,
            ));
        }
        let mut preflight = Vec::new();
        let mut blockers = Vec::new();
        let etcd = etcd_problems(api.as_ref(), &cluster).await;
        if etcd.is_empty() {
            preflight.push(format!(
                "etcd: every control plane ({}) is a member and answers",
                cluster.control_planes.len()
            ));
        }
        blockers.extend(etcd);
        let health = health_problems(api.as_ref(), &cluster, PLAN_HEALTH_WAIT).await;
        if health.is_empty() {
            preflight.push("the cluster health check passes".into());
        }
        blockers.extend(health);
        let askable = self.askable(args.target.context.as_deref());
        for p in plan.iter().filter(|p| p.action == NodeAction::Upgrade) {
            // The node's version path, the installer pulled on it (a failed pull refuses the
            // plan), its etcd quorum and the cluster health as it sees it.
            let opts = CallOptions::node(p.node.clone());
            let node_pre = super::upgrade::upgrade_preflight(
                api.as_ref(),
                &opts,
                &p.node,
                &target,
                &image,
                &askable,
            )
            .await?;
            preflight.extend(
                node_pre
                    .preflight
                    .iter()
                    .map(|n| format!("{}: {n}", p.who())),
            );
            // Forcing lets the version path through; the cluster-wide etcd and health checks
            // above refuse whatever `force` says.
            match node_pre.blocker {
                Some(b) if force => preflight.push(format!("{}: FORCED despite: {b}", p.who())),
                Some(b) => blockers.push(format!(
                    "{}: {b} (force=true overrides the version path)",
                    p.who()
                )),
                None => {}
            }
        }
        if !blockers.is_empty() {
            return Err(ToolError::Preflight(format!(
                "{}. Nothing was done; fix the cluster first, then plan again",
                blockers.join("; ")
            )));
        }
        let upgrading = plan.iter().filter(|p| p.action == NodeAction::Upgrade);
        let cps = upgrading
            .clone()
            .filter(|p| p.role == Role::ControlPlane)
            .count();
        let workers = upgrading.count() - cps;
        let skipped: Vec<String> = plan
            .iter()
            .filter(|p| p.action == NodeAction::Skip)
            .map(PlannedNode::who)
            .collect();
        let effect = format!(
            "upgrade {cps} control plane(s) one at a time, then {workers} worker(s) in batches of {batch}, to Talos {target} ({image}); each node reboots; a health gate (etcd, services, cluster health; {} s) must pass after each step; the first failure stops the run{}",
            gate_timeout.as_secs(),
            if skipped.is_empty() {
                String::new()
            } else {
                format!("; {} already on {target}: skipped", skipped.len())
            }
        );
        let node_list = plan
            .iter()
            .map(|p| p.node.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let confirm_plan = Plan {
            tool: call.tool.to_owned(),
            tier: call.tier,
            context: context.clone(),
            node: node_list.clone(),
            hostname: None,
            effect,
            preflight,
            details: None,
            steps: Some(steps.clone()),
        };
        let token = args.confirmation_token.as_deref();
        // A token (or a round trip's state) issued for another plan — a node's version, a role
        // or the node list has changed since: refused as such. (Both are bound to the digest
        // anyway; this only names the reason.)
        if let Some(presented) = token.or(call.ask.state())
            && self
                .changes
                .planned(presented)
                .is_some_and(|issued| issued != steps.digest)
        {
            if token.is_some() {
                call.confirmed(Confirmation::TokenRefused);
            }
            return Err(plan_changed(&steps));
        }
        match self.confirm(call, &confirm_plan, &args, token).await {
            Gate::Proceed => {}
            Gate::Plan(value, text) => {
                if let Some(t) = value.get("confirmation_token").and_then(|t| t.as_str()) {
                    self.changes.remember_plan(t, &steps.digest);
                }
                return Ok(Reply::plan(value, text));
            }
            Gate::Ask(input) => {
                if let Some(state) = &input.request_state {
                    self.changes.remember_plan(state, &steps.digest);
                }
                return Ok(Reply::input(*input));
            }
            Gate::Refuse(e) => return Err(e),
        }
        // Time may have passed while the human read the plan: it must still be the same.
        let (facts_now, _) = survey(api.as_ref(), &entry, &targets.nodes).await?;
        let steps_now = plan_steps(
            &context,
            &image,
            batch,
            force,
            &order(&facts_now, &target, batch),
        );
        if steps_now.digest != steps.digest {
            return Err(plan_changed(&steps_now));
        }
        let confirmation = call
            .confirmation()
            .map_or("", Confirmation::as_str)
            .to_owned();

        // Fencing: a holder whose lease lapsed meanwhile does not start the run.
        change_lock.check().await?;
        // The run: from here on the call changes the cluster.
        call.commit();
        tracing::info!(tool = call.tool, context = %context, digest = %steps.digest, confirmation = %confirmation, "running a rolling upgrade");
        let spec = UpgradeSpec {
            image: image.clone(),
            target: target.clone(),
            stage: false,
            preserve: false,
            reboot_mode: RebootMode::Default,
            timeout: gate_timeout,
            known_api: None,
        };
        let out = run(
            &entry,
            call,
            &cluster,
            &plan,
            &spec,
            gate_timeout,
            &steps,
            &change_lock,
        )
        .await;
        let text = summary(&out);
        let stopped = out.stopped.is_some();
        let out = ActionOut {
            status: if stopped { "stopped" } else { "done" }.into(),
            confirmation,
            context,
            node: node_list,
            hostname: None,
            outcome: Some(out),
            plan: None,
            confirmation_token: None,
            expires_in_seconds: None,
        };
        Ok(if stopped {
            Reply::stopped(&out, text)
        } else {
            Reply::small(&out, text)
        })
    }
}

/// The refusal of a confirmed call whose plan is no longer the one confirmed.
fn plan_changed(now: &PlanSteps) -> ToolError {
    ToolError::NotConfirmed(format!(
        "the plan changed; review the new plan (digest {}): call again without confirmation_token. Nothing was done",
        now.digest
    ))
}

/// Runs the confirmed plan step by step, stopping at the first failure, or before a step when
/// the change lock was lost (fencing).
#[allow(clippy::too_many_arguments)]
async fn run(
    entry: &ContextEntry,
    call: &Call,
    cluster: &Cluster,
    plan: &[PlannedNode],
    spec: &UpgradeSpec,
    gate_timeout: Duration,
    steps: &PlanSteps,
    lock: &super::actions::ChangeLock,
) -> RollingOut {
    let api = entry.api.as_ref();
    let last_step = plan.iter().filter_map(|p| p.step).max().unwrap_or(0);
    let mut upgraded: Vec<NodeUpgrade> = Vec::new();
    let mut stopped = None;
    let mut reached = 0;
    for step in 1..=last_step {
        reached = step;
        let batch: Vec<&PlannedNode> = plan.iter().filter(|p| p.step == Some(step)).collect();
        if let Err(e) = lock.check().await {
            let reason = e.to_string();
            call.step(format!("step {step}/{last_step}: stopped: {reason}"))
                .await;
            stopped = Some(Stopped {
                nodes: batch.iter().map(|p| p.node.clone()).collect(),
                step,
                phase: "change_lock".into(),
                reason,
            });
            break;
        }
        for p in &batch {
            call.step(format!(
                "{}: step {step}/{last_step}: upgrading {} -> {}",
                p.who(),
                p.from_version,
                p.to_version
            ))
            .await;
        }
        let results = futures_util::future::join_all(batch.iter().map(|p| {
            let opts = CallOptions::node(p.node.clone());
            let spec = UpgradeSpec {
                known_api: entry.upgrade_api(&p.node),
                ..spec.clone()
            };
            async move {
                let out = super::upgrade::upgrade_node(api, &opts, call, &spec).await;
                if let Ok(u) = &out {
                    let used = if u.api == UpgradeApi::Lifecycle.as_str() {
                        UpgradeApi::Lifecycle
                    } else {
                        UpgradeApi::Machine
                    };
                    // As for talos_upgrade: the API a node answered, for its next upgrade.
                    entry.remember_upgrade_api(&p.node, used);
                }
                out
            }
        }))
        .await;
        let mut failed = Vec::new();
        for (p, result) in batch.iter().zip(results) {
            match result {
                Ok(u) => {
                    if let Some(problem) = &u.problem {
                        failed.push((p.node.clone(), format!("{}: {problem}", p.who())));
                    }
                    upgraded.push(u);
                }
                Err(e) => failed.push((
                    p.node.clone(),
                    format!("{}: the upgrade could not be started: {e}", p.who()),
                )),
            }
        }
        if !failed.is_empty() {
            let reason = failed
                .iter()
                .map(|f| f.1.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            call.step(format!("step {step}/{last_step}: stopped: {reason}"))
                .await;
            stopped = Some(Stopped {
                nodes: failed.into_iter().map(|f| f.0).collect(),
                step,
                phase: "upgrade".into(),
                reason,
            });
            break;
        }
        let names: Vec<String> = batch.iter().map(|p| p.who()).collect();
        call.step(format!(
            "{}: step {step}/{last_step}: health gate (etcd, services, cluster health)",
            names.join(", ")
        ))
        .await;
        let nodes: Vec<String> = batch.iter().map(|p| p.node.clone()).collect();
        match health_gate(api, cluster, &nodes, gate_timeout).await {
            Ok(()) => {
                call.step(format!(
                    "{}: step {step}/{last_step}: health gate passed",
                    names.join(", ")
                ))
                .await;
            }
            Err(problems) => {
                let reason = format!(
                    "the health gate did not pass within {} s: {}",
                    gate_timeout.as_secs(),
                    problems.join("; ")
                );
                call.step(format!("step {step}/{last_step}: stopped: {reason}"))
                    .await;
                stopped = Some(Stopped {
                    nodes,
                    step,
                    phase: "health_gate".into(),
                    reason,
                });
                break;
            }
        }
    }
    let untouched = plan
        .iter()
        .filter(|p| p.step.is_some_and(|s| s > reached))
        .map(|p| p.node.clone())
        .collect();
    RollingOut {
        result: if stopped.is_some() {
            "stopped"
        } else {
            "completed"
        }
        .into(),
        target_version: spec.target.to_string(),
        plan_digest: steps.digest.clone(),
        upgraded,
        skipped: plan
            .iter()
            .filter(|p| p.action == NodeAction::Skip)
            .map(|p| p.node.clone())
            .collect(),
        untouched,
        stopped,
    }
}

/// The run in one paragraph.
fn summary(out: &RollingOut) -> String {
    let done: Vec<&str> = out
        .upgraded
        .iter()
        .filter(|u| u.problem.is_none())
        .map(|u| u.node.as_str())
        .collect();
    let mut text = match &out.stopped {
        None => format!(
            "rolling upgrade to {} completed: {} node(s) upgraded",
            out.target_version,
            done.len()
        ),
        Some(s) => format!(
            "rolling upgrade to {} STOPPED at step {} ({}) on {}: {}",
            out.target_version,
            s.step,
            s.phase,
            s.nodes.join(", "),
            s.reason
        ),
    };
    if !done.is_empty() {
        text.push_str(&format!("\nupgraded: {}", done.join(", ")));
    }
    if !out.skipped.is_empty() {
        text.push_str(&format!(
            "\nskipped (already on {}): {}",
            out.target_version,
            out.skipped.join(", ")
        ));
    }
    if !out.untouched.is_empty() {
        text.push_str(&format!(
            "\nuntouched: {}. Fix the cause, then run the same call again: nodes already on {} are skipped",
            out.untouched.join(", "),
            out.target_version
        ));
    }
    text
}

/// The tools of this module, in listing order.
pub(crate) fn tools() -> Vec<ToolDef> {
    vec![
        tool(
            Toolset::Lifecycle,
            "talos_cluster_upgrade",
            "Rolling cluster upgrade",
            "Upgrades the cluster to the image's Talos version: control planes one at a time, then workers in batches, a health gate after each step; the whole plan is confirmed once; stops at the first failure.",
        )
        .tier(Tier::Destructive)
        .effect(Effect::Destroys { idempotent: true })
        .run(TalosMcp::talos_cluster_upgrade)
        .long_running()
        .build(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(list: &[(&str, Role, &str)]) -> Vec<NodeFacts> {
        list.iter()
            .map(|(node, role, version)| NodeFacts {
                node: (*node).to_owned(),
                hostname: Some(format!("host-{node}")),
                role: *role,
                version: TalosVersion::parse(version).unwrap(),
            })
            .collect()
    }

    fn steps(plan: &[PlannedNode]) -> Vec<(&str, Option<u32>)> {
        plan.iter().map(|p| (p.node.as_str(), p.step)).collect()
    }

    /// Control planes first, one per step, whatever the order given; then workers in batches;
    /// nodes on the target are listed without a step.
    #[test]
    fn plans_order_control_planes_then_worker_batches() {
        use Role::{ControlPlane as C, Worker as W};
        let target = TalosVersion::parse("v1.12.0").unwrap();
        let given = facts(&[
            ("w1", W, "v1.11.5"),
            ("c1", C, "v1.11.5"),
            ("w2", W, "v1.12.0"),
            ("c2", C, "v1.12.0"),
            ("w3", W, "v1.11.5"),
            ("c3", C, "v1.11.5"),
            ("w4", W, "v1.11.5"),
        ]);
        let plan = order(&given, &target, 2);
        assert_eq!(
            steps(&plan),
            [
                ("c1", Some(1)),
                ("c2", None),
                ("c3", Some(2)),
                ("w1", Some(3)),
                ("w2", None),
                ("w3", Some(3)),
                ("w4", Some(4)),
            ]
        );
        assert_eq!(plan[1].action, NodeAction::Skip);
        assert_eq!(
            steps(&order(&given, &target, 1))[3..],
            [
                ("w1", Some(3)),
                ("w2", None),
                ("w3", Some(4)),
                ("w4", Some(5))
            ]
        );
        // A downgrade (forced) is still a step: only the exact target version skips.
        let newer = facts(&[("c1", C, "v1.13.0")]);
        assert_eq!(steps(&order(&newer, &target, 1)), [("c1", Some(1))]);
    }

    /// The digest changes with anything the plan fixes, and only with that.
    #[test]
    fn the_digest_covers_nodes_order_roles_and_versions() {
        use Role::{ControlPlane as C, Worker as W};
        let target = TalosVersion::parse("v1.12.0").unwrap();
        let base = facts(&[("c1", C, "v1.11.5"), ("w1", W, "v1.11.5")]);
        let digest = |f: &[NodeFacts], batch: usize, force: bool| {
            plan_steps(
                "ctx",
                "img:v1.12.0",
                batch,
                force,
                &order(f, &target, batch),
            )
            .digest
        };
        let d = digest(&base, 1, false);
        assert_eq!(d, digest(&base, 1, false));
        assert_eq!(d.len(), 64);
        let mut other_version = base.clone();
        other_version[1].version = TalosVersion::parse("v1.11.6").unwrap();
        let mut other_role = base.clone();
        other_role[1].role = C;
        let mut other_host = base.clone();
        other_host[0].hostname = None;
        let fewer = &base[..1];
        for changed in [
            digest(&other_version, 1, false),
            digest(&other_role, 1, false),
            digest(&other_host, 1, false),
            digest(fewer, 1, false),
            digest(&base, 2, false),
            digest(&base, 1, true),
        ] {
            assert_ne!(changed, d);
        }
        let lines = plan_steps("ctx", "img", 1, false, &order(&base, &target, 1)).lines;
        assert_eq!(
            lines,
            [
                "step 1: host-c1 (c1) (control plane) v1.11.5 -> v1.12.0",
                "step 2: host-w1 (w1) (worker) v1.11.5 -> v1.12.0"
            ]
        );
    }

    /// Reported hostnames reach the confirmation form only when plain.
    #[test]
    fn only_plain_hostnames_are_shown() {
        assert_eq!(plain(" talos-cp-1 ").as_deref(), Some("talos-cp-1"));
        assert_eq!(
            plain("node_2.example.com").as_deref(),
            Some("node_2.example.com")
        );
        for bad in [
            "",
            "cp-1\nstep 1: x",
            "a b",
            "cp\u{202e}1",
            &"h".repeat(254),
        ] {
            assert_eq!(plain(bad), None, "{bad:?}");
        }
        assert_eq!(label("x\ny"), "(unnamed)");
    }

    fn member(id: u64, hostname: &str, address: &str, learner: bool) -> EtcdMember {
        EtcdMember {
            id,
            hostname: hostname.into(),
            peer_urls: vec![format!("https://{address}:2380")],
            client_urls: vec![],
            is_learner: learner,
        }
    }

    /// Full membership: every control plane (by address or hostname) a voting member.
    #[test]
    fn membership_needs_every_control_plane_voting() {
        let cluster = Cluster {
            control_planes: [
                ("10.0.0.1".to_owned(), "cp-1".to_owned()),
                ("10.0.0.2".to_owned(), "cp-2".to_owned()),
                ("10.0.0.3".to_owned(), "cp-3".to_owned()),
            ]
            .into(),
            workers: vec![],
            checker: "10.0.0.1".into(),
        };
        let full = [
            member(1, "cp-1", "10.0.0.1", false),
            member(2, "cp-2", "192.168.0.2", false),
            member(3, "cp-3", "10.0.0.3", false),
        ];
        assert!(membership_problems(&full, &cluster).is_empty());
        let problems = membership_problems(&full[..2], &cluster);
        assert_eq!(
            problems,
            ["control plane cp-3 (10.0.0.3) is not an etcd member"]
        );
        let learning = [
            member(1, "cp-1", "10.0.0.1", false),
            member(2, "cp-2", "10.0.0.2", false),
            member(3, "cp-3", "10.0.0.3", true),
        ];
        let problems = membership_problems(&learning, &cluster);
        assert!(problems[0].contains("learner"), "{problems:?}");
    }
}
