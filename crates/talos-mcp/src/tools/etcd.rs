//! etcd: membership and health with a verdict.

use rmcp::handler::server::common::schema_for_output;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::{ErrorData, tool, tool_router};
use schemars::JsonSchema;
use serde::Serialize;
use talos_client::{CallOptions, EtcdAlarmKind, EtcdMember};

use super::bytes;
use crate::error::ToolError;
use crate::output::{Keep, NodeOutcome, PerNode};
use crate::server::{TalosMcp, TargetArgs};

/// An etcd member.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct MemberOut {
    /// Member id (hex, as etcdctl shows it).
    pub id: String,
    pub hostname: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub learner: bool,
}

/// The members as one node sees them.
#[derive(Debug, Serialize, JsonSchema)]
pub struct MembersOut {
    pub context: String,
    /// The node that answered.
    pub queried_node: String,
    pub members: Vec<MemberOut>,
}

/// One member's status.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct MemberStatusOut {
    pub member_id: String,
    pub leader_id: String,
    pub is_leader: bool,
    pub raft_index: u64,
    pub raft_term: u64,
    pub raft_applied_index: u64,
    pub db_size_bytes: u64,
    pub db_in_use_bytes: u64,
    pub learner: bool,
    pub protocol_version: String,
    pub errors: Vec<String>,
    pub alarms: Vec<String>,
}

/// etcd status across members, with a verdict.
#[derive(Debug, Serialize, JsonSchema)]
pub struct EtcdStatusOut {
    /// `healthy`, `degraded`, `quorum_at_risk` (one more failure loses quorum) or `quorum_lost`.
    pub verdict: String,
    /// Why the verdict is not `healthy`.
    pub reasons: Vec<String>,
    /// Voting members in the cluster.
    pub voting_members: usize,
    /// Members needed for quorum.
    pub quorum: usize,
    /// Members that answered.
    pub answered: usize,
    pub members: Vec<MemberOut>,
    pub statuses: PerNode<MemberStatusOut>,
}

pub(crate) fn member_out(m: &EtcdMember) -> MemberOut {
    MemberOut {
        id: format!("{:x}", m.id),
        hostname: m.hostname.clone(),
        peer_urls: m.peer_urls.clone(),
        client_urls: m.client_urls.clone(),
        learner: m.is_learner,
    }
}

/// The node address of a member (host of its first peer URL), else its hostname.
fn member_node(m: &EtcdMember) -> String {
    m.peer_urls
        .first()
        .and_then(|u| {
            let rest = u.split_once("://").map_or(u.as_str(), |(_, r)| r);
            let hostport = rest.split('/').next()?;
            Some(match hostport.strip_prefix('[') {
                Some(v6) => v6.split(']').next().unwrap_or(v6).to_owned(),
                None => hostport
                    .rsplit_once(':')
                    .map_or(hostport, |(h, _)| h)
                    .to_owned(),
            })
        })
        .unwrap_or_else(|| m.hostname.clone())
}

/// The verdict over members and their statuses.
pub(crate) fn verdict(
    members: &[EtcdMember],
    statuses: &[NodeOutcome<MemberStatusOut>],
) -> (String, Vec<String>, usize, usize, usize) {
    let voting = members.iter().filter(|m| !m.is_learner).count().max(1);
    let quorum = voting / 2 + 1;
    let ok: Vec<&MemberStatusOut> = statuses.iter().filter_map(|s| s.result.as_ref()).collect();
    let answered_voting = ok.iter().filter(|s| !s.learner).count();
    let mut reasons = Vec::new();
    for s in statuses.iter().filter(|s| !s.ok) {
        reasons.push(format!(
            "{} did not answer: {}",
            s.hostname.as_deref().unwrap_or(&s.node),
            s.error
                .as_ref()
                .map_or("unknown error", |e| e.kind.as_str())
        ));
    }
    let leaders: std::collections::BTreeSet<&str> =
        ok.iter().map(|s| s.leader_id.as_str()).collect();
    if leaders.len() > 1 {
        reasons.push(format!(
            "members disagree on the leader: {}",
            leaders.into_iter().collect::<Vec<_>>().join(", ")
        ));
    } else if leaders.iter().any(|l| *l == "0") {
        reasons.push("no leader elected".into());
    }
    for s in &ok {
        for a in &s.alarms {
            reasons.push(format!("member {} has alarm {a}", s.member_id));
        }
        for e in &s.errors {
            reasons.push(format!("member {} reports: {e}", s.member_id));
        }
        if s.db_size_bytes > 0 && s.db_in_use_bytes * 2 < s.db_size_bytes {
            reasons.push(format!(
                "member {} uses {} of a {} database: defragmentation would reclaim space",
                s.member_id,
                bytes(s.db_in_use_bytes),
                bytes(s.db_size_bytes)
            ));
        }
    }
    if members.iter().any(|m| m.is_learner) {
        reasons.push("a learner member is still catching up".into());
    }
    let verdict = if answered_voting < quorum {
        "quorum_lost"
    } else if voting > 1 && answered_voting == quorum && answered_voting < voting {
        "quorum_at_risk"
    } else if reasons.is_empty() {
        "healthy"
    } else {
        "degraded"
    };
    (verdict.to_owned(), reasons, voting, quorum, ok.len())
}

