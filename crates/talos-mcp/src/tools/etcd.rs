//! etcd: membership and health with a verdict.

use super::actions::Change;
use crate::call::{Call, Reply};
use crate::registry::{Effect, ToolDef, Toolset, tool};
use crate::safety::Tier;
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
        .and_then(|u| crate::clusters::url_host(u))
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

impl TalosMcp {
    /// etcd members.
    pub(crate) async fn talos_etcd_members(
        &self,
        _call: &Call,
        args: TargetArgs,
    ) -> Result<Reply<MembersOut>, ToolError> {
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
    pub(crate) async fn talos_etcd_status(
        &self,
        _call: &Call,
        args: TargetArgs,
    ) -> Result<Reply<EtcdStatusOut>, ToolError> {
        let result = self.etcd_health(&args).await.map(|out| {
            let summary = format!(
                "talos_etcd_status: {} — {}/{} voting members answered (quorum {}){}",
                out.verdict,
                out.answered,
                out.voting_members,
                out.quorum,
                if out.reasons.is_empty() {
                    String::new()
                } else {
                    format!("; {}", out.reasons.join("; "))
                }
            );
            (out, summary)
        });
        self.respond_one(result, Keep::First, "pass fewer `nodes`")
    }

    /// etcd health of a context: membership from the named (or default) nodes, the status of
    /// every member (or of the named nodes), and the verdict.
    pub(crate) async fn etcd_health(&self, args: &TargetArgs) -> Result<EtcdStatusOut, ToolError> {
        // Validates the named nodes (or takes the defaults), then learns membership.
        let targets = self
            .clusters
            .targets(args.context.as_deref(), args.nodes.as_deref())
            .await?;
        let (members, _) = first_members(targets.entry.api.as_ref(), &targets.nodes).await?;
        let explicit = args.nodes.as_ref().is_some_and(|n| !n.is_empty());
        let target = TargetArgs {
            context: args.context.clone(),
            nodes: Some(if explicit {
                targets.nodes.clone()
            } else {
                member_nodes(&members)
            }),
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
                        .filter(|a| {
                            a.member_id == status.member_id && a.alarm != EtcdAlarmKind::None
                        })
                        .map(|a| format!("{:?}", a.alarm))
                        .collect(),
                })
            })
            .await?;
        let (verdict, reasons, voting, quorum, answered) = verdict(&members, &statuses.nodes);
        Ok(EtcdStatusOut {
            verdict,
            reasons,
            voting_members: voting,
            quorum,
            answered,
            members: members.iter().map(member_out).collect(),
            statuses,
        })
    }
}

/// Arguments of talos_etcd_remove_member.
#[derive(Debug, Clone, serde::Deserialize, Serialize, JsonSchema)]
pub struct RemoveMemberArgs {
    #[serde(flatten)]
    pub target: super::actions::NodeTarget,
    /// Member id (hex) or hostname.
    pub member: String,
}

/// What an etcd action did.
#[derive(Debug, Serialize, JsonSchema)]
pub struct EtcdActionOut {
    pub message: String,
}

/// Where an etcd snapshot was written (never its content) and what its checks found.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SnapshotOut {
    /// The file (mode 0600).
    pub path: String,
    pub size_bytes: u64,
    /// Hex SHA-256 of the file.
    pub sha256: String,
    /// Highest revision in the snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    /// Revision keys in it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<u64>,
    /// Older snapshots of this context deleted by retention.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deleted: Vec<String>,
}

/// Largest snapshot read from a node.
const MAX_SNAPSHOT: u64 = 64 << 30;

