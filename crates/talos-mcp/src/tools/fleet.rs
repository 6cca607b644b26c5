//! Fleet: several clusters (talosconfig contexts) side by side.
//!
//! `talos_compare` surveys every compared context concurrently — each node's Talos version and
//! machine configuration (Kubernetes version from its kubelet image), and the context's etcd
//! verdict — then compares each configuration with a reference node's. Secret values are
//! compared as they are but never shown: a difference the redaction hides (or a value under a
//! redacted key) is reported only as `differs (secret)`.

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;
use talos_client::TalosError;

use crate::call::{Call, Reply};
use crate::error::ToolError;
use crate::output::Keep;
use crate::registry::{CallTarget, ToolArgs, ToolDef, Toolset, tool};
use crate::server::{TalosMcp, TargetArgs};

/// Most contexts one comparison takes.
pub(crate) const MAX_CONTEXTS: usize = 16;
/// Most differing keys listed per section (the rest are counted).
pub(crate) const MAX_KEYS_PER_SECTION: usize = 12;
/// Most sections with differences listed per node (the rest are counted).
const MAX_SECTIONS: usize = 16;
/// Longest value shown in a difference.
const MAX_SHOWN: usize = 48;
/// Longest machine configuration compared (Talos's are tens of KiB).
const MAX_CONFIG: usize = 1 << 20;

/// Arguments of talos_compare.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct CompareArgs {
    // No doc comments: the tool's description says what they mean (the listing is budgeted).
    #[serde(default)]
    pub contexts: Option<Vec<String>>,
    #[serde(default)]
    pub context: Option<String>,
    #[serde(default)]
    pub node: Option<String>,
}

impl ToolArgs for CompareArgs {
    fn target(&self) -> CallTarget<'_> {
        CallTarget {
            context: self.context.as_deref(),
            nodes: self.node.as_deref().into_iter().collect(),
        }
    }
}

/// The comparison.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CompareOut {
    /// The reference node, `context/node`, or why there is none.
    pub reference: String,
    pub contexts: Vec<ClusterOut>,
}

/// One context: `context`, `etcd` (verdict), `error` (when it could not be surveyed) and
/// `nodes`.
#[derive(Debug, Serialize)]
pub struct ClusterOut {
    pub context: String,
    pub etcd: String,
    pub error: Option<String>,
    pub nodes: Vec<FleetNodeOut>,
}

// Its schema is just "an object": the listing stays small (the tool description and the
// field names say what is in it).
impl JsonSchema for ClusterOut {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ClusterOut".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "object" })
    }
}

/// One node.
#[derive(Debug, Serialize)]
pub struct FleetNodeOut {
    pub node: String,
    pub hostname: Option<String>,
    pub reachable: bool,
    pub error: Option<String>,
    pub talos_version: Option<String>,
    pub kubernetes_version: Option<String>,
    /// Sections that differ from the reference; empty: the same.
    pub drift: Option<Vec<SectionDrift>>,
    /// Why there is no drift.
    pub config_error: Option<String>,
}

/// Differences in one section of the machine config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SectionDrift {
    pub section: String,
    /// `key: reference → this`, or `key: differs (secret)`.
    pub keys: Vec<String>,
    /// Differing keys not listed.
    pub more: usize,
}

/// A machine configuration as read from a node: compared, never shown or logged.
struct RawConfig(String);

impl std::fmt::Debug for RawConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawConfig({} bytes, withheld)", self.0.len())
    }
}

/// What one node told the survey.
#[derive(Debug)]
struct NodeSurvey {
    talos_version: String,
    config: Result<RawConfig, String>,
}

/// What one context told the survey.
#[derive(Debug)]
struct ContextSurvey {
    context: String,
    etcd: String,
    error: Option<String>,
    nodes: Vec<(crate::output::NodeOutcome<NodeSurvey>, Option<String>)>,
}

