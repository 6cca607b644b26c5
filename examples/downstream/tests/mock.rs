//! The skew logic against talos-client's mock: every answer is chosen here.

use std::sync::Arc;

use talos_client::{MockTalosApi, TalosError, Target, VersionInfo};
use talos_version_skew::{NodeVersion, version_skew};

fn version(tag: &str) -> VersionInfo {
    VersionInfo {
        tag: tag.to_owned(),
        ..VersionInfo::default()
    }
}

fn nodes(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

/// A mock that answers each node with its entry in `answers` (`None`: the node is down).
fn mock(answers: &'static [(&'static str, Option<&'static str>)]) -> Arc<MockTalosApi> {
    let mut api = MockTalosApi::new();
    api.expect_version()
        .times(answers.len())
        .returning(move |opts| {
            let node = opts.node.clone().unwrap_or_default();
            match answers.iter().find(|(n, _)| *n == node) {
                Some((_, Some(tag))) => Ok(version(tag)),
                _ => Err(TalosError::Connection {
                    target: Target {
                        endpoint: Some("10.0.0.1:50000".into()),
                        node: Some(node),
                    },
                    message: "connection refused".into(),
                }),
            }
        });
    Arc::new(api)
}

#[tokio::test]
async fn older_unrecognised_and_unreachable_nodes_are_told_apart() {
    let api = mock(&[
        ("cp-1", Some("v1.10.0")),
        ("cp-2", Some("v1.9.12")),
        ("w-1", Some("v1.10.0")),
        ("w-2", None),
        ("w-3", Some("dev-build")),
        ("w-4", Some("v1.10.0-beta.0")),
    ]);
    let report = version_skew(
        api,
        &nodes(&["cp-1", "cp-2", "w-1", "w-2", "w-3", "w-4"]),
        2,
    )
    .await;
    // v1.10.0 is newer than v1.9.12 (not a string comparison) and than its own beta.
    assert_eq!(report.newest.as_deref(), Some("v1.10.0"));
    assert_eq!(report.current, nodes(&["cp-1", "w-1"]));
    assert_eq!(
        report.behind,
        vec![
            NodeVersion {
                node: "cp-2".into(),
                tag: "v1.9.12".into()
            },
            NodeVersion {
                node: "w-4".into(),
                tag: "v1.10.0-beta.0".into()
            },
        ]
    );
    assert_eq!(report.unrecognised.len(), 1);
    assert_eq!(report.unrecognised[0].node, "w-3");
    assert_eq!(report.unreachable.len(), 1);
    assert_eq!(report.unreachable[0].0, "w-2");
    assert!(
        report.unreachable[0].1.contains("connection refused"),
        "{:?}",
        report.unreachable
    );
    assert!(!report.is_uniform());
}

#[tokio::test]
async fn a_uniform_cluster_is_uniform_and_nobody_answering_is_not() {
    let api = mock(&[("a", Some("v1.11.5")), ("b", Some("v1.11.5"))]);
    let report = version_skew(api, &nodes(&["a", "b"]), 16).await;
    assert!(report.is_uniform(), "{report:?}");
    assert_eq!(report.current, nodes(&["a", "b"]));

    let api = mock(&[("a", None), ("b", None)]);
    let report = version_skew(api, &nodes(&["a", "b"]), 16).await;
    assert_eq!(report.newest, None);
    assert_eq!(report.unreachable.len(), 2);
    assert!(!report.is_uniform());
}
