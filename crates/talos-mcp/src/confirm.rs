//! Server-enforced confirmation of write and destructive calls.
//!
//! With a client that supports elicitation (and mode `elicit`), the human is asked through a form
//! naming the tool, node, context and effect. Otherwise the first call only returns the plan and
//! a single-use token bound to the tool, context, node and arguments; the call runs when repeated
//! with that token.

use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::service::ElicitationError;
use rmcp::{Peer, RoleServer};
use serde::Serialize;
use serde_json::json;

use crate::error::ToolError;
use crate::output::failure;
use crate::safety::{ConfirmForm, ConfirmMode, Tier};
use crate::server::TalosMcp;

/// What a call is about to do.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Plan {
    /// The tool.
    pub tool: String,
    /// Its tier.
    pub tier: Tier,
    /// The talosconfig context.
    pub context: String,
    /// The one node it acts on.
    pub node: String,
    /// The node's hostname, when known.
    pub hostname: Option<String>,
    /// The effect, in words.
    pub effect: String,
    /// Preflight findings.
    pub preflight: Vec<String>,
}

/// Whether to go ahead.
#[derive(Debug)]
pub(crate) enum Gate {
    /// Go ahead; the string records how it was confirmed.
    Proceed(String),
    /// Stop and answer with this result (a plan with a token, or a refusal).
    Stop(Box<CallToolResult>),
}

impl TalosMcp {
    /// Decides whether a write/destructive call may run now.
    pub(crate) async fn confirm<A: Serialize>(
        &self,
        peer: &Peer<RoleServer>,
        plan: &Plan,
        args: &A,
        token: Option<&str>,
    ) -> Gate {
        let safety = &self.settings.safety;
        match plan.tier {
            Tier::Read => return Gate::Proceed("not required (changes nothing)".into()),
            Tier::Write if !safety.confirm_writes => {
                return Gate::Proceed("not required (write tier)".into());
            }
            _ => {}
        }
        if safety.confirm == ConfirmMode::None {
            tracing::warn!(tool = %plan.tool, node = %plan.node, "running without confirmation (--confirm=none)");
            return Gate::Proceed("none (confirmation disabled by the operator)".into());
        }
        let who = match &plan.hostname {
            Some(h) => format!("{h} ({})", plan.node),
            None => plan.node.clone(),
        };
        // Protocol 2026-07-28 forbids server-to-client requests (elicitation moves into the
        // multi-round-trip flow, not implemented yet): such clients get the token flow.
        let legacy_protocol = peer
            .peer_info()
            .is_some_and(|info| info.protocol_version < rmcp::model::ProtocolVersion::V_2026_07_28);
        if safety.confirm == ConfirmMode::Elicit
            && legacy_protocol
            && !peer.supported_elicitation_modes().is_empty()
        {
            let mut message = format!(
                "Allow {tool} on node {who} in context {ctx}?\n\nEffect: {effect}",
                tool = plan.tool,
                ctx = plan.context,
                effect = plan.effect
            );
            if !plan.preflight.is_empty() {
                message.push_str("\n\nPreflight:\n- ");
                message.push_str(&plan.preflight.join("\n- "));
            }
            message.push_str("\n\nSet confirm to true to proceed.");
            return match peer.elicit::<ConfirmForm>(message).await {
                Ok(Some(ConfirmForm { confirm: true })) => {
                    Gate::Proceed("elicitation: accepted".into())
                }
                Ok(_) => stop(
                    ToolError::NotConfirmed(
                        "the human did not tick confirm; nothing was done".into(),
                    ),
                    "elicitation: not confirmed",
                ),
                Err(ElicitationError::UserDeclined) => stop(
                    ToolError::NotConfirmed(
                        "the human declined; nothing was done. Do not retry unless they ask."
                            .into(),
                    ),
                    "elicitation: declined",
                ),
                Err(ElicitationError::UserCancelled) => stop(
                    ToolError::NotConfirmed(
                        "the human cancelled the confirmation; nothing was done".into(),
                    ),
                    "elicitation: cancelled",
                ),
                Err(e) => stop(
                    ToolError::NotConfirmed(format!(
                        "the confirmation could not be asked ({e}); nothing was done"
                    )),
                    "elicitation: failed",
                ),
            };
        }
        let binding = binding(plan, args);
        match token {
            Some(t) => match safety.tokens.redeem(t, &binding) {
                Ok(()) => Gate::Proceed("token: redeemed".into()),
                Err(e) => stop(ToolError::NotConfirmed(e.to_string()), "token: refused"),
            },
            None => {
                let token = safety.tokens.issue(&binding);
                let ttl = safety.tokens.ttl().as_secs();
                let mut text = format!(
                    "Confirmation required — nothing was done yet.\nPlan: {tool} on {who} (context {ctx}): {effect}",
                    tool = plan.tool,
                    ctx = plan.context,
                    effect = plan.effect
                );
                for p in &plan.preflight {
                    text.push_str(&format!("\n- preflight: {p}"));
                }
                text.push_str(&format!(
                    "\nTo proceed, show this plan to the human and, only with their approval, call {} again with the same arguments plus confirmation_token=\"{token}\" (valid {ttl} s, single use).",
                    plan.tool
                ));
                let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
                result.structured_content = Some(json!({
                    "status": "confirmation_required",
                    "confirmation": "token: issued",
                    "plan": plan,
                    "context": plan.context,
                    "node": plan.node,
                    "confirmation_token": token,
                    "expires_in_seconds": ttl,
                }));
                Gate::Stop(Box::new(result))
            }
        }
    }
}

fn stop(err: ToolError, outcome: &str) -> Gate {
    let mut result = failure(&err);
    if let Some(serde_json::Value::Object(map)) = result.structured_content.as_mut() {
        map.insert("confirmation".into(), json!(outcome));
    }
    Gate::Stop(Box::new(result))
}

/// What a token is bound to: tool, context, node and the arguments (without the token).
fn binding<A: Serialize>(plan: &Plan, args: &A) -> String {
    let mut value = serde_json::to_value(args).unwrap_or_default();
    if let serde_json::Value::Object(map) = &mut value {
        map.remove("confirmation_token");
    }
    format!("{}|{}|{}|{}", plan.tool, plan.context, plan.node, value)
}
