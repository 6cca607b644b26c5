//! `completion/complete`: suggestions for prompt arguments and resource-template parameters.
//!
//! Arguments are completed by name: `context` (the served contexts), `node` (the addresses the
//! context allows and the hostnames its nodes reported), `service` (the services of the node
//! named in the request's context, asked of that node) and `resource_type` (well-known COSI
//! types, secrets excluded). Suggestions are prefix matches, case-insensitive, de-duplicated,
//! sorted, at most [`CompletionInfo::MAX_VALUES`] with `hasMore` and `total`. A prompt,
//! template or argument the server does not have, an over-long value, or a failed or slow
//! Talos call gives an empty completion, never an error that says why.

use std::time::Duration;

use rmcp::model::{CompleteRequestParams, CompleteResult, CompletionInfo, Reference};
use talos_client::{CallOptions, fan_out};

use crate::server::TalosMcp;

/// Longest argument name considered.
pub(crate) const MAX_NAME: usize = 64;
/// Longest argument value (and context value) considered; longer gives no suggestions.
pub(crate) const MAX_VALUE: usize = 256;
/// How long a Talos call made for a completion may take.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Hostnames looked up per completion, at most.
const MAX_LOOKUPS: usize = 32;

/// Well-known COSI resource types (non-secret) suggested for `resource_type`.
pub(crate) const RESOURCE_TYPES: &[&str] = &[
    "Addresses.net.talos.dev",
    "AddressStatuses.net.talos.dev",
    "CPUs.hardware.talos.dev",
    "Disks.block.talos.dev",
    "DiscoveredVolumes.block.talos.dev",
    "EtcFileStatuses.files.talos.dev",
    "ExtensionStatuses.runtime.talos.dev",
    "HostnameStatuses.net.talos.dev",
    "Identities.cluster.talos.dev",
    "KernelModuleSpecs.runtime.talos.dev",
    "KubeletSpecs.kubernetes.talos.dev",
    "LinkStatuses.net.talos.dev",
    "MachineStatuses.runtime.talos.dev",
    "MachineTypes.config.talos.dev",
    "Members.cluster.talos.dev",
    "MemoryModules.hardware.talos.dev",
    "MountStatuses.runtime.talos.dev",
    "NodeAddresses.net.talos.dev",
    "Nodenames.kubernetes.talos.dev",
    "NodeStatuses.kubernetes.talos.dev",
    "Processors.hardware.talos.dev",
    "ResolverStatuses.net.talos.dev",
    "RouteStatuses.net.talos.dev",
    "Services.v1alpha1.talos.dev",
    "StaticPodStatuses.kubernetes.talos.dev",
    "SystemInformations.hardware.talos.dev",
    "TimeServerStatuses.net.talos.dev",
    "TimeStatuses.v1alpha1.talos.dev",
    "VolumeStatuses.block.talos.dev",
];

/// What an argument completes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Context,
    Node,
    Service,
    ResourceType,
}

fn kind_of(argument: &str) -> Option<Kind> {
    match argument {
        "context" => Some(Kind::Context),
        "node" => Some(Kind::Node),
        "service" => Some(Kind::Service),
        "resource_type" => Some(Kind::ResourceType),
        _ => None,
    }
}

/// Whether the referenced prompt or template has the argument at all.
fn has_argument(server: &TalosMcp, reference: &Reference, argument: &str) -> bool {
    match reference {
        Reference::Prompt(p) => server
            .prompt_router
            .list_all()
            .iter()
            .filter(|prompt| prompt.name == p.name)
            .flat_map(|prompt| prompt.arguments.iter().flatten())
            .any(|a| a.name == argument),
        Reference::Resource(r) => {
            crate::resources::templates()
                .resource_templates
                .iter()
                .any(|t| {
                    t.uri_template == r.uri && t.uri_template.contains(&format!("{{{argument}}}"))
                })
        }
        _ => false,
    }
}

/// A value from the request's already-resolved arguments, if present and of sane length.
fn resolved<'a>(request: &'a CompleteRequestParams, name: &str) -> Option<&'a str> {
    let value = request.context.as_ref()?.arguments.as_ref()?.get(name)?;
    let value = value.trim();
    (!value.is_empty() && value.len() <= MAX_VALUE).then_some(value)
}

