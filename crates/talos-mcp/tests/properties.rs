//! Bounded property test of tool-argument decoding and validation: arbitrary JSON arguments for
//! every tool (all tiers enabled) through an in-process MCP session. Each call ends in a tool
//! result with content or a JSON-RPC error, nothing panics, nothing reaches a node (the Talos
//! client factory refuses), and the session keeps serving. The `tool_args` fuzz target explores
//! the same surface without a bound (docs/reliability.md).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use rmcp::model::CallToolRequestParams;
use serde_json::{Map, Value};
use talos_mcp::safety::{ConfirmMode, SafetySettings};
use talos_mcp::{ApiFactory, TalosMcp};

static PANICS: AtomicUsize = AtomicUsize::new(0);

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop_oneof![
            Just(0i64),
            Just(1),
            Just(-1),
            Just(5000),
            Just(5001),
            Just(u32::MAX as i64 + 1)
        ]
        .prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop_oneof![
            "\\PC{0,30}",
            "(/[a-z.]{0,8}){0,4}",
            "(\\.\\./){1,4}[a-z]{0,8}",
            "127\\.0\\.10\\.1[0-9]",
            "10\\.5\\.0\\.[0-9]",
            "[a-z]{1,10}",
        ]
        .prop_map(Value::from),
        (1usize..20_000).prop_map(|n| Value::from("a".repeat(n))),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            proptest::collection::btree_map("[a-z_]{1,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn arbitrary_arguments_end_in_a_result_or_an_error() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));

    let rt = tokio::runtime::Runtime::new().unwrap();
    let factory: ApiFactory = Arc::new(|_| {
        Err(talos_client::TalosError::Local {
            message: "this test has no cluster".into(),
        })
    });
    let dir = tempfile::tempdir().unwrap();
    let mut settings = common::settings(&dir);
    settings.safety = Arc::new(SafetySettings {
        allow_write: true,
        allow_destructive: true,
        confirm: ConfirmMode::Token,
        ..SafetySettings::default()
    });
    // The context's nodes are taken from a resolved talosconfig; the API factory refuses.
    let clusters = {
        let ca = talos_sim::pki::CertificateAuthority::generate("prop").unwrap();
        let cert = ca
            .client_cert("os:admin", talos_sim::pki::Validity::Current)
            .unwrap();
        let yaml = talos_sim::pki::render_talosconfig(
            "prop",
            &[talos_sim::pki::TalosconfigContext {
                name: "prop",
                endpoints: vec!["10.5.0.2".into()],
                nodes: vec!["10.5.0.2".into(), "10.5.0.3".into()],
                ca_pem: ca.cert_pem(),
                client: &cert,
            }],
        );
        let ctx = talos_config::TalosConfig::from_yaml(&yaml, "<prop>")
            .unwrap()
            .context(None)
            .unwrap();
        talos_mcp::Clusters::from_context(ctx, factory)
    };
    let server = TalosMcp::new(clusters, settings).unwrap();
    let h = rt.block_on(common::connect(server, None, dir));
    let tools = rt.block_on(h.client.list_all_tools()).unwrap();
    let names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    // Every argument name any tool declares, and one no tool knows.
    let mut keys: Vec<String> = tools
        .iter()
        .filter_map(|t| t.input_schema.get("properties")?.as_object())
        .flat_map(|p| p.keys().cloned())
        .collect();
    keys.sort();
    keys.dedup();
    keys.push("unknown_argument".into());
    assert!(names.len() > 30 && keys.len() > 20, "{names:?} {keys:?}");

    let strategy = (
        any::<prop::sample::Index>(),
        proptest::collection::vec((any::<prop::sample::Index>(), json_value()), 0..6),
    );
    let mut runner = TestRunner::new(Config {
        cases: 512,
        failure_persistence: None,
        ..Config::default()
    });
    let (results, tool_errors, rpc_errors) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    runner
        .run(&strategy, |(tool, args)| {
            let tool = names[tool.index(names.len())].clone();
            let args: Map<String, Value> = args
                .into_iter()
                .map(|(k, v)| (keys[k.index(keys.len())].clone(), v))
                .collect();
            let params = CallToolRequestParams::new(tool.clone()).with_arguments(args.clone());
            // A liveness guard, not a performance bound: a call that never answers means a
            // handler died.
            let outcome = rt
                .block_on(async {
                    tokio::time::timeout(Duration::from_secs(60), h.client.call_tool(params)).await
                })
                .map_err(|_| TestCaseError::fail(format!("{tool} {args:?}: no answer")))?;
            match outcome {
                Ok(r) => {
                    prop_assert!(!r.content.is_empty(), "{tool}: a result without content");
                    let text = common::text(&r);
                    prop_assert!(!text.contains("panicked"), "{tool}: {text}");
                    if r.is_error == Some(true) {
                        tool_errors.fetch_add(1, Ordering::Relaxed);
                    } else {
                        results.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(rmcp::ServiceError::McpError(_)) => {
                    rpc_errors.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => prop_assert!(false, "{tool} {args:?}: the session broke: {e}"),
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a handler panicked");
    // The session still serves after all of it.
    assert!(!rt.block_on(h.client.list_all_tools()).unwrap().is_empty());
    let (results, tool_errors, rpc_errors) = (
        results.into_inner(),
        tool_errors.into_inner(),
        rpc_errors.into_inner(),
    );
    assert!(
        tool_errors + rpc_errors > 0,
        "{results} {tool_errors} {rpc_errors}"
    );
}
