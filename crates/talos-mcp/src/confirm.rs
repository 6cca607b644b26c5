//! Server-enforced confirmation of write and destructive calls.
//!
//! With a client that supports form elicitation (and mode `elicit`), the human is asked through a
//! form naming the tool, node, context and effect: as an `elicitation/create` request on
//! handshake-era protocols, or, on 2026-07-28 (which forbids server-to-client requests), as an
//! `input_required` result that the client answers by repeating the call with the human's answer
//! (the multi-round-trip flow). The round trip's `requestState` is sealed like a confirmation
//! token: bound to the call, expiring, single use, verifiable by any replica with the secret.
//! Otherwise the first call only returns the plan and a single-use token bound to the tool,
//! context, node and arguments; the call runs when repeated with that token.

use rmcp::model::{
    CallToolRequestParams, ElicitRequest, ElicitRequestParams, ElicitResult, ElicitationAction,
    ElicitationSchema, InputRequest, InputRequests, InputRequiredResult, InputResponses,
};
use rmcp::service::RequestContext;
use rmcp::{Peer, RoleServer};
use serde::Serialize;
use serde_json::json;

use crate::call::{Call, Confirmation};
use crate::error::ToolError;
use crate::safety::{ConfirmForm, ConfirmMode, Tier, TokenError};
use crate::server::TalosMcp;

/// The key of the confirmation form among a round trip's input requests.
const CONFIRM_INPUT: &str = "confirm";

/// What a call is about to do.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Plan {
    /// The tool. (Sent, but left out of the schema: the result names it at its top level.)
    #[schemars(skip)]
    pub tool: String,
    /// Its tier.
    pub tier: Tier,
    /// The talosconfig context. (Sent, but left out of the schema: the result names it at its top level.)
    #[schemars(skip)]
    pub context: String,
    /// The one node it acts on. (Sent, but left out of the schema: the result names it at its top level.)
    #[schemars(skip)]
    pub node: String,
    /// The node's hostname, when known. (Sent, but left out of the schema: the result names it at its top level.)
    #[schemars(skip)]
    pub hostname: Option<String>,
    /// The effect, in words.
    pub effect: String,
    /// Preflight findings.
    pub preflight: Vec<String>,
    /// Exactly what will be applied (for a machine configuration: its SHA-256 and the redacted
    /// diff against the node's current configuration).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    /// The steps of a plan over many nodes (a rolling upgrade), which the confirmation is bound
    /// to through their digest. (`node` then lists the plan's nodes.) (Sent, but left out of
    /// the schema, which every change tool's output repeats: the plan's text lists the steps.)
    #[schemars(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<PlanSteps>,
}

/// The ordered steps of a many-node plan and their digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct PlanSteps {
    /// Hex SHA-256 of the steps; the confirmation is bound to it.
    pub digest: String,
    /// One line per node, in order.
    pub lines: Vec<String>,
}

impl PlanSteps {
    /// The steps and the digest of `canonical`, an unambiguous encoding of everything the plan
    /// fixes (nodes, order, roles, versions).
    pub(crate) fn new(lines: Vec<String>, canonical: &str) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
        Self {
            digest: digest.as_ref().iter().map(|b| format!("{b:02x}")).collect(),
            lines,
        }
    }

    /// The steps as the human reads them, with the digest.
    fn render(&self) -> String {
        format!("Plan (digest {}):\n{}", self.digest, self.lines.join("\n"))
    }
}

