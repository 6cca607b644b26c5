//! Talos version skew across nodes: which nodes run an older Talos than the newest one seen,
//! which report a version that is not a release tag, and which could not be asked.
//!
//! A small library built on `talos-client` as another project would build one: it takes any
//! [`TalosApi`] (the gRPC client in production, the mock in unit tests) and a list of nodes, asks
//! every node through [`fan_out`], and compares release tags numerically (`v1.9.0` is older than
//! `v1.10.0`, and a pre-release older than its release).

use std::cmp::Ordering;
use std::sync::Arc;

use talos_client::{CallOptions, TalosApi, fan_out};

/// A Talos release tag, `vMAJOR.MINOR.PATCH` with an optional `-pre-release` suffix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    numbers: [u64; 3],
    pre: Option<String>,
}

impl Release {
    /// Parses `v1.11.5` or `v1.12.0-beta.1`; anything else is `None`.
    pub fn parse(tag: &str) -> Option<Self> {
        let rest = tag.strip_prefix('v')?;
        let (core, pre) = match rest.split_once('-') {
            Some((core, pre)) if !pre.is_empty() => (core, Some(pre.to_owned())),
            Some(_) => return None,
            None => (rest, None),
        };
        let mut parts = core.split('.');
        let mut numbers = [0u64; 3];
        for n in &mut numbers {
            let part = parts.next()?;
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            *n = part.parse().ok()?;
        }
        parts.next().is_none().then_some(Self { numbers, pre })
    }
}

impl Ord for Release {
    fn cmp(&self, other: &Self) -> Ordering {
        self.numbers
            .cmp(&other.numbers)
            .then_with(|| match (&self.pre, &other.pre) {
                (None, None) => Ordering::Equal,
                // A release is newer than any of its pre-releases.
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(a), Some(b)) => a.cmp(b),
            })
    }
}

impl PartialOrd for Release {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// What one node runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeVersion {
    /// The node as asked.
    pub node: String,
    /// The tag it reported.
    pub tag: String,
}

/// The skew across the nodes asked, each list in the order the nodes were given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SkewReport {
    /// The newest release any node runs.
    pub newest: Option<String>,
    /// Nodes running the newest release.
    pub current: Vec<String>,
    /// Nodes running an older release.
    pub behind: Vec<NodeVersion>,
    /// Nodes whose tag is not a release tag (a development build, say).
    pub unrecognised: Vec<NodeVersion>,
    /// Nodes that could not be asked, with the client's error message.
    pub unreachable: Vec<(String, String)>,
}

impl SkewReport {
    /// Whether every node answered and runs the same release.
    pub fn is_uniform(&self) -> bool {
        self.newest.is_some()
            && self.behind.is_empty()
            && self.unrecognised.is_empty()
            && self.unreachable.is_empty()
    }
}

/// Asks every node for its version (at most `limit` at once) and reports the skew.
pub async fn version_skew(api: Arc<dyn TalosApi>, nodes: &[String], limit: usize) -> SkewReport {
    let results = fan_out(nodes, limit, |node| {
        let api = api.clone();
        async move { api.version(&CallOptions::node(node)).await }
    })
    .await;

    let mut report = SkewReport::default();
    let mut releases = Vec::new();
    for r in results {
        match r.result {
            Err(e) => report.unreachable.push((r.node, e.to_string())),
            Ok(v) => match Release::parse(&v.tag) {
                Some(release) => releases.push((r.node, v.tag, release)),
                None => report.unrecognised.push(NodeVersion {
                    node: r.node,
                    tag: v.tag,
                }),
            },
        }
    }
    let Some(newest) = releases.iter().map(|(_, _, rel)| rel).max().cloned() else {
        return report;
    };
    for (node, tag, release) in releases {
        if release == newest {
            report.newest = Some(tag);
            report.current.push(node);
        } else {
            report.behind.push(NodeVersion { node, tag });
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_compare_numerically() {
        let r = |t: &str| Release::parse(t).unwrap_or_else(|| panic!("{t}"));
        assert!(r("v1.9.0") < r("v1.10.0"));
        assert!(r("v1.10.7") < r("v1.11.0"));
        assert!(r("v1.12.0-beta.1") < r("v1.12.0"));
        assert!(r("v1.12.0-alpha.2") < r("v1.12.0-beta.1"));
        assert_eq!(r("v1.11.5"), r("v1.11.5"));
    }

    #[test]
    fn non_release_tags_are_not_releases() {
        for tag in [
            "1.11.5",
            "v1.11",
            "v1.11.5.1",
            "v1..5",
            "v1.11.x",
            "v1.11.5-",
            "",
            "latest",
        ] {
            assert_eq!(Release::parse(tag), None, "{tag}");
        }
    }
}
