//! The agent card: who this agent is, where it is reached, how clients authenticate, and one
//! skill per toolset listing the enabled tools and their tiers.

use serde_json::json;

use super::types::{AgentCapabilities, AgentCard, AgentInterface, AgentSkill, PROTOCOL_VERSION};
use crate::registry::Toolset;
use crate::server::TalosMcp;

/// What the card says that the server does not know by itself.
#[derive(Debug, Clone)]
pub struct CardSettings {
    /// The base URL clients reach the server at (`https://talos-mcp.example:8443`); the A2A
    /// endpoint is `<base>/a2a`.
    pub base_url: String,
    /// Bearer tokens are required.
    pub bearer: bool,
}

/// The scheme name the card uses for bearer tokens.
const BEARER: &str = "bearer";

/// The card of `server`: only enabled tools appear.
pub fn agent_card(server: &TalosMcp, settings: &CardSettings) -> AgentCard {
    let enabled = server.enabled_tools();
    let mut skills = Vec::new();
    for set in Toolset::ALL {
        let tools: Vec<_> = enabled.iter().filter(|(_, s, _)| *s == set).collect();
        let Some((first, _, _)) = tools.first() else {
            continue;
        };
        let listed: Vec<String> = tools
            .iter()
            .map(|(name, _, tier)| format!("{name} ({})", tier.as_str()))
            .collect();
        let mut tiers: Vec<&str> = tools.iter().map(|(_, _, t)| t.as_str()).collect();
        tiers.dedup();
        let mut tags = vec!["talos".to_owned(), set.as_str().to_owned()];
        tags.extend(tiers.iter().map(|t| (*t).to_owned()));
        tags.dedup();
        skills.push(AgentSkill {
            id: set.as_str().to_owned(),
            name: format!("Talos {}", set.as_str()),
            description: format!(
                "Tools (tier in brackets): {}. Send a message with a data part {{\"tool\": <name>, \"arguments\": {{...}}}}; write and destructive tools stop in TASK_STATE_INPUT_REQUIRED until the task is answered with {{\"confirm\": true}}.",
                listed.join(", ")
            ),
            tags,
            examples: vec![json!({"tool": first, "arguments": {}}).to_string()],
        });
    }
    let mut security_schemes = serde_json::Map::new();
    let mut security_requirements = Vec::new();
    if settings.bearer {
        security_schemes.insert(
            BEARER.to_owned(),
            json!({"httpAuthSecurityScheme": {
                "scheme": "Bearer",
                "description": "A token the operator issued (--http-tokens-file); its name is the caller in the audit log."
            }}),
        );
        security_requirements.push(json!({"schemes": {BEARER: {"list": []}}}));
    }
    AgentCard {
        name: "talos-mcp".into(),
        description: "Safe access to Talos Linux clusters: read tools, and write and destructive tools that need confirmation, run as tasks with an audit trail.".into(),
        supported_interfaces: vec![AgentInterface {
            url: format!("{}/a2a", settings.base_url.trim_end_matches('/')),
            protocol_binding: "JSONRPC".into(),
            protocol_version: PROTOCOL_VERSION.into(),
        }],
        version: env!("CARGO_PKG_VERSION").into(),
        capabilities: AgentCapabilities {
            streaming: true,
            push_notifications: false,
            extended_agent_card: false,
        },
        security_schemes,
        security_requirements,
        default_input_modes: vec!["application/json".into(), "text/plain".into()],
        default_output_modes: vec!["application/json".into(), "text/plain".into()],
        skills,
    }
}
