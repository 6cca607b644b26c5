//! Rendering the tool list as Markdown (docs/tools.md is generated from this and checked fresh).

use std::fmt::Write as _;

use rmcp::model::Tool;

use crate::registry::Toolset;
use crate::server::TalosMcp;

/// Bytes of a tool's definition in `tools/list`, as compact JSON.
pub fn listed_bytes(tool: &Tool) -> usize {
    serde_json::to_string(tool).map_or(0, |s| s.len())
}

/// The size of each tool's definition: what a model pays in context for the tool list.
fn sizes_table(tools: &[Tool]) -> String {
    // The default list: the read tools, without the one listed only beside long-running tools.
    let read_only = |t: &&Tool| {
        t.annotations.as_ref().and_then(|a| a.read_only_hint) == Some(true)
            && t.name != crate::server::OPERATIONS_TOOL
    };
    let all: usize = tools.iter().map(listed_bytes).sum();
    let read: usize = tools.iter().filter(read_only).map(listed_bytes).sum();
    let mut out = format!(
        "\n## Size of the tool list\n\nWhat each definition costs a model's context in `tools/list` (compact JSON; tokens \
         are estimated as bytes / 4). The default (read-only) list is {read} bytes (~{} tokens) for {} tools; \
         with every tier enabled, {all} bytes (~{} tokens) for {} tools. A test keeps them within 25 KiB and \
         50 KiB.\n\n| tool | bytes | ~tokens |\n|---|---|---|\n",
        read / 4,
        tools.iter().filter(read_only).count(),
        all / 4,
        tools.len()
    );
    for t in tools {
        let b = listed_bytes(t);
        let _ = writeln!(out, "| `{}` | {b} | {} |", t.name, b / 4);
    }
    out
}

/// Markdown describing every tool, grouped by toolset, with arguments and hints.
pub fn tools_markdown(tools: &[Tool]) -> String {
    let mut out = String::from(
        "# Tools\n\n<!-- Generated from the server's tools/list by the tool_list test; \
         run `UPDATE_SNAPSHOTS=1 cargo test -p talos-mcp --test tool_list` after changing a tool. -->\n\n\
         Every tool accepts `context` (a talosconfig context; default: the current one). Per-node tools \
         also accept `nodes` (default: the context's nodes) and answer with one entry per node: \
         `{node, hostname, ok, result | error {kind, message}}`. Output is capped (default 64 KiB); a cut \
         result says `truncated: true` and how to narrow the query. A call that fails as a whole is an \
         `isError` result whose text starts with the error kind and says what to do; its `_meta` \
         holds `talos-mcp/error` `{kind, message}`, and it has no structured content.\n\n\
         Tools of the `write` and `destructive` tiers are listed only when the operator enables them \
         (`--allow-write`, `--allow-destructive`). They take exactly one `node` (except \
         `talos_cluster_upgrade`, whose whole plan over the context's nodes is confirmed once), and are \
         confirmed through MCP elicitation or a single-use `confirmation_token` (see docs/security.md).\n",
    );
    out.push_str(&sizes_table(tools));
    for set in Toolset::ALL {
        let (set, about) = (set.as_str(), set.about());
        let members: Vec<&Tool> = tools
            .iter()
            .filter(|t| TalosMcp::toolset_of(&t.name) == Some(set))
            .collect();
        if members.is_empty() {
            continue;
        }
        let _ = write!(out, "\n## Toolset `{set}`\n\n{about}\n");
        for tool in members {
            let a = tool.annotations.as_ref();
            // Absent hints take the protocol's defaults.
            let flag = |v: Option<bool>, default: bool| {
                if v.unwrap_or(default) { "yes" } else { "no" }
            };
            let read_only = a.and_then(|a| a.read_only_hint) == Some(true);
            let change_hint = |v: Option<bool>, default: bool| {
                if read_only { "-" } else { flag(v, default) }
            };
            let _ = write!(
                out,
                "\n### `{}` — {}\n\n{}\n\n| tier | read-only | destructive | idempotent | open world |\n|---|---|---|---|---|\n| {} | {} | {} | {} | {} |\n",
                tool.name,
                a.and_then(|a| a.title.clone()).unwrap_or_default(),
                tool.description.as_deref().unwrap_or_default(),
                TalosMcp::tier_of(&tool.name).map_or("?", crate::safety::Tier::as_str),
                flag(a.and_then(|a| a.read_only_hint), false),
                change_hint(a.and_then(|a| a.destructive_hint), true),
                change_hint(a.and_then(|a| a.idempotent_hint), false),
                flag(a.and_then(|a| a.open_world_hint), true),
            );
            let schema = serde_json::Value::Object(tool.input_schema.as_ref().clone());
            let required: Vec<&str> = schema
                .get("required")
                .and_then(|r| r.as_array())
                .map(|r| r.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            if let Some(props) = schema.get("properties").and_then(|p| p.as_object())
                && !props.is_empty()
            {
                out.push_str("\n| argument | type | required | description |\n|---|---|---|---|\n");
                for (name, prop) in props {
                    let ty = prop
                        .get("type")
                        .map(|t| match t {
                            serde_json::Value::Array(a) => a
                                .iter()
                                .filter_map(|x| x.as_str())
                                .filter(|x| *x != "null")
                                .collect::<Vec<_>>()
                                .join("|"),
                            other => other.as_str().unwrap_or_default().to_owned(),
                        })
                        .unwrap_or_default();
                    let desc = prop
                        .get("description")
                        .and_then(|d| d.as_str())
                        .unwrap_or_default()
                        .replace('\n', " ");
                    let _ = writeln!(
                        out,
                        "| `{name}` | {ty} | {} | {desc} |",
                        if required.contains(&name.as_str()) {
                            "yes"
                        } else {
                            "no"
                        }
                    );
                }
            }
        }
    }
    out
}