/// etcd members from the first of `nodes` that answers, and which node that was.
pub(crate) async fn first_members(
    api: &dyn talos_client::TalosApi,
    nodes: &[String],
) -> Result<(Vec<EtcdMember>, String), ToolError> {
    let mut last_err = None;
    for node in nodes {
        match api.etcd_members(&CallOptions::node(node.clone())).await {
            Ok(members) => return Ok((members, node.clone())),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.map_or_else(
        || ToolError::invalid("nodes", "no node to ask"),
        ToolError::from,
    ))
}

/// Node addresses of the members (host of the first peer URL, else the hostname).
pub(crate) fn member_nodes(members: &[EtcdMember]) -> Vec<String> {
    members.iter().map(member_node).collect()
}

#[tool_router(router = etcd_router, vis = "pub(crate)")]
impl TalosMcp {
    /// etcd members.
    #[tool(
        name = "talos_etcd_members",
        description = "etcd members as one control-plane node sees them (id, hostname, peer/client URLs, learner). `nodes` may name the node to ask; default: the first node of the context.",
        output_schema = schema_for_output::<MembersOut>(),
        annotations(title = "etcd members", read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true)
    )]
    pub(crate) async fn talos_etcd_members(
        &self,
        Parameters(args): Parameters<TargetArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let result = async {
            let targets = self
                .clusters
                .targets(args.context.as_deref(), args.nodes.as_deref())
                .await?;
            // Ask the named (or default) nodes in turn until a control plane answers.
            let (members, node) = first_members(targets.entry.api.as_ref(), &targets.nodes).await?;
            let out = MembersOut {
                context: targets.entry.name.clone(),
                queried_node: node.clone(),
                members: members.iter().map(member_out).collect(),
            };
            let summary = format!(
                "talos_etcd_members: {} members (asked {node}): {}",
                out.members.len(),
                out.members
                    .iter()
                    .map(|m| m.hostname.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok((out, summary))
        }
        .await;
        self.respond_one(result, Keep::First, "")
    }

    /// etcd health with a verdict.
    #[tool(
        name = "talos_etcd_status",
        description = "etcd health across members: per-member leader, raft index/term, DB size and in-use, alarms, learner state, and a verdict (healthy / degraded with reasons / quorum_at_risk / quorum_lost). Default nodes: every etcd member.",
        output_schema = schema_for_output::<EtcdStatusOut>(),
        annotations(title = "etcd status", read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true)
    )]
    pub(crate) async fn talos_etcd_status(
        &self,
        Parameters(args): Parameters<TargetArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let result = async {
            // Validates the named nodes (or takes the defaults), then learns membership.
            let targets = self.clusters.targets(args.context.as_deref(), args.nodes.as_deref()).await?;
            let (members, _) = first_members(targets.entry.api.as_ref(), &targets.nodes).await?;
            let explicit = args.nodes.as_ref().is_some_and(|n| !n.is_empty());
            let target = TargetArgs {
                context: args.context.clone(),
                nodes: Some(if explicit { targets.nodes.clone() } else { member_nodes(&members) }),
            };
            let statuses = self
                .per_node(&target, |api, opts| async move {
                    let (status, alarms) = tokio::join!(api.etcd_status(&opts), api.etcd_alarms(&opts));
                    let status = status?;
                    let alarms = alarms.unwrap_or_default();
                    Ok(MemberStatusOut {
                        member_id: format!("{:x}", status.member_id),
                        leader_id: format!("{:x}", status.leader),
                        is_leader: status.leader == status.member_id,
                        raft_index: status.raft_index,
                        raft_term: status.raft_term,
                        raft_applied_index: status.raft_applied_index,
                        db_size_bytes: status.db_size,
                        db_in_use_bytes: status.db_size_in_use,
                        learner: status.is_learner,
                        protocol_version: status.protocol_version,
                        errors: status.errors,
                        alarms: alarms
                            .iter()
                            .filter(|a| a.member_id == status.member_id && a.alarm != EtcdAlarmKind::None)
                            .map(|a| format!("{:?}", a.alarm))
                            .collect(),
                    })
                })
                .await?;
            let (verdict, reasons, voting, quorum, answered) = verdict(&members, &statuses.nodes);
            let summary = format!(
                "talos_etcd_status: {verdict} — {answered}/{voting} voting members answered (quorum {quorum}){}",
                if reasons.is_empty() { String::new() } else { format!("; {}", reasons.join("; ")) }
            );
            Ok((
                EtcdStatusOut {
                    verdict,
                    reasons,
                    voting_members: voting,
                    quorum,
                    answered,
                    members: members.iter().map(member_out).collect(),
                    statuses,
                },
                summary,
            ))
        }
        .await;
        self.respond_one(result, Keep::First, "pass fewer `nodes`")
    }
}