/// The contexts a call compares: the named ones (trimmed, de-duplicated, at most
/// [`MAX_CONTEXTS`], each served) or every served context.
pub(crate) fn chosen_contexts(
    asked: Option<&[String]>,
    served: &[String],
) -> Result<Vec<String>, ToolError> {
    let Some(asked) = asked.filter(|a| !a.is_empty()) else {
        if served.is_empty() {
            return Err(ToolError::invalid(
                "contexts",
                "the server serves no context to compare",
            ));
        }
        return Ok(served.iter().take(MAX_CONTEXTS).cloned().collect());
    };
    let mut seen = BTreeSet::new();
    let out: Vec<String> = asked
        .iter()
        .map(|n| n.trim().to_owned())
        .filter(|n| seen.insert(n.clone()))
        .collect();
    if out.len() > MAX_CONTEXTS {
        return Err(ToolError::invalid(
            "contexts",
            format!("at most {MAX_CONTEXTS} distinct contexts"),
        ));
    }
    if let Some(unknown) = out.iter().find(|n| !served.contains(n)) {
        return Err(ToolError::UnknownContext {
            name: unknown.clone(),
            available: served.to_vec(),
        });
    }
    Ok(out)
}

/// The Kubernetes version a machine config runs: the tag of its kubelet image.
fn kubernetes_version(config: &str) -> Option<String> {
    let doc: Value = serde_yaml_ng::Deserializer::from_str(config)
        .next()
        .and_then(|d| Value::deserialize(d).ok())?;
    let image = doc.get("machine")?.get("kubelet")?.get("image")?.as_str()?;
    let image = image.split('@').next().unwrap_or(image);
    let (name, tag) = image.rsplit_once(':')?;
    (!tag.contains('/') && !name.is_empty() && !tag.is_empty()).then(|| crate::error::clip(tag, 64))
}

/// One leaf of a configuration: its value, and what the redacted document holds there
/// (`None`: nothing that may be shown — the value or a parent was withheld).
struct Leaf {
    raw: Value,
    shown: Option<Value>,
}

/// A configuration as leaves by (section, path). The v1alpha1 document's sections are its
/// top-level keys; other documents are a section each, named by `kind` and `name`.
fn leaves(config: &str) -> Result<BTreeMap<(String, String), Leaf>, String> {
    let mut out = BTreeMap::new();
    for doc in serde_yaml_ng::Deserializer::from_str(config) {
        let raw = Value::deserialize(doc)
            .map_err(|_| "the machine config could not be parsed".to_owned())?;
        let mut redacted = raw.clone();
        crate::redact::redact_value(&mut redacted);
        let kind = raw.get("kind").and_then(Value::as_str);
        match (kind, &raw) {
            (Some(kind), _) => {
                let section = match raw.get("name").and_then(Value::as_str) {
                    Some(name) => format!("{kind}/{name}"),
                    None => kind.to_owned(),
                };
                let section = crate::error::clip(&section, 64);
                flatten(&raw, Some(&redacted), String::new(), &mut |path, leaf| {
                    out.insert((section.clone(), path), leaf);
                });
            }
            (None, Value::Mapping(map)) => {
                for (k, v) in map {
                    let key = key_text(k);
                    let shown = redacted.get(k);
                    flatten(v, shown, key.clone(), &mut |path, leaf| {
                        out.insert((key.clone(), path), leaf);
                    });
                }
            }
            (None, Value::Null) => {}
            (None, other) => {
                flatten(other, Some(&redacted), String::new(), &mut |path, leaf| {
                    out.insert((String::new(), path), leaf);
                });
            }
        }
    }
    Ok(out)
}

fn key_text(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        other => serde_yaml_ng::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_owned(),
    }
}

/// Whether a redacted value was withheld (whole or in part).
fn withheld(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains(crate::redact::REDACTED),
        _ => false,
    }
}