impl TalosMcp {
    /// Defragment the node's etcd member.
    pub(crate) async fn talos_etcd_defragment(
        &self,
        call: &Call,
        args: super::actions::NodeTarget,
    ) -> Result<Reply<super::actions::ActionOut<EtcdActionOut>>, ToolError> {
        let target = args.clone();
        self.action(
            call,
            Change {
                args: &args,
                target: &target,
                force: false,
            },
            |api, opts| async move {
                let s = api.etcd_status(&opts).await?;
                Ok(super::actions::Prepared::new(
                    "defragment this node's etcd member (it pauses while compacting its database)"
                        .into(),
                    vec![format!(
                        "database {} of which {} in use",
                        bytes(s.db_size),
                        bytes(s.db_size_in_use)
                    )],
                ))
            },
            |api, opts, ()| async move {
                api.etcd_defragment(&opts).await?;
                let s = api.etcd_status(&opts).await?;
                Ok(EtcdActionOut {
                    message: format!(
                        "defragmented; database now {} ({} in use)",
                        bytes(s.db_size),
                        bytes(s.db_size_in_use)
                    ),
                })
            },
            |o| o.message.clone(),
        )
        .await
    }

    /// Disarm etcd alarms.
    pub(crate) async fn talos_etcd_alarm_disarm(
        &self,
        call: &Call,
        args: super::actions::NodeTarget,
    ) -> Result<Reply<super::actions::ActionOut<EtcdActionOut>>, ToolError> {
        let target = args.clone();
        self.action(
            call,
            Change {
                args: &args,
                target: &target,
                force: false,
            },
            |api, opts| async move {
                let alarms = api.etcd_alarms(&opts).await?;
                Ok(super::actions::Prepared::new(
                    "disarm all etcd alarms".into(),
                    vec![format!(
                        "active alarms: {}",
                        if alarms.is_empty() {
                            "none".into()
                        } else {
                            format!("{alarms:?}")
                        }
                    )],
                ))
            },
            |api, opts, ()| async move {
                let disarmed = api.etcd_alarm_disarm(&opts).await?;
                Ok(EtcdActionOut {
                    message: format!("disarmed {} alarm(s)", disarmed.len()),
                })
            },
            |o| o.message.clone(),
        )
        .await
    }
}

impl TalosMcp {
    /// Move etcd leadership away from a node.
    pub(crate) async fn talos_etcd_forfeit_leadership(
        &self,
        call: &Call,
        args: super::actions::NodeTarget,
    ) -> Result<Reply<super::actions::ActionOut<EtcdActionOut>>, ToolError> {
        let target = args.clone();
        self.action(
            call,
            Change {
                args: &args,
                target: &target,
                force: false,
            },
            |api, opts| async move {
                let s = api.etcd_status(&opts).await?;
                let note = if s.leader == s.member_id {
                    "this member is the leader"
                } else {
                    "this member is not the leader: nothing will change"
                };
                Ok(super::actions::Prepared::new(
                    "make this etcd member hand leadership to another member".into(),
                    vec![note.into()],
                ))
            },
            |api, opts, ()| async move {
                let new = api.etcd_forfeit_leadership(&opts).await?;
                Ok(EtcdActionOut {
                    message: if new.is_empty() {
                        "leadership unchanged (this member was not the leader)".into()
                    } else {
                        format!("leadership moved to {new}")
                    },
                })
            },
            |o| o.message.clone(),
        )
        .await
    }

    /// Remove a node's member from etcd.
    pub(crate) async fn talos_etcd_leave(
        &self,
        call: &Call,
        args: super::actions::NodeTarget,
    ) -> Result<Reply<super::actions::ActionOut<EtcdActionOut>>, ToolError> {
        let askable = self.askable(args.context.as_deref());
        let target = args.clone();
        self.action(
            call,
            Change {
                args: &args,
                target: &target,
                force: false,
            },
            |api, opts| async move {
                Ok(super::lifecycle::quorum_preflight(
                    api.as_ref(),
                    &opts,
                    &askable,
                    true,
                    "remove this node's member from etcd; the node stops serving etcd",
                )
                .await)
            },
            |api, opts, ()| async move {
                api.etcd_leave_cluster(&opts).await?;
                Ok(EtcdActionOut {
                    message: "left the etcd cluster".into(),
                })
            },
            |o| o.message.clone(),
        )
        .await
    }