/// How a tool call can reach the human: the peer, the protocol era, whether the client fills
/// in forms, and the answers of a multi-round-trip retry. Extracted from the tool call.
#[derive(Debug, Clone)]
pub(crate) struct Ask {
    /// The MCP client (also used for progress notifications); `None` for an A2A caller.
    pub(crate) peer: Option<Peer<RoleServer>>,
    /// An A2A caller: it confirms by answering its task (`INPUT_REQUIRED`) on the same task.
    a2a: bool,
    /// The request's protocol forbids server-to-client requests (2026-07-28 and later).
    round_trip: bool,
    /// The client declared form elicitation (in the handshake or the request's metadata).
    forms: bool,
    /// The answers of a multi-round-trip retry.
    responses: Option<InputResponses>,
    /// The sealed state of a multi-round-trip retry.
    state: Option<String>,
    /// The authenticated caller (the HTTP bearer token's name), when there is one.
    pub(crate) caller: Option<String>,
    /// The transport session (the HTTP `Mcp-Session-Id`), when there is one.
    session: Option<String>,
}

impl Ask {
    /// How an A2A caller is reached: through its task (the call runs as an operation).
    pub(crate) fn a2a(caller: Option<String>) -> Self {
        Self {
            peer: None,
            a2a: true,
            round_trip: false,
            forms: false,
            responses: None,
            state: None,
            caller,
            session: None,
        }
    }

    /// The sealed state a multi-round-trip retry carries, if any.
    pub(crate) fn state(&self) -> Option<&str> {
        self.state.as_deref()
    }

    /// What a tool call's request says about reaching the human.
    pub(crate) fn new(
        request: &CallToolRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> Self {
        let round_trip = context
            .protocol_version()
            .is_some_and(|v| !v.has_initialize());
        let forms = context
            .client_capabilities()
            .and_then(|c| c.elicitation)
            .is_some_and(|e| e.form.is_some() || e.url.is_none());
        Self {
            peer: Some(context.peer.clone()),
            a2a: false,
            round_trip,
            forms,
            responses: request.input_responses.clone(),
            state: request.request_state.clone(),
            caller: crate::audit::caller(&context.extensions),
            session: crate::audit::session(&context.extensions),
        }
    }
}

/// Whether to go ahead.
#[derive(Debug)]
pub(crate) enum Gate {
    /// Go ahead (how is recorded in the call's scope).
    Proceed,
    /// Nothing was done: answer with this plan and token (structured value and text).
    Plan(serde_json::Value, String),
    /// Ask the human first: answer with this and wait for the client's retry.
    Ask(Box<InputRequiredResult>),
    /// Refuse: not confirmed, or a retry whose state is not this server's or not for this call.
    Refuse(ToolError),
}

/// What the human answered in the confirmation form.
enum Answer {
    Accepted,
    NotTicked,
    Declined,
    Cancelled,
    Failed(String),
}

impl Answer {
    fn gate(self, call: &Call) -> Gate {
        match self {
            Self::Accepted => proceed(call, Confirmation::Accepted),
            Self::NotTicked => stop(
                call,
                ToolError::NotConfirmed("the human did not tick confirm; nothing was done".into()),
                Confirmation::NotTicked,
            ),
            Self::Declined => stop(
                call,
                ToolError::NotConfirmed(
                    "the human declined; nothing was done. Do not retry unless they ask.".into(),
                ),
                Confirmation::Declined,
            ),
            Self::Cancelled => stop(
                call,
                ToolError::NotConfirmed(
                    "the human cancelled the confirmation; nothing was done".into(),
                ),
                Confirmation::Cancelled,
            ),
            Self::Failed(why) => stop(
                call,
                ToolError::NotConfirmed(format!(
                    "the confirmation could not be asked ({why}); nothing was done"
                )),
                Confirmation::Failed,
            ),
        }
    }

