//! Redaction of secret values in YAML documents (machine configs, resource specs).

use serde_yaml_ng::Value;

/// Placeholder for removed values.
pub(crate) const REDACTED: &str = "[redacted]";

/// Whether a mapping key names secret material.
pub(crate) fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k == "key"
        || k.ends_with("key")
        || k.contains("secret")
        || k.contains("token")
        || k.contains("password")
        || k.ends_with("-data") && (k.contains("key") || k.contains("token"))
}

/// Replaces every value under a secret-looking key with `[redacted]`, recursively.
pub(crate) fn redact_value(value: &mut Value) {
    match value {
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                if k.as_str().is_some_and(is_secret_key)
                    && !matches!(v, Value::Mapping(_) | Value::Sequence(_))
                {
                    *v = Value::String(REDACTED.into());
                } else {
                    redact_value(v);
                }
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(redact_value),
        _ => {}
    }
}

/// Parses YAML (possibly several documents), redacts secrets, and renders it again. Text that
/// does not parse is withheld entirely rather than risk showing a secret.
pub(crate) fn redact_yaml(text: &str) -> String {
    let mut out = String::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let Ok(mut value) = <Value as serde::Deserialize>::deserialize(doc) else {
            return format!("{REDACTED} (the document could not be parsed, so it is withheld)");
        };
        redact_value(&mut value);
        if !out.is_empty() {
            out.push_str("---\n");
        }
        out.push_str(&serde_yaml_ng::to_string(&value).unwrap_or_else(|_| REDACTED.to_owned()));
    }
    out
}

/// Parses YAML into JSON with secrets redacted (for structured output).
pub(crate) fn yaml_to_json(text: &str) -> serde_json::Value {
    match serde_yaml_ng::from_str::<Value>(text) {
        Ok(mut v) => {
            redact_value(&mut v);
            serde_json::to_value(&v).unwrap_or(serde_json::Value::Null)
        }
        Err(_) => serde_json::Value::String(format!(
            "{REDACTED} (the document could not be parsed, so it is withheld)"
        )),
    }
}

/// A COSI resource spec as a JSON object with secrets redacted. Specs are mappings; an empty
/// spec becomes `{}`, and anything else (a scalar, or a document that cannot be parsed) is kept
/// under `value`.
pub(crate) fn spec_object(text: &str) -> serde_json::Map<String, serde_json::Value> {
    match yaml_to_json(text) {
        serde_json::Value::Object(map) => map,
        serde_json::Value::Null => serde_json::Map::new(),
        other => serde_json::Map::from_iter([("value".to_owned(), other)]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_removed_and_structure_kept() {
        let text = "machine:\n  token: abc.def\n  ca:\n    crt: CERT\n    key: SECRETKEY\n  network:\n    hostname: cp-1\ncluster:\n  secret: S3\n  aescbcEncryptionSecret: X\n  bootstrapToken: T\nusers:\n  - user:\n      client-key-data: Zm9v\n";
        let out = redact_yaml(text);
        for secret in ["abc.def", "SECRETKEY", "S3", "X\n", "Zm9v", ": T"] {
            assert!(!out.contains(secret), "{secret} leaked: {out}");
        }
        assert!(out.contains("hostname: cp-1") && out.contains("crt: CERT"));
        assert!(out.contains(REDACTED));
    }

    #[test]
    fn unparsable_text_is_withheld() {
        assert!(redact_yaml("key: [unclosed").starts_with(REDACTED));
    }
}