/// Calls `leaf` for every scalar (or empty collection) under `raw`, with its path and what
/// the redacted twin holds there.
fn flatten(raw: &Value, shown: Option<&Value>, path: String, leaf: &mut dyn FnMut(String, Leaf)) {
    // A withheld redacted twin stands for everything below it (and a partly withheld string
    // is not shown either).
    let shown = shown.filter(|s| !withheld(s));
    let join = |p: &str, k: &str| {
        if p.is_empty() {
            k.to_owned()
        } else {
            format!("{p}.{k}")
        }
    };
    match raw {
        Value::Mapping(map) if !map.is_empty() => {
            for (k, v) in map {
                let key = key_text(k);
                flatten(v, shown.and_then(|s| s.get(k)), join(&path, &key), leaf);
            }
        }
        Value::Sequence(items) if !items.is_empty() => {
            for (i, v) in items.iter().enumerate() {
                flatten(
                    v,
                    shown.and_then(|s| s.get(i)),
                    format!("{path}[{i}]"),
                    leaf,
                );
            }
        }
        Value::Tagged(t) => flatten(&t.value, shown, path, leaf),
        _ => leaf(
            path,
            Leaf {
                raw: raw.clone(),
                shown: shown.cloned(),
            },
        ),
    }
}

/// A value as shown in a difference: short scalars only.
fn show(v: &Value) -> Option<String> {
    let text = match v {
        Value::String(s) => format!("{s:?}"),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => "null".to_owned(),
        Value::Sequence(_) => "[]".to_owned(),
        Value::Mapping(_) => "{}".to_owned(),
        Value::Tagged(_) => return None,
    };
    (text.len() <= MAX_SHOWN && !text.contains('\n') && !text.contains("\\n")).then_some(text)
}

/// How `path` differs between the reference leaf and this node's, if it does.
fn difference(path: &str, reference: Option<&Leaf>, this: Option<&Leaf>) -> Option<String> {
    let path = if path.is_empty() { "(value)" } else { path };
    match (reference, this) {
        (None, None) => None,
        (Some(_), None) => Some(format!("{path}: only on the reference")),
        (None, Some(_)) => Some(format!("{path}: not on the reference")),
        (Some(r), Some(t)) if r.raw == t.raw => None,
        (Some(r), Some(t)) => match (&r.shown, &t.shown) {
            (Some(rs), Some(ts)) if rs != ts => match (show(rs), show(ts)) {
                (Some(a), Some(b)) => Some(format!("{path}: {a} → {b}")),
                _ => Some(format!("{path}: differs")),
            },
            // The redaction hides the difference (or the value): a secret.
            _ => Some(format!("{path}: differs (secret)")),
        },
    }
}

/// The differences of `this` from `reference`, by section, bounded.
pub(crate) fn drift(reference: &str, this: &str) -> Result<Vec<SectionDrift>, String> {
    let (reference, this) = (leaves(reference)?, leaves(this)?);
    let keys: BTreeSet<&(String, String)> = reference.keys().chain(this.keys()).collect();
    let mut sections: BTreeMap<&str, SectionDrift> = BTreeMap::new();
    for key in keys {
        let Some(line) = difference(&key.1, reference.get(key), this.get(key)) else {
            continue;
        };
        let section = sections
            .entry(key.0.as_str())
            .or_insert_with(|| SectionDrift {
                section: key.0.clone(),
                keys: Vec::new(),
                more: 0,
            });
        if section.keys.len() < MAX_KEYS_PER_SECTION {
            section.keys.push(crate::error::clip(&line, 200));
        } else {
            section.more += 1;
        }
    }
    let mut out: Vec<SectionDrift> = sections.into_values().collect();
    if out.len() > MAX_SECTIONS {
        let rest: usize = out[MAX_SECTIONS..]
            .iter()
            .map(|s| s.keys.len() + s.more)
            .sum();
        out.truncate(MAX_SECTIONS);
        out.push(SectionDrift {
            section: "(other sections)".into(),
            keys: Vec::new(),
            more: rest,
        });
    }
    Ok(out)
}

/// An error as `Kind: message` (the kind once), clipped.
fn with_kind(kind: &str, message: &str) -> String {
    let text = if message.starts_with(kind) {
        message.to_owned()
    } else {
        format!("{kind}: {message}")
    };
    crate::error::clip(&text, crate::error::MAX_MESSAGE)
}

fn describe(e: &TalosError) -> String {
    with_kind(e.kind().as_str(), &e.to_string())
}