    /// Reads the answer to the confirmation form (an `elicitation/create` result).
    fn from_result(result: ElicitResult) -> Self {
        match result.action {
            ElicitationAction::Accept => {
                match result.content.map(serde_json::from_value::<ConfirmForm>) {
                    Some(Ok(ConfirmForm { confirm: true })) => Self::Accepted,
                    Some(Ok(_)) => Self::NotTicked,
                    Some(Err(e)) => Self::Failed(format!("the form answer does not fit: {e}")),
                    None => Self::Failed("the form was accepted without content".into()),
                }
            }
            ElicitationAction::Decline => Self::Declined,
            // Cancel, and any action a later protocol adds: nothing is done.
            _ => Self::Cancelled,
        }
    }
}

impl TalosMcp {
    /// Decides whether a write/destructive call may run now.
    pub(crate) async fn confirm<A: Serialize>(
        &self,
        call: &Call,
        plan: &Plan,
        args: &A,
        token: Option<&str>,
    ) -> Gate {
        let safety = &self.settings.safety;
        let ask = &call.ask;
        match plan.tier {
            Tier::Read => return proceed(call, Confirmation::NotRequiredReads),
            Tier::Write if !safety.confirm_writes => {
                return proceed(call, Confirmation::NotRequiredWrite);
            }
            _ => {}
        }
        if safety.confirm == ConfirmMode::None {
            tracing::warn!(tool = %plan.tool, node = %plan.node, "running without confirmation (--confirm=none)");
            return proceed(call, Confirmation::Disabled);
        }
        let who = match (&plan.hostname, &plan.steps) {
            (_, Some(_)) => format!("nodes {}", plan.node),
            (Some(h), None) => format!("node {h} ({})", plan.node),
            (None, None) => format!("node {}", plan.node),
        };
        // An A2A task asks through its own state, whatever the mode: the caller answers the
        // task with `{"confirm": true|false}`; the operation holds the exact arguments meanwhile.
        if ask.a2a
            && let Some(op) = &call.operation
        {
            return self.confirm_a2a(call, op, plan).await;
        }
        let binding = binding(plan, args, ask.caller.as_deref(), ask.session.as_deref());
        // Without transport sessions (stateless HTTP), a server-to-client request would have to
        // come back to this replica: handshake-era clients get the token flow instead.
        let can_ask = ask.round_trip || !self.settings.stateless;
        if safety.confirm == ConfirmMode::Elicit && ask.forms && can_ask {
            let mut message = format!(
                "Allow {tool} on {who} in context {ctx}?\n\nEffect: {effect}",
                tool = plan.tool,
                ctx = plan.context,
                effect = plan.effect
            );
            if !plan.preflight.is_empty() {
                message.push_str("\n\nPreflight:\n- ");
                message.push_str(&plan.preflight.join("\n- "));
            }
            if let Some(details) = &plan.details {
                message.push_str("\n\n");
                message.push_str(details);
            }
            if let Some(steps) = &plan.steps {
                message.push_str("\n\n");
                message.push_str(&steps.render());
            }
            message.push_str("\n\nSet confirm to true to proceed.");
            let form = match ElicitationSchema::from_type::<ConfirmForm>() {
                Ok(requested_schema) => ElicitRequestParams::FormElicitationParams {
                    meta: None,
                    message,
                    requested_schema,
                },
                Err(e) => return Answer::Failed(format!("no form schema: {e}")).gate(call),
            };
            // A task asks through its own state (input_required, answered with tasks/update).
            if let Some(op) = &call.operation
                && op.is_task().await
            {
                return self.confirm_in_task(call, op, form).await;
            }
            if ask.round_trip {
                return self.confirm_round_trip(call, &binding, form).await;
            }
            // The same form and the same reading of the answer as the round trip.
            let answer = match &ask.peer {
                Some(peer) => match peer.create_elicitation(form).await {
                    Ok(result) => Answer::from_result(result),
                    Err(e) => Answer::Failed(e.to_string()),
                },
                None => Answer::Failed("no client to ask".into()),
            };
            return answer.gate(call);
        }
        match token {
            Some(t) => match safety
                .tokens
                .redeem(t, &binding, self.settings.state.as_ref())
                .await
            {
                Ok(()) => proceed(call, Confirmation::TokenRedeemed),
                Err(e @ TokenError::Unavailable) => Gate::Refuse(ToolError::State(e.to_string())),
                Err(e) => stop(
                    call,
                    ToolError::NotConfirmed(e.to_string()),
                    Confirmation::TokenRefused,
                ),
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
                if let Some(details) = &plan.details {
                    text.push_str(&format!("\n{details}"));
                }
                if let Some(steps) = &plan.steps {
                    text.push_str(&format!("\n{}", steps.render()));
                }
                text.push_str(&format!(
                    "\nTo proceed, show this plan to the human and, only with their approval, call {} again with the same arguments plus confirmation_token=\"{token}\" (valid {ttl} s, single use).",
                    plan.tool
                ));
                call.confirmed(Confirmation::TokenIssued);
                let value = json!({
                    "status": "confirmation_required",
                    "confirmation": Confirmation::TokenIssued.as_str(),
                    "plan": plan,
                    "context": plan.context,
                    "node": plan.node,
                    "confirmation_token": token,
                    "expires_in_seconds": ttl,
                });
                Gate::Plan(value, text)
            }
        }
    }

