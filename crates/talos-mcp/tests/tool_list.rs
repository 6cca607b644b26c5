//! The tool list is an interface: a snapshot catches unreviewed changes to names, descriptions,
//! schemas and annotations, and docs/tools.md is generated from the same data.
//!
//! After an intended change: `UPDATE_SNAPSHOTS=1 cargo test -p talos-mcp --test tool_list`, then
//! review the diff.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use talos_client::MockTalosApi;
use talos_mcp::TalosMcp;

/// A server with every tier enabled, so the snapshot covers every tool.
fn server() -> TalosMcp {
    let dir = tempfile::tempdir().unwrap();
    let settings = talos_mcp::ServerSettings {
        safety: Arc::new(talos_mcp::safety::SafetySettings {
            allow_write: true,
            allow_destructive: true,
            ..Default::default()
        }),
        ..common::settings(&dir)
    };
    TalosMcp::new(
        common::mock_clusters(Arc::new(MockTalosApi::new()), &["10.5.0.2"]),
        settings,
    )
    .unwrap()
}

fn check(path: PathBuf, fresh: &str) {
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, fresh).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "{} is stale: rerun with UPDATE_SNAPSHOTS=1 and review the diff",
        path.display()
    );
}

#[test]
fn tools_list_matches_the_snapshot() {
    let tools = server().tools();
    let json = serde_json::to_string_pretty(&tools).unwrap() + "\n";
    check(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/tools.json"),
        &json,
    );
}

#[test]
fn docs_tools_md_is_fresh() {
    let md = talos_mcp::tools_markdown(&server().tools());
    check(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/tools.md"),
        &md,
    );
}

#[test]
fn every_tool_is_annotated_and_schematised() {
    let tools = server().tools();
    assert_eq!(tools.len(), TalosMcp::all_tools().len());
    for tool in tools {
        let a = tool
            .annotations
            .as_ref()
            .unwrap_or_else(|| panic!("{} has no annotations", tool.name));
        assert!(a.title.is_some(), "{} has no title", tool.name);
        let tier = TalosMcp::tier_of(&tool.name).unwrap();
        let read = tier == talos_mcp::safety::Tier::Read;
        // Absent hints take the protocol's defaults (read-only false, destructive true,
        // idempotent false).
        assert_eq!(a.read_only_hint.unwrap_or(false), read, "{}", tool.name);
        if read {
            // Hints about changes mean nothing for a read-only tool: left out.
            assert_eq!(a.destructive_hint, None, "{}", tool.name);
            assert_eq!(a.idempotent_hint, None, "{}", tool.name);
        } else {
            assert_eq!(
                a.read_only_hint, None,
                "{}: the default is stated",
                tool.name
            );
            assert_ne!(
                a.destructive_hint,
                Some(true),
                "{}: the default is stated",
                tool.name
            );
            assert_ne!(
                a.idempotent_hint,
                Some(false),
                "{}: the default is stated",
                tool.name
            );
            let props = tool
                .input_schema
                .get("properties")
                .and_then(|p| p.as_object())
                .unwrap();
            if tool.name == "talos_cluster_upgrade" || tool.name == "talos_config_backup" {
                // A rolling upgrade: one plan over many nodes, confirmed as a whole (bound to
                // its digest). A configuration backup changes nothing on the nodes: it reads
                // each node's configuration into a private file on the server.
                assert!(
                    props.contains_key("nodes") && !props.contains_key("node"),
                    "{}",
                    tool.name
                );
            } else {
                assert!(
                    props.contains_key("node") && !props.contains_key("nodes"),
                    "{} must take one node",
                    tool.name
                );
            }
            if tool.name != "talos_config_backup" {
                assert!(props.contains_key("confirmation_token"), "{}", tool.name);
            }
        }
        assert!(
            tool.output_schema.is_some(),
            "{} has no output schema",
            tool.name
        );
        assert!(tool.name.starts_with("talos_"), "{}", tool.name);
        let set = TalosMcp::toolset_of(&tool.name)
            .unwrap_or_else(|| panic!("{} is in no toolset", tool.name));
        assert!(
            talos_mcp::Toolset::parse(set).is_some(),
            "toolset {set} is not a Toolset"
        );
        let props = tool
            .input_schema
            .get("properties")
            .and_then(|p| p.as_object())
            .unwrap();
        assert!(
            props.contains_key("context"),
            "{} lacks `context`",
            tool.name
        );
    }
}

/// The tool list is context a model pays for before its first call: the default (read-only)
/// list stays within 25 KiB and the full list within 50 KiB, as compact JSON, with every tool's
/// output schema. (The full list grew from 40 KiB with the long operations: upgrade, rollback,
/// the rolling cluster upgrade and `talos_operations`, which appear only when the operator
/// enables the destructive tier; both grew by 1–2 KiB with backup and recovery —
/// `talos_etcd_snapshot_verify`, `talos_config_backup`, `talos_etcd_recover`, `talos_bootstrap` —
/// and `talos_compare`.)
#[test]
fn tool_list_fits_the_budgets() {
    let all = server().tools();
    let read_only = TalosMcp::new(
        common::mock_clusters(Arc::new(MockTalosApi::new()), &["10.5.0.2"]),
        common::settings(&tempfile::tempdir().unwrap()),
    )
    .unwrap()
    .tools();
    assert!(all.iter().all(|t| t.output_schema.is_some()));
    let bytes =
        |tools: &[rmcp::model::Tool]| -> usize { serde_json::to_string(tools).unwrap().len() };
    let (r, a) = (bytes(&read_only), bytes(&all));
    assert!(r <= 25 * 1024, "read-only tools/list is {r} bytes");
    assert!(a <= 50 * 1024, "full tools/list is {a} bytes");
    assert_eq!(
        all.iter().map(talos_mcp::listed_bytes).sum::<usize>() + all.len() + 1,
        a,
        "per-tool sizes in docs/tools.md add up to the list"
    );
}

/// The README states the tool count the registry has.
#[test]
fn readme_counts_the_registered_tools() {
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let n = talos_mcp::Registry::get().all().len();
    let sets = talos_mcp::Toolset::ALL.len();
    let words = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ];
    let phrase = format!(
        "{n} tools in {} toolsets",
        words.get(sets).copied().unwrap_or("many")
    );
    assert!(readme.contains(&phrase), "README.md should say `{phrase}`");
}
