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

use std::sync::Arc;

use rmcp::handler::server::common::{schema_for_output, schema_for_type};
use rmcp::model::JsonObject;
use schemars::JsonSchema;
use serde_json::Value;

/// The input schema of a tool taking `A`: portable, lean, every `$ref` inlined.
pub(crate) fn input_schema<A: JsonSchema + 'static>() -> Arc<JsonObject> {
    let mut schema = (*schema_for_type::<A>()).clone();
    schema.remove("title");
    schema.remove("description");
    finish(schema, Side::Input)
}

/// The output schema of a tool answering `O`: portable, lean, every `$ref` inlined, no field
/// prose (the tool's description and the field names carry the meaning).
pub(crate) fn output_schema<O: JsonSchema + 'static>() -> Arc<JsonObject> {
    finish((*schema_for_output::<O>()).clone(), Side::Output)
}

fn finish(mut schema: JsonObject, side: Side) -> Arc<JsonObject> {
    inline_refs(&mut schema);
    rewrite_object(&mut schema, side);
    let mut value = Value::Object(schema);
    if side == Side::Input {
        collapse_optional_inputs(&mut value);
    }
    lean(&mut value, side, false, true);
    match value {
        Value::Object(o) => Arc::new(o),
        _ => Arc::default(),
    }
}

/// Replaces every `{"$ref": "#/$defs/X", ...}` with the definition (plus the referring
/// schema's own keywords) and drops `$defs`: tool schemas are small trees, and a client that
/// maps them to function declarations need not resolve references.
fn inline_refs(schema: &mut JsonObject) {
    let defs = schema
        .remove("$defs")
        .and_then(|d| match d {
            Value::Object(o) => Some(o),
            _ => None,
        })
        .unwrap_or_default();
    fn visit(v: &mut Value, defs: &JsonObject, depth: usize) {
        if depth > 32 {
            return; // a recursive type would loop; none of ours is.
        }
        if let Value::Object(o) = v {
            if let Some(Value::String(r)) = o.get("$ref")
                && let Some(def) = r.strip_prefix("#/$defs/").and_then(|n| defs.get(n))
            {
                let mut merged = match def.clone() {
                    Value::Object(d) => d,
                    _ => JsonObject::new(),
                };
                o.remove("$ref");
                for (k, val) in std::mem::take(o) {
                    merged.insert(k, val);
                }
                *o = merged;
            }
            for child in o.values_mut() {
                visit(child, defs, depth + 1);
            }
        } else if let Value::Array(items) = v {
            for child in items {
                visit(child, defs, depth + 1);
            }
        }
    }
    for value in schema.values_mut() {
        visit(value, &defs, 0);
    }
}

/// An optional argument is left out rather than sent as `null` (its deserializer still accepts
/// an explicit `null`): `anyOf: [T, null]` of a property that is not required is just `T`.
fn collapse_optional_inputs(v: &mut Value) {
    match v {
        Value::Object(o) => {
            let required = required(o);
            if let Some(Value::Object(props)) = o.get_mut("properties") {
                for (name, p) in props.iter_mut() {
                    if let Value::Object(p) = p
                        && !required.contains(name)
                    {
                        collapse_nullable(p);
                    }
                }
            }
            o.values_mut().for_each(collapse_optional_inputs);
        }
        Value::Array(items) => items.iter_mut().for_each(collapse_optional_inputs),
        _ => {}
    }
}

/// `{anyOf: [T, {type: null}], ...}` becomes `{...T, ...}`.
fn collapse_nullable(o: &mut JsonObject) {
    let Some(Value::Array(branches)) = o.get("anyOf") else {
        return;
    };
    let is_null = |b: &Value| b.get("type") == Some(&Value::from("null"));
    if branches.len() != 2 || !branches.iter().any(is_null) {
        return;
    }
    let Some(Value::Object(kept)) = branches.iter().find(|b| !is_null(b)).cloned() else {
        return;
    };
    o.remove("anyOf");
    for (k, v) in kept {
        o.entry(k).or_insert(v);
    }
}

/// Drops what a client does not need to call a tool or read its result: `$schema`, titles,
/// number formats (`uint64`, `double`: the type is `integer` or `number` either way) and the
/// zero minimum of unsigned integers; closed choices become one `enum`; output schemas lose
/// their descriptions.
fn lean(v: &mut Value, side: Side, map: bool, root: bool) {
    match v {
        Value::Object(o) if map => {
            // `properties`: the keys are argument names, the values schemas.
            o.values_mut().for_each(|s| lean(s, side, false, false));
        }
        Value::Object(o) => {
            if side == Side::Output {
                collapse_nullable(o);
            }
            o.remove("$schema");
            o.remove("title");
            if let Some(Value::String(f)) = o.get("format")
                && (f.starts_with("uint") || f.starts_with("int") || f == "double" || f == "float")
            {
                if f.starts_with("uint") && o.get("minimum") == Some(&Value::from(0)) {
                    o.remove("minimum");
                }
                o.remove("format");
            }
            if side == Side::Output {
                o.remove("description");
                // `properties` already says it is an object, `items` that it is an array (the
                // root keeps its `type`, which MCP requires).
                if !root
                    && ((o.contains_key("properties") && o.get("type") == Some(&"object".into()))
                        || (o.contains_key("items") && o.get("type") == Some(&"array".into())))
                {
                    o.remove("type");
                }
                // Results never carry `null` (see `crate::call::drop_nulls`): an optional field
                // is absent instead, so `anyOf: [T, null]` is just `T`, and nothing is required.
                o.remove("required");
            } else if o.get("default") == Some(&Value::Null) {
                o.remove("default");
            }
            // `oneOf: [{const: "a", type: string, description}, …]` (a documented enum): one
            // `enum` list; the variants' prose belongs in the field's description.
            if let Some(Value::Array(branches)) = o.get("oneOf")
                && !branches.is_empty()
                && branches
                    .iter()
                    .all(|b| b.get("const").is_some_and(Value::is_string))
            {
                let values: Vec<Value> = branches
                    .iter()
                    .filter_map(|b| b.get("const").cloned())
                    .collect();
                o.remove("oneOf");
                o.insert("type".into(), "string".into());
                o.insert("enum".into(), Value::Array(values));
            }
            for (key, child) in o.iter_mut() {
                lean(child, side, key == "properties", false);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| lean(i, side, false, false)),
        _ => {}
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

/// The names an object schema lists as `required`.
fn required(schema: &JsonObject) -> Vec<String> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Rewrites the subschemas of `schema`, then returns.
fn rewrite_children(schema: &mut JsonObject, side: Side) {
    let required = required(schema);
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