    /// Remove another member by id.
    pub(crate) async fn talos_etcd_remove_member(
        &self,
        call: &Call,
        args: RemoveMemberArgs,
    ) -> Result<Reply<super::actions::ActionOut<EtcdActionOut>>, ToolError> {
        let target = args.target.clone();
        let wanted = args.member.trim().to_owned();
        self.action(
            call,
            Change {
                args: &args,
                target: &target,
                force: false,
            },
            |api, opts| async move {
                let members = api.etcd_members(&opts).await?;
                let member = members
                    .iter()
                    .find(|m| {
                        m.hostname == wanted
                            || format!("{:x}", m.id)
                                == wanted.trim_start_matches("0x").to_lowercase()
                    })
                    .ok_or_else(|| {
                        ToolError::invalid(
                            "member",
                            format!(
                                "`{wanted}` is not an etcd member; members: {}",
                                members
                                    .iter()
                                    .map(|m| format!("{} ({:x})", m.hostname, m.id))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        )
                    })?;
                let voting = members.iter().filter(|m| !m.is_learner).count();
                let after = voting.saturating_sub(usize::from(!member.is_learner));
                let blocker = (after == 0).then(|| {
                    "removing the last voting member would destroy the cluster".to_owned()
                });
                Ok(super::actions::Prepared {
                    effect: format!(
                        "remove etcd member {} ({:x}); {voting} voting members become {after}",
                        member.hostname, member.id
                    ),
                    preflight: vec![],
                    blocker,
                    details: None,
                    binds: None,
                    // The member the preflight found is the one removed.
                    resolved: (member.id, member.hostname.clone()),
                })
            },
            |api, opts, (id, host): (u64, String)| async move {
                api.etcd_remove_member(&opts, id).await?;
                Ok(EtcdActionOut {
                    message: format!("removed member {host} ({id:x})"),
                })
            },
            |o| o.message.clone(),
        )
        .await
    }

    /// Snapshot etcd to a private file.
    pub(crate) async fn talos_etcd_snapshot(
        &self,
        call: &Call,
        args: super::actions::NodeTarget,
    ) -> Result<Reply<super::actions::ActionOut<SnapshotOut>>, ToolError> {
        let target = args.clone();
        let dir = self.settings.artifact_dir.clone();
        let keep = self.settings.snapshot_retention;
        let context = self.clusters.entry(args.context.as_deref())?.name.clone();
        self.action(
            call,
            Change {
                args: &args,
                target: &target,
                force: false,
            },
            |api, opts| async move {
                let s = api.etcd_status(&opts).await?;
                Ok(super::actions::Prepared::new(
                    "write a full etcd snapshot (all cluster secrets) to a private file on the server".into(),
                    vec![format!("database size {}", bytes(s.db_size))],
                ))
            },
            |api, opts, ()| async move {
                use crate::artifacts::{self, Kind};
                artifacts::ensure_dir(&dir)?;
                let node = opts.node.clone().unwrap_or_default();
                let name = artifacts::file_name(Kind::Snapshot, &context, &node, std::time::SystemTime::now());
                // Written under a hidden name, verified, then renamed: a listing or a recovery
                // never sees a partial or unverified snapshot.
                let temp = format!(".{name}.partial");
                let local = |e: std::io::Error| ToolError::Local(format!("cannot write the snapshot in {}: {e}", dir.display()));
                let file = artifacts::create_private(&dir.join(&temp)).map_err(local)?;
                let written = match file.try_clone() {
                    Ok(second) => {
                        let sink = Box::new(tokio::fs::File::from_std(second));
                        match api.etcd_snapshot(&opts, sink, MAX_SNAPSHOT).await {
                            Ok(info) => file.sync_all().map(|()| info).map_err(local),
                            Err(e) => Err(e.into()),
                        }
                    }
                    Err(e) => Err(local(e)),
                };
                drop(file);
                let checked = match written {
                    Ok(_) => {
                        let (d, t) = (dir.clone(), temp.clone());
                        tokio::task::spawn_blocking(move || super::backup::verify_file(&d, &t, true))
                            .await
                            .map_err(|e| ToolError::Internal(format!("the snapshot check stopped: {e}")))
                            .and_then(|r| r)
                    }
                    Err(e) => Err(e),
                };
                let checked = checked.and_then(|c| {
                    std::fs::rename(dir.join(&temp), dir.join(&name)).map_err(local)?;
                    Ok(c)
                });
                let checked = match checked {
                    Ok(c) => c,
                    Err(e) => {
                        // Never leave a partial or unverified snapshot behind.
                        let _ = std::fs::remove_file(dir.join(&temp));
                        return Err(e);
                    }
                };
                let deleted = artifacts::prune(&dir, Kind::Snapshot, &context, None, keep)?;
                Ok(SnapshotOut {
                    path: dir.join(&name).display().to_string(),
                    size_bytes: checked.size_bytes,
                    sha256: checked.sha256,
                    revision: checked.verification.revision,
                    keys: checked.verification.keys,
                    deleted,
                })
            },
            |o| format!(
                "snapshot written to {} ({}, sha256 {}, revision {}){}",
                o.path,
                bytes(o.size_bytes),
                o.sha256,
                o.revision.map_or("unknown".into(), |r| r.to_string()),
                if o.deleted.is_empty() { String::new() } else { format!("; retention deleted {} older", o.deleted.len()) }
            ),
        )
        .await
    }
}
/// The tools of this module, in listing order.
pub(crate) fn tools() -> Vec<ToolDef> {
    vec![
        tool(
            Toolset::Etcd,
            "talos_etcd_members",
            "etcd members",
            "etcd members (id, hostname, URLs, learner) from the first of `nodes` that answers.",
        )
        .run(TalosMcp::talos_etcd_members)
        .build(),
        tool(
            Toolset::Etcd,
            "talos_etcd_status",
            "etcd status",
            "etcd health per member (leader, raft, DB size, alarms) with a verdict and reasons. Default: all members.",
        )
        .run(TalosMcp::talos_etcd_status)
        .build(),
        tool(
            Toolset::Etcd,
            "talos_etcd_defragment",
            "Defragment etcd",
            "Defragments one node's etcd member to reclaim space; it blocks reads and writes meanwhile (one member at a time).",
        )
        .tier(Tier::Write)
        .effect(Effect::Changes { idempotent: true })
        .run(TalosMcp::talos_etcd_defragment)
        .build(),
        tool(
            Toolset::Etcd,
            "talos_etcd_alarm_disarm",
            "Disarm etcd alarms",
            "Disarms etcd alarms (e.g. NOSPACE after freeing space) through one control-plane node.",
        )
        .tier(Tier::Write)
        .effect(Effect::Changes { idempotent: true })
        .run(TalosMcp::talos_etcd_alarm_disarm)
        .build(),
        tool(
            Toolset::Etcd,
            "talos_etcd_forfeit_leadership",
            "Forfeit etcd leadership",
            "Makes one node's etcd member give up leadership (an election follows), e.g. before maintenance.",
        )
        .tier(Tier::Destructive)
        .run(TalosMcp::talos_etcd_forfeit_leadership)
        .build(),
        tool(
            Toolset::Etcd,
            "talos_etcd_leave",
            "Leave etcd",
            "Removes one control-plane node's member from etcd, e.g. before decommissioning. Refused if the rest could not keep quorum.",
        )
        .tier(Tier::Destructive)
        .run(TalosMcp::talos_etcd_leave)
        .build(),
        tool(
            Toolset::Etcd,
            "talos_etcd_remove_member",
            "Remove etcd member",
            "Removes another etcd member (e.g. of a node gone for good) through a healthy control-plane `node`. Never the last voting member.",
        )
        .tier(Tier::Destructive)
        .run(TalosMcp::talos_etcd_remove_member)
        .build(),
        tool(
            Toolset::Etcd,
            "talos_etcd_snapshot",
            "etcd snapshot",
            "Writes one node's etcd snapshot to a private 0600 file on the server, verified, keeping the newest N per context; returns path, size, SHA-256, revision, never the data.",
        )
        .tier(Tier::Destructive)
        .effect(Effect::Changes { idempotent: false })
        .run(TalosMcp::talos_etcd_snapshot)
        .build(),
    ]
}

super::targeted_by_field!(RemoveMemberArgs);