/// Answers `completion/complete`.
pub(crate) async fn complete(server: &TalosMcp, request: &CompleteRequestParams) -> CompleteResult {
    let argument = &request.argument;
    if argument.name.len() > MAX_NAME || argument.value.len() > MAX_VALUE {
        return CompleteResult::default();
    }
    let Some(kind) = kind_of(&argument.name) else {
        return CompleteResult::default();
    };
    if !has_argument(server, &request.r#ref, &argument.name) {
        return CompleteResult::default();
    }
    let context = resolved(request, "context");
    let candidates = match kind {
        Kind::Context => server.clusters.context_names(),
        Kind::ResourceType => RESOURCE_TYPES.iter().map(|t| (*t).to_owned()).collect(),
        Kind::Node => nodes(server, context).await,
        Kind::Service => match resolved(request, "node") {
            Some(node) => services(server, context, node).await,
            None => Vec::new(),
        },
    };
    CompleteResult::new(matching(candidates, &argument.value))
}

/// Prefix matches of `prefix` (case-insensitive), sorted, de-duplicated, capped.
pub(crate) fn matching(candidates: Vec<String>, prefix: &str) -> CompletionInfo {
    let prefix = prefix.to_lowercase();
    let mut values: Vec<String> = candidates
        .into_iter()
        .filter(|c| c.to_lowercase().starts_with(&prefix))
        .collect();
    values.sort();
    values.dedup();
    let total = values.len();
    let has_more = total > CompletionInfo::MAX_VALUES;
    values.truncate(CompletionInfo::MAX_VALUES);
    let mut info = CompletionInfo::default();
    info.values = values;
    info.total = u32::try_from(total).ok();
    info.has_more = Some(has_more);
    info
}

/// The nodes a context allows, and the hostnames they reported (looked up for nodes not seen
/// before, briefly).
async fn nodes(server: &TalosMcp, context: Option<&str>) -> Vec<String> {
    let Ok(entry) = server.clusters.entry(context) else {
        return Vec::new();
    };
    let addresses = entry.node_addresses();
    let unknown: Vec<String> = addresses
        .iter()
        .filter(|a| a.parse::<std::net::IpAddr>().is_ok() && entry.hostname(a).is_none())
        .take(MAX_LOOKUPS)
        .cloned()
        .collect();
    if !unknown.is_empty() {
        let api = entry.api.clone();
        let lookups = fan_out(&unknown, server.settings.fan_out_limit, |node| {
            let api = api.clone();
            async move { api.hostname(&CallOptions::node(node)).await }
        });
        // All lookups share one deadline; a slow node costs the suggestions their hostnames.
        let lookups = tokio::time::timeout(CALL_TIMEOUT, lookups)
            .await
            .unwrap_or_default();
        for r in lookups {
            if let Ok(hostname) = r.result {
                entry.remember_hostname(&r.node, &hostname);
            }
        }
    }
    let mut out = entry.node_addresses();
    out.extend(out.clone().iter().filter_map(|a| entry.hostname(a)));
    out
}

/// The services of one allowed node; nothing if the node is not allowed or does not answer in
/// time.
async fn services(server: &TalosMcp, context: Option<&str>, node: &str) -> Vec<String> {
    let call = async {
        let (entry, node) = server.clusters.single(context, Some(node)).await.ok()?;
        entry.api.services(&CallOptions::node(node)).await.ok()
    };
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Some(list)) => list.into_iter().map(|s| s.id).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_is_case_insensitive_deduplicated_and_capped() {
        let info = matching(
            vec![
                "Etcd".into(),
                "etcd".into(),
                "kubelet".into(),
                "etcd".into(),
            ],
            "ET",
        );
        assert_eq!(info.values, vec!["Etcd", "etcd"]);
        assert_eq!(info.total, Some(2));
        assert_eq!(info.has_more, Some(false));

        let many: Vec<String> = (0..250).map(|i| format!("10.0.0.{i}")).collect();
        let info = matching(many, "10.");
        assert_eq!(info.values.len(), CompletionInfo::MAX_VALUES);
        assert_eq!(info.total, Some(250));
        assert_eq!(info.has_more, Some(true));
        assert!(info.validate().is_ok());
    }

    #[test]
    fn argument_kinds() {
        assert_eq!(kind_of("context"), Some(Kind::Context));
        assert_eq!(kind_of("node"), Some(Kind::Node));
        assert_eq!(kind_of("service"), Some(Kind::Service));
        assert_eq!(kind_of("change"), None);
    }

    #[test]
    fn no_secret_resource_types() {
        for t in RESOURCE_TYPES {
            let lower = t.to_ascii_lowercase();
            assert!(
                !lower.ends_with(".secrets.talos.dev") && !lower.starts_with("machineconfigs"),
                "{t}"
            );
        }
    }
}