impl TalosMcp {
    /// Surveys one context: every default node's version and machine config, and etcd.
    async fn survey(&self, context: &str) -> ContextSurvey {
        let args = TargetArgs {
            context: Some(context.to_owned()),
            nodes: None,
        };
        let nodes = self.per_node(&args, |api, opts| async move {
            let version = api.version(&opts).await?;
            let config = api
                .resource_get(
                    &opts,
                    "config",
                    "MachineConfigs.config.talos.dev",
                    "v1alpha1",
                )
                .await
                .map_err(|e| describe(&e))
                .and_then(|r| {
                    if r.spec_yaml.len() > MAX_CONFIG {
                        Err(format!("larger than {MAX_CONFIG} bytes"))
                    } else {
                        Ok(RawConfig(r.spec_yaml))
                    }
                });
            Ok(NodeSurvey {
                talos_version: version.tag,
                config,
            })
        });
        let (nodes, etcd) = tokio::join!(nodes, self.etcd_health(&args));
        let etcd = match etcd {
            Ok(out) => format!(
                "{} ({}/{} voting members answered)",
                out.verdict, out.answered, out.voting_members
            ),
            Err(e) => format!("unknown: {}", e.kind()),
        };
        match nodes {
            Ok(per_node) => ContextSurvey {
                context: context.to_owned(),
                etcd,
                error: None,
                nodes: per_node
                    .nodes
                    .into_iter()
                    .map(|n| {
                        let kind = n.error.as_ref().map(|e| e.kind.clone());
                        (n, kind)
                    })
                    .collect(),
            },
            Err(e) => ContextSurvey {
                context: context.to_owned(),
                etcd,
                error: Some(with_kind(&e.kind().to_string(), &e.to_string())),
                nodes: Vec::new(),
            },
        }
    }

    /// The reference node's machine config, read directly (an explicitly named node is checked
    /// against the context's allowlist first).
    async fn reference_config(
        &self,
        context: &str,
        node: &str,
    ) -> Result<(String, RawConfig), ToolError> {
        let targets = self
            .clusters
            .targets(Some(context), Some(&[node.to_owned()]))
            .await?;
        let Some(node) = targets.nodes.first().cloned() else {
            return Err(ToolError::invalid("node", "names no node"));
        };
        let r = targets
            .entry
            .api
            .resource_get(
                &talos_client::CallOptions::node(node.clone()),
                "config",
                "MachineConfigs.config.talos.dev",
                "v1alpha1",
            )
            .await?;
        if r.spec_yaml.len() > MAX_CONFIG {
            return Err(ToolError::invalid(
                "node",
                format!("its machine config is larger than {MAX_CONFIG} bytes"),
            ));
        }
        Ok((node, RawConfig(r.spec_yaml)))
    }

