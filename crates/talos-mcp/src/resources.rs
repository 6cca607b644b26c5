//! Resources: the list of contexts, and per-node views by URI template.
//!
//! - `talos://contexts` — contexts with endpoints and nodes (no secrets).
//! - `talos://{context}/nodes/{node}/version`
//! - `talos://{context}/nodes/{node}/services`
//! - `talos://{context}/nodes/{node}/machineconfig` — the machine config with secrets redacted.
//! - `talos://{context}/nodes/{node}/resources/{resource_type}` — the node's COSI resources of a
//!   type, read exactly as `talos_get` reads them (secret types and machine configs refused,
//!   specs redacted), cut to the output cap.

use rmcp::ErrorData;
use rmcp::model::{
    ListResourceTemplatesResult, ListResourcesResult, ReadResourceResult, Resource,
    ResourceContents, ResourceTemplate,
};
use serde_json::json;
use talos_client::CallOptions;

use crate::server::TalosMcp;

const CONTEXTS_URI: &str = "talos://contexts";
/// The template of a node's COSI resources of one type. Its parameter names are the ones
/// `completion/complete` completes.
pub(crate) const RESOURCES_TEMPLATE: &str =
    "talos://{context}/nodes/{node}/resources/{resource_type}";
/// Longest URI part (context, node, resource type) a read considers.
pub(crate) const MAX_PART: usize = crate::completions::MAX_VALUE;

