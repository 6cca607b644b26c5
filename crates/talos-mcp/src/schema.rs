//! Tool schemas in the portable dialect: every schema object has at most one `type`.
//!
//! schemars writes an `Option<T>` as `"type": ["T", "null"]`. That is valid JSON Schema, but
//! clients that map tool schemas onto a single-type dialect (function declarations of some model
//! providers) reject it or drop the constraint. The derived schemas are therefore rewritten once,
//! when the routers are built:
//!
//! - an optional property of an input schema is just `T`: leaving it out is how a caller says
//!   "none" (an explicit `null` is still accepted by the arguments' deserializer);
//! - anywhere else, a nullable `T` becomes `anyOf: [{type: T, ...}, {type: "null"}]`, which
//!   still allows the `null` the server may send.

use rmcp::model::{JsonObject, Tool};
use serde_json::Value;

/// Rewrites a tool's input and output schemas into the portable dialect.
pub(crate) fn make_portable(tool: &mut Tool) {
    let mut input = (*tool.input_schema).clone();
    rewrite_object(&mut input, Side::Input);
    tool.input_schema = input.into();
    if let Some(output) = &tool.output_schema {
        let mut output = (**output).clone();
        rewrite_object(&mut output, Side::Output);
        tool.output_schema = Some(output.into());
    }
}

/// Which schema is being rewritten: arguments (absent means none) or results.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Input,
    Output,
}

/// Schema keywords that describe a value rather than constrain it; they stay outside `anyOf`.
const ANNOTATIONS: &[&str] = &["title", "description", "default", "examples", "deprecated"];

fn rewrite_object(schema: &mut JsonObject, side: Side) {
    rewrite_children(schema, side);
    split_nullable(schema, side, false);
}

/// Rewrites the subschemas of `schema`, then returns.
fn rewrite_children(schema: &mut JsonObject, side: Side) {
    let required: Vec<String> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if let Some(Value::Object(properties)) = schema.get_mut("properties") {
        for (name, property) in properties.iter_mut() {
            if let Value::Object(p) = property {
                rewrite_children(p, side);
                split_nullable(p, side, !required.contains(name));
            }
        }
    }
    for key in ["$defs", "definitions"] {
        if let Some(Value::Object(defs)) = schema.get_mut(key) {
            for def in defs.values_mut() {
                if let Value::Object(d) = def {
                    rewrite_object(d, side);
                }
            }
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(Value::Object(sub)) = schema.get_mut(key) {
            rewrite_object(sub, side);
        }
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(Value::Array(branches)) = schema.get_mut(key) {
            for branch in branches {
                if let Value::Object(b) = branch {
                    rewrite_object(b, side);
                }
            }
        }
    }
}

/// Replaces `"type": [T, "null"]` in `schema` itself.
fn split_nullable(schema: &mut JsonObject, side: Side, optional_property: bool) {
    let Some(Value::Array(types)) = schema.get("type") else {
        return;
    };
    let non_null: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
    let nullable = non_null.len() < types.len();
    let [single] = non_null.as_slice() else {
        return; // several non-null types: left as derived
    };
    let single = single.clone();
    if !nullable || (side == Side::Input && optional_property) {
        schema.insert("type".into(), single);
        return;
    }
    let mut branch = JsonObject::new();
    for (key, value) in std::mem::take(schema) {
        if ANNOTATIONS.contains(&key.as_str()) {
            schema.insert(key, value);
        } else {
            branch.insert(key, value);
        }
    }
    branch.insert("type".into(), single);
    schema.insert(
        "anyOf".into(),
        Value::Array(vec![
            Value::Object(branch),
            serde_json::json!({ "type": "null" }),
        ]),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(v: Value) -> JsonObject {
        match v {
            Value::Object(o) => o,
            _ => JsonObject::new(),
        }
    }

    #[test]
    fn optional_inputs_lose_null_and_outputs_split_into_any_of() {
        let mut input = object(json!({
            "type": "object",
            "properties": {
                "context": {"type": ["string", "null"], "description": "ctx"},
                "nodes": {"type": ["array", "null"], "items": {"type": "string"}},
                "must": {"type": ["integer", "null"]}
            },
            "required": ["must"],
            "$defs": {"Inner": {"type": "object", "properties": {"x": {"type": ["boolean", "null"]}}}}
        }));
        rewrite_object(&mut input, Side::Input);
        assert_eq!(
            input["properties"]["context"],
            json!({"type": "string", "description": "ctx"})
        );
        assert_eq!(
            input["properties"]["nodes"],
            json!({"type": "array", "items": {"type": "string"}})
        );
        // A required argument that may be null keeps its null, as anyOf.
        assert_eq!(
            input["properties"]["must"],
            json!({"anyOf": [{"type": "integer"}, {"type": "null"}]})
        );
        assert_eq!(
            input["$defs"]["Inner"]["properties"]["x"],
            json!({"type": "boolean"})
        );

        let mut output = object(json!({
            "type": "object",
            "properties": {
                "hostname": {"type": ["string", "null"], "description": "h", "format": "hostname"},
                "plain": {"type": "string"}
            }
        }));
        rewrite_object(&mut output, Side::Output);
        assert_eq!(
            output["properties"]["hostname"],
            json!({"description": "h", "anyOf": [{"type": "string", "format": "hostname"}, {"type": "null"}]})
        );
        assert_eq!(output["properties"]["plain"], json!({"type": "string"}));
    }

    #[test]
    fn every_listed_tool_schema_has_single_types() {
        fn check(v: &Value, path: &str) {
            match v {
                Value::Object(o) => {
                    if let Some(t) = o.get("type") {
                        assert!(t.is_string(), "{path}: type {t}");
                    }
                    for (k, sub) in o {
                        check(sub, &format!("{path}.{k}"));
                    }
                }
                Value::Array(items) => {
                    for (i, sub) in items.iter().enumerate() {
                        check(sub, &format!("{path}[{i}]"));
                    }
                }
                Value::Bool(true) if path.ends_with(".items") => {
                    panic!("{path}: a bare `true` schema")
                }
                _ => {}
            }
        }
        for (tool, _) in crate::TalosMcp::all_tools() {
            check(
                &Value::Object((*tool.input_schema).clone()),
                &format!("{}.input", tool.name),
            );
            if let Some(out) = &tool.output_schema {
                check(
                    &Value::Object((**out).clone()),
                    &format!("{}.output", tool.name),
                );
            }
        }
    }
}