    /// Compares several clusters.
    pub(crate) async fn talos_compare(
        &self,
        _call: &Call,
        args: CompareArgs,
    ) -> Result<Reply<CompareOut>, ToolError> {
        let contexts = chosen_contexts(args.contexts.as_deref(), &self.clusters.context_names())?;
        let current = self
            .clusters
            .default_context()
            .filter(|c| contexts.iter().any(|x| x == c));
        let reference_context = match args.context.as_deref().map(str::trim) {
            None => current.unwrap_or(&contexts[0]).to_owned(),
            Some(c) if contexts.iter().any(|x| x == c) => c.to_owned(),
            Some(c) => {
                return Err(ToolError::invalid(
                    "context",
                    format!(
                        "`{}` is not among the compared contexts: {}",
                        crate::error::echo(c),
                        contexts.join(", ")
                    ),
                ));
            }
        };
        // An explicitly named reference must be reachable and allowed before anything else runs.
        let explicit = match args.node.as_deref() {
            Some(node) => Some(self.reference_config(&reference_context, node).await?),
            None => None,
        };
        let surveys = futures_util::future::join_all(contexts.iter().map(|c| self.survey(c))).await;
        let reference = explicit.or_else(|| {
            surveys
                .iter()
                .find(|s| s.context == reference_context)?
                .nodes
                .iter()
                .find_map(|(n, _)| {
                    let r = n.result.as_ref()?;
                    let c = r.config.as_ref().ok()?;
                    Some((n.node.clone(), RawConfig(c.0.clone())))
                })
        });
        let reference_error = reference.is_none().then(|| {
            format!(
                "no node of `{reference_context}` returned its machine config (reading it needs the os:admin role)"
            )
        });
        let mut reachable = 0;
        let mut total = 0;
        let mut drifting = 0;
        let clusters: Vec<ClusterOut> = surveys
            .into_iter()
            .map(|s| ClusterOut {
                context: s.context,
                etcd: s.etcd,
                error: s.error,
                nodes: s
                    .nodes
                    .into_iter()
                    .map(|(n, kind)| {
                        total += 1;
                        let down = matches!(kind.as_deref(), Some("Connection" | "Timeout"));
                        if !down {
                            reachable += 1;
                        }
                        let (talos_version, kubernetes_version, drift, config_error) =
                            match &n.result {
                                None => (None, None, None, None),
                                Some(r) => match &r.config {
                                    Ok(config) => {
                                        let (drift, err) = match &reference {
                                            Some((_, base)) => match drift(&base.0, &config.0) {
                                                Ok(d) => (Some(d), None),
                                                Err(e) => (None, Some(e)),
                                            },
                                            None => (None, None),
                                        };
                                        if drift.as_ref().is_some_and(|d| !d.is_empty()) {
                                            drifting += 1;
                                        }
                                        (
                                            Some(r.talos_version.clone()),
                                            kubernetes_version(&config.0),
                                            drift,
                                            err,
                                        )
                                    }
                                    Err(e) => {
                                        (Some(r.talos_version.clone()), None, None, Some(e.clone()))
                                    }
                                },
                            };
                        FleetNodeOut {
                            node: n.node,
                            hostname: n.hostname,
                            reachable: !down,
                            error: n.error.map(|e| with_kind(&e.kind, &e.message)),
                            talos_version,
                            kubernetes_version,
                            drift,
                            config_error,
                        }
                    })
                    .collect(),
            })
            .collect();
        let versions: BTreeSet<&str> = clusters
            .iter()
            .flat_map(|c| &c.nodes)
            .filter_map(|n| n.talos_version.as_deref())
            .collect();
        let summary = format!(
            "talos_compare: {} contexts, {reachable}/{total} nodes reachable; Talos {}; {drifting} nodes' configs differ from {}",
            clusters.len(),
            versions.into_iter().collect::<Vec<_>>().join(", "),
            reference.as_ref().map_or_else(
                || "no reference".to_owned(),
                |(n, _)| format!("{reference_context}/{n}")
            ),
        );
        let out = CompareOut {
            reference: match (&reference, reference_error) {
                (Some((n, _)), _) => format!("{reference_context}/{n}"),
                (None, why) => format!("none: {}", why.unwrap_or_default()),
            },
            contexts: clusters,
        };
        Ok(Reply::new(
            &out,
            summary,
            Keep::First,
            "pass fewer `contexts`",
        ))
    }
}