    /// Confirmation inside a task: the task goes `input_required` with the form as an
    /// `elicitation/create` input request and resumes when `tasks/update` brings the answer.
    /// The wait is bounded by the confirmation token lifetime; no answer in time: nothing is done.
    async fn confirm_in_task(
        &self,
        call: &Call,
        op: &crate::operations::Operation,
        form: ElicitRequestParams,
    ) -> Gate {
        let requests = InputRequests::from([(
            CONFIRM_INPUT.to_owned(),
            InputRequest::Elicitation(ElicitRequest::new(form)),
        )]);
        let requests = match serde_json::to_value(requests) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => return Answer::Failed("the form could not be encoded".into()).gate(call),
        };
        let wait = self.settings.safety.tokens.ttl();
        let Some(mut answers) = op.input(requests, wait).await else {
            return stop(
                call,
                ToolError::NotConfirmed(format!(
                    "the confirmation was not answered within {} s; nothing was done. Call again to be asked anew.",
                    wait.as_secs()
                )),
                Confirmation::Expired,
            );
        };
        match answers
            .remove(CONFIRM_INPUT)
            .map(serde_json::from_value::<ElicitResult>)
        {
            Some(Ok(result)) => Answer::from_result(result).gate(call),
            Some(Err(e)) => Answer::Failed(format!(
                "inputResponses.{CONFIRM_INPUT} is not an elicitation result: {}",
                crate::error::clip(&e.to_string(), 200)
            ))
            .gate(call),
            None => Answer::Failed(format!("no answer under `{CONFIRM_INPUT}`")).gate(call),
        }
    }

    /// Confirmation of an A2A task: the operation goes `input_required` with the plan (its text
    /// and its JSON) as the input request `confirm`; the caller answers on the same task with
    /// `{"confirm": true}` (run, once) or `{"confirm": false}` (nothing is done). The wait is
    /// bounded by the confirmation token lifetime; no answer in time: nothing is done.
    async fn confirm_a2a(
        &self,
        call: &Call,
        op: &crate::operations::Operation,
        plan: &Plan,
    ) -> Gate {
        let wait = self.settings.safety.tokens.ttl();
        let who = match (&plan.hostname, &plan.steps) {
            (_, Some(_)) => format!("nodes {}", plan.node),
            (Some(h), None) => format!("node {h} ({})", plan.node),
            (None, None) => format!("node {}", plan.node),
        };
        let mut text = format!(
            "Confirmation required — nothing was done yet.\nPlan: {tool} on {who} (context {ctx}): {effect}",
            tool = plan.tool,
            ctx = plan.context,
            effect = plan.effect
        );
        for p in &plan.preflight {
            text.push_str(&format!("\n- preflight: {p}"));
        }
        if let Some(details) = &plan.details {
            text.push_str(&format!("\n{details}"));
        }
        if let Some(steps) = &plan.steps {
            text.push_str(&format!("\n{}", steps.render()));
        }
        text.push_str(&format!(
            "\nTo proceed, show this plan to the human and, only with their approval, answer on this task with a data part {{\"confirm\": true}}; {{\"confirm\": false}} cancels it. Unanswered for {} s, nothing is done.",
            wait.as_secs()
        ));
        let requests = json!({ CONFIRM_INPUT: { "text": text, "plan": plan } });
        let serde_json::Value::Object(requests) = requests else {
            return Answer::Failed("the plan could not be encoded".into()).gate(call);
        };
        let Some(mut answers) = op.input(requests, wait).await else {
            return stop(
                call,
                ToolError::NotConfirmed(format!(
                    "the confirmation was not answered within {} s; nothing was done. Send the call again to be asked anew.",
                    wait.as_secs()
                )),
                Confirmation::Expired,
            );
        };
        match answers.remove(CONFIRM_INPUT) {
            Some(serde_json::Value::Bool(true)) => proceed(call, Confirmation::A2aConfirmed),
            Some(serde_json::Value::Bool(false)) => stop(
                call,
                ToolError::NotConfirmed(
                    "the caller declined ({\"confirm\": false}); nothing was done. Do not retry unless the human asks.".into(),
                ),
                Confirmation::A2aDeclined,
            ),
            _ => Answer::Failed(format!("`{CONFIRM_INPUT}` is not true or false")).gate(call),
        }
    }