/// Whether `t` can be a COSI resource type or alias: ASCII letters, digits, `.`, `-`, `_`.
pub(crate) fn is_type_name(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= MAX_PART
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

pub(crate) fn list(server: &TalosMcp) -> ListResourcesResult {
    let mut resources = vec![
        Resource::new(CONTEXTS_URI, "contexts")
            .with_title("Talos contexts")
            .with_description(
                "talosconfig contexts with their endpoints and nodes (no credentials).",
            )
            .with_mime_type("application/json"),
    ];
    // Concrete per-node resources for the default context, so clients without template support
    // still see them.
    if let Some(default) = server.clusters.default_context() {
        for (name, _, nodes) in server.clusters.summaries() {
            if name != default {
                continue;
            }
            for node in nodes {
                resources.push(
                    Resource::new(
                        format!("talos://{name}/nodes/{node}/version"),
                        format!("{node} version"),
                    )
                    .with_mime_type("application/json"),
                );
            }
        }
    }
    ListResourcesResult::with_all_items(resources)
}

pub(crate) fn templates() -> ListResourceTemplatesResult {
    ListResourceTemplatesResult::with_all_items(vec![
        ResourceTemplate::new("talos://{context}/nodes/{node}/version", "node-version")
            .with_title("Node version")
            .with_description("Talos version of a node.")
            .with_mime_type("application/json"),
        ResourceTemplate::new("talos://{context}/nodes/{node}/services", "node-services")
            .with_title("Node services")
            .with_description("Talos services of a node with state and health.")
            .with_mime_type("application/json"),
        ResourceTemplate::new("talos://{context}/nodes/{node}/machineconfig", "node-machineconfig")
            .with_title("Node machine config (redacted)")
            .with_description("The node's machine configuration with keys, tokens and secrets redacted. Needs the os:admin role.")
            .with_mime_type("application/yaml"),
        ResourceTemplate::new(RESOURCES_TEMPLATE, "node-resources")
            .with_title("Node COSI resources")
            .with_description("The node's COSI resources of one type (full name or alias, like talos_get), specs redacted. Secret types and machine configs are refused.")
            .with_mime_type("application/json"),
    ])
}

fn json_contents(uri: &str, value: &serde_json::Value) -> ReadResourceResult {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    ReadResourceResult::new(vec![ResourceContents::TextResourceContents {
        uri: uri.to_owned(),
        mime_type: Some("application/json".into()),
        text,
        meta: None,
    }])
}

/// Reads a resource by URI. Unknown URIs are protocol errors (resource not found); failures of
/// the Talos call are reported as internal errors with the error kind.
pub(crate) async fn read(server: &TalosMcp, uri: &str) -> Result<ReadResourceResult, ErrorData> {
    if uri == CONTEXTS_URI {
        let contexts: Vec<_> = server
            .clusters
            .summaries()
            .into_iter()
            .map(|(name, endpoints, nodes)| {
                json!({
                    "name": name,
                    "current": server.clusters.default_context() == Some(name.as_str()),
                    "endpoints": endpoints,
                    "nodes": nodes,
                })
            })
            .collect();
        return Ok(json_contents(uri, &json!({ "contexts": contexts })));
    }
    let not_found = || {
        ErrorData::resource_not_found(
            format!("no resource {uri}; see resources/templates/list"),
            Some(json!({ "uri": uri })),
        )
    };
    let rest = uri.strip_prefix("talos://").ok_or_else(not_found)?;
    let parts: Vec<&str> = rest.split('/').collect();
    let tool_error = |e: crate::ToolError| ErrorData::invalid_params(e.to_string(), None);
    if let [context, "nodes", node, "resources", resource_type] = parts.as_slice() {
        return read_resources(server, uri, context, node, resource_type)
            .await
            .map_err(|e| e.unwrap_or_else(not_found));
    }
    let [context, "nodes", node, view] = parts.as_slice() else {
        return Err(not_found());
    };
    let (entry, node) = server
        .clusters
        .single(Some(context), Some(node))
        .await
        .map_err(tool_error)?;
    let opts = CallOptions::node(node.clone());
    let talos_error = |e: talos_client::TalosError| ErrorData::internal_error(e.to_string(), None);
    match *view {
        "version" => {
            let v = entry.api.version(&opts).await.map_err(talos_error)?;
            Ok(json_contents(
                uri,
                &json!({"node": node, "tag": v.tag, "sha": v.sha, "os": v.os, "arch": v.arch, "platform": v.platform}),
            ))
        }
        "services" => {
            let services = entry.api.services(&opts).await.map_err(talos_error)?;
            let list: Vec<_> = services
                .into_iter()
                .map(|s| json!({"id": s.id, "state": s.state, "healthy": s.health.healthy, "health_unknown": s.health.unknown}))
                .collect();
            Ok(json_contents(uri, &json!({"node": node, "services": list})))
        }
        "machineconfig" => {
            let text = crate::tools::lifecycle::redacted_machine_config(entry.api.as_ref(), &opts)
                .await
                .map_err(talos_error)?;
            Ok(ReadResourceResult::new(vec![
                ResourceContents::TextResourceContents {
                    uri: uri.to_owned(),
                    mime_type: Some("application/yaml".into()),
                    text,
                    meta: None,
                },
            ]))
        }
        _ => Err(not_found()),
    }
}

/// Reads `talos://{context}/nodes/{node}/resources/{resource_type}` through `talos_get`'s own
/// per-node read: the same node allowlist, type resolution, refusal of secret types and
/// redaction; the listing is cut to the output cap. `Err(None)` means "no such resource".
async fn read_resources(
    server: &TalosMcp,
    uri: &str,
    context: &str,
    node: &str,
    resource_type: &str,
) -> Result<ReadResourceResult, Option<ErrorData>> {
    if [context, node, resource_type]
        .iter()
        .any(|p| p.is_empty() || p.len() > MAX_PART)
    {
        return Err(None);
    }
    if !is_type_name(resource_type) {
        return Err(Some(ErrorData::invalid_params(
            "resource_type must be a COSI type name or alias (letters, digits, `.`, `-`, `_`), \
             e.g. `members` or `Members.cluster.talos.dev`",
            None,
        )));
    }
    let (entry, node) = server
        .clusters
        .single(Some(context), Some(node))
        .await
        .map_err(|e| Some(ErrorData::invalid_params(e.to_string(), None)))?;
    let opts = CallOptions::node(node.clone());
    let limit = crate::tools::cluster::GET_DEFAULT_LIMIT as usize;
    let read = crate::tools::cluster::get_on_node(
        entry.api.as_ref(),
        &opts,
        resource_type,
        None,
        None,
        limit,
    )
    .await
    .map_err(|e| {
        // An unknown type is the client's to fix, not a server failure.
        Some(match e.kind() {
            talos_client::ErrorKind::NotFound => ErrorData::resource_not_found(
                format!(
                    "no resource type `{}` on this node",
                    crate::error::echo(resource_type)
                ),
                None,
            ),
            _ => ErrorData::internal_error(e.to_string(), None),
        })
    })?;
    let resources = match read {
        Ok(resources) => resources,
        Err(full) => {
            let refusal = crate::tools::cluster::refusal(&full);
            return Err(Some(ErrorData::invalid_params(refusal.to_string(), None)));
        }
    };
    let mut value = json!({
        "node": node,
        "resource_type": resource_type,
        "resources": resources,
        "truncated": false,
    });
    let cap = server.settings.output_cap;
    if crate::output::cap_value(&mut value, cap, crate::output::Keep::First) {
        value["truncated"] = json!(true);
    }
    // Compact, so the text is the size the cap measured.
    let text = serde_json::to_string(&value).unwrap_or_default();
    Ok(ReadResourceResult::new(vec![
        ResourceContents::TextResourceContents {
            uri: uri.to_owned(),
            mime_type: Some("application/json".into()),
            text,
            meta: None,
        },
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_are_strict() {
        assert!(is_type_name("members"));
        assert!(is_type_name("Members.cluster.talos.dev"));
        for bad in [
            "",
            "a b",
            "x%2Fy",
            "a/b",
            "..?",
            "é",
            &"a".repeat(MAX_PART + 1),
        ] {
            assert!(!is_type_name(bad), "{bad}");
        }
    }

    #[test]
    fn the_resources_template_has_completable_parameters() {
        let t = templates();
        assert!(
            t.resource_templates
                .iter()
                .any(|t| t.uri_template == RESOURCES_TEMPLATE)
        );
        for p in ["{context}", "{node}", "{resource_type}"] {
            assert!(RESOURCES_TEMPLATE.contains(p), "{p}");
        }
    }
}