pub(crate) fn tools() -> Vec<ToolDef> {
    vec![
        tool(
            Toolset::Cluster,
            "talos_compare",
            "Compare clusters",
            "Contexts side by side (default: all): per node Talos/Kubernetes versions, etcd verdict, reachability, config drift from `node` in `context` (default: current one's first; secrets hidden).",
        )
        .run(TalosMcp::talos_compare)
        .build(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "version: v1alpha1\nmachine:\n  token: SECRET-A\n  kubelet:\n    image: ghcr.io/siderolabs/kubelet:v1.34.1\n  env:\n    https_proxy: http://u:PASS-A@proxy.a:3128\ncluster:\n  clusterName: a\n  network:\n    cni:\n      name: flannel\n";

    #[test]
    fn secret_differences_are_named_not_shown() {
        let other = BASE
            .replace("SECRET-A", "SECRET-B")
            .replace("PASS-A", "PASS-B")
            .replace("clusterName: a", "clusterName: b")
            .replace("flannel", "none");
        let d = drift(BASE, &other).unwrap();
        let text = format!("{d:?}");
        assert!(
            !text.contains("SECRET-") && !text.contains("PASS-"),
            "{text}"
        );
        let machine = d.iter().find(|s| s.section == "machine").unwrap();
        assert!(
            machine
                .keys
                .contains(&"machine.token: differs (secret)".to_owned()),
            "{machine:?}"
        );
        assert!(
            machine
                .keys
                .contains(&"machine.env.https_proxy: differs (secret)".to_owned()),
            "{machine:?}"
        );
        let cluster = d.iter().find(|s| s.section == "cluster").unwrap();
        assert!(
            cluster
                .keys
                .contains(&"cluster.clusterName: \"a\" → \"b\"".to_owned())
        );
        assert!(
            cluster
                .keys
                .contains(&"cluster.network.cni.name: \"flannel\" → \"none\"".to_owned())
        );
        assert!(drift(BASE, BASE).unwrap().is_empty());
    }

    #[test]
    fn values_under_withheld_subtrees_are_secret() {
        let a = "machine:\n  registries:\n    config:\n      r:\n        auth:\n          username: U1\n          password: P1\n";
        let b = a.replace("U1", "U2");
        let d = drift(a, &b).unwrap();
        assert_eq!(
            d[0].keys,
            vec!["machine.registries.config.r.auth.username: differs (secret)".to_owned()]
        );
        assert!(!format!("{d:?}").contains("U1") && !format!("{d:?}").contains("U2"));
    }

    #[test]
    fn drift_lists_are_bounded() {
        let mut a = String::from("machine:\n  sysctls:\n");
        let mut b = a.clone();
        for i in 0..50 {
            a.push_str(&format!("    k{i:02}: \"1\"\n"));
            b.push_str(&format!("    k{i:02}: \"2\"\n"));
        }
        let d = drift(&a, &b).unwrap();
        assert_eq!(d[0].keys.len(), MAX_KEYS_PER_SECTION);
        assert_eq!(d[0].more, 50 - MAX_KEYS_PER_SECTION);
        let many: String = (0..40).map(|i| format!("s{i:02}: 1\n")).collect();
        let d = drift("{}", &many).unwrap();
        assert_eq!(d.len(), MAX_SECTIONS + 1);
        assert_eq!(d[MAX_SECTIONS].more, 40 - MAX_SECTIONS);
    }

    #[test]
    fn added_and_removed_keys() {
        let d = drift("machine:\n  a: 1\n", "machine:\n  b: 1\n").unwrap();
        assert_eq!(
            d[0].keys,
            vec![
                "machine.a: only on the reference".to_owned(),
                "machine.b: not on the reference".to_owned()
            ]
        );
    }

    #[test]
    fn unparsable_configs_are_an_error_not_a_diff() {
        assert!(drift(BASE, "machine: [unclosed").is_err());
    }

    #[test]
    fn kubernetes_version_comes_from_the_kubelet_image() {
        assert_eq!(kubernetes_version(BASE).as_deref(), Some("v1.34.1"));
        assert_eq!(
            kubernetes_version(
                "machine:\n  kubelet:\n    image: reg:5000/kubelet:v1.33.0@sha256:abc\n"
            )
            .as_deref(),
            Some("v1.33.0")
        );
        assert_eq!(
            kubernetes_version("machine:\n  kubelet:\n    image: reg:5000/kubelet\n"),
            None
        );
        assert_eq!(kubernetes_version("machine: {}\n"), None);
    }

    #[test]
    fn contexts_are_deduplicated_capped_and_checked() {
        let served: Vec<String> = (0..20).map(|i| format!("c{i}")).collect();
        let asked = vec!["c1".to_owned(), " c1".to_owned(), "c2".to_owned()];
        assert_eq!(
            chosen_contexts(Some(&asked), &served).unwrap(),
            vec!["c1", "c2"]
        );
        assert_eq!(chosen_contexts(None, &served).unwrap().len(), MAX_CONTEXTS);
        let too_many: Vec<String> = served.clone();
        assert!(chosen_contexts(Some(&too_many), &served).is_err());
        let unknown = vec!["nope".to_owned()];
        assert!(matches!(
            chosen_contexts(Some(&unknown), &served),
            Err(ToolError::UnknownContext { .. })
        ));
        assert!(chosen_contexts(None, &[]).is_err());
    }
}