    /// The multi-round-trip confirmation (protocol 2026-07-28): the first call answers with the
    /// form as an input request and sealed state; the retry carries the human's answer and the
    /// state, which must be this server's, for this very call, unexpired and unused.
    async fn confirm_round_trip(
        &self,
        call: &Call,
        binding: &str,
        form: ElicitRequestParams,
    ) -> Gate {
        let ask = &call.ask;
        let tokens = &self.settings.safety.tokens;
        // Domain-separated from confirmation tokens: one can never stand in for the other.
        let binding = format!("round-trip|{binding}");
        let answer = ask
            .responses
            .as_ref()
            .and_then(|r| r.get(CONFIRM_INPUT))
            .cloned();
        if let (Some(state), Some(answer)) = (&ask.state, answer) {
            return match tokens
                .redeem(state, &binding, self.settings.state.as_ref())
                .await
            {
                Ok(()) => match serde_json::from_value::<ElicitResult>(answer) {
                    Ok(result) => Answer::from_result(result).gate(call),
                    Err(e) => Gate::Refuse(ToolError::RequestState(format!(
                        "inputResponses.{CONFIRM_INPUT} is not an elicitation result: {e}"
                    ))),
                },
                Err(TokenError::Expired) => stop(
                    call,
                    ToolError::NotConfirmed(
                        "the confirmation form expired before it was answered; nothing was done. Call again to be asked anew.".into(),
                    ),
                    Confirmation::Expired,
                ),
                Err(TokenError::Replayed) => stop(
                    call,
                    ToolError::NotConfirmed(
                        "this confirmation was already used; nothing was done. Call again to be asked anew.".into(),
                    ),
                    Confirmation::Replayed,
                ),
                Err(e @ TokenError::Unavailable) => Gate::Refuse(ToolError::State(e.to_string())),
                Err(TokenError::Mismatch | TokenError::Malformed) => {
                    Gate::Refuse(ToolError::RequestState(
                        "requestState failed its integrity check or belongs to another call (tool, context, node and arguments must not change between rounds); call again without it".into(),
                    ))
                }
            };
        }
        // First round (or a retry without an answer): ask.
        let requests = InputRequests::from([(
            CONFIRM_INPUT.to_owned(),
            InputRequest::Elicitation(ElicitRequest::new(form)),
        )]);
        call.confirmed(Confirmation::Asked);
        Gate::Ask(Box::new(InputRequiredResult::new(
            Some(requests),
            Some(tokens.issue(&binding)),
        )))
    }
}

/// Goes ahead, recording how the call was confirmed.
fn proceed(call: &Call, how: Confirmation) -> Gate {
    call.confirmed(how);
    Gate::Proceed
}

/// Refuses, recording why (the result names it too).
fn stop(call: &Call, err: ToolError, how: Confirmation) -> Gate {
    call.confirmed(how);
    Gate::Refuse(err)
}

/// What a token is bound to: tool, context, node, the caller and session that asked, the
/// arguments (without the token), and a many-node plan's digest, as one JSON array (an
/// unambiguous encoding of the fields).
fn binding<A: Serialize>(
    plan: &Plan,
    args: &A,
    caller: Option<&str>,
    session: Option<&str>,
) -> String {
    let mut value = serde_json::to_value(args).unwrap_or_default();
    if let serde_json::Value::Object(map) = &mut value {
        map.remove("confirmation_token");
    }
    let mut bound = json!([plan.tool, plan.context, plan.node, caller, session, value]);
    if let (Some(steps), serde_json::Value::Array(fields)) = (&plan.steps, &mut bound) {
        fields.push(json!(steps.digest));
    }
    bound.to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use super::*;
    use crate::safety::TokenIssuer;

    fn plan() -> Plan {
        Plan {
            tool: "talos_reboot".into(),
            tier: Tier::Destructive,
            context: "prod".into(),
            node: "10.0.0.1".into(),
            hostname: None,
            effect: String::new(),
            preflight: vec![],
            details: None,
            steps: None,
        }
    }

    /// A token issued to one caller or session is refused to another.
    #[tokio::test]
    async fn tokens_are_bound_to_the_caller_and_the_session() {
        let issuer = TokenIssuer::random(Duration::from_secs(60));
        let used = crate::state::MemoryState::default();
        let args = json!({"node": "10.0.0.1"});
        let alice = binding(&plan(), &args, Some("alice"), Some("s1"));
        let token = issuer.issue(&alice);
        for (caller, session) in [
            (Some("mallory"), Some("s1")),
            (None, Some("s1")),
            (Some("alice"), Some("s2")),
            (Some("alice"), None),
        ] {
            let other = binding(&plan(), &args, caller, session);
            assert_eq!(
                issuer.redeem(&token, &other, &used).await,
                Err(TokenError::Mismatch),
                "{caller:?} {session:?}"
            );
        }
        assert_eq!(issuer.redeem(&token, &alice, &used).await, Ok(()));
        // Fields cannot run into each other.
        let a = binding(&plan(), &args, Some("a|b"), None);
        let b = binding(&plan(), &args, Some("a"), Some("b"));
        assert_ne!(a, b);
    }

    /// A many-node plan's token is bound to the plan's digest: the same arguments with another
    /// plan do not match. A single-node plan's binding is as before (no digest).
    #[tokio::test]
    async fn many_node_tokens_are_bound_to_the_plan() {
        let issuer = TokenIssuer::random(Duration::from_secs(60));
        let used = crate::state::MemoryState::default();
        let args = json!({"image": "installer:v1.12.0"});
        let with = |lines: &[&str]| Plan {
            steps: Some(PlanSteps::new(
                lines.iter().map(|l| (*l).to_owned()).collect(),
                &lines.join("\n"),
            )),
            ..plan()
        };
        let a = with(&["step 1: cp-1 v1.11.5 -> v1.12.0"]);
        let b = with(&["skip: cp-1 already on v1.12.0"]);
        assert_ne!(a.steps, b.steps);
        let token = issuer.issue(&binding(&a, &args, None, None));
        assert_eq!(
            issuer
                .redeem(&token, &binding(&b, &args, None, None), &used)
                .await,
            Err(TokenError::Mismatch)
        );
        assert_eq!(
            issuer
                .redeem(&token, &binding(&a, &args, None, None), &used)
                .await,
            Ok(())
        );
        let single = binding(&plan(), &args, None, None);
        assert_eq!(
            single,
            json!([
                "talos_reboot",
                "prod",
                "10.0.0.1",
                null,
                null,
                {"image": "installer:v1.12.0"}
            ])
            .to_string()
        );
    }
}
