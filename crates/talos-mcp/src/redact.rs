//! Redaction of secret values in YAML documents (machine configs, resource specs) and free text
//! (files read from nodes, Talos's apply summaries).
//!
//! Three layers, each applied everywhere:
//!
//! - **Key names**: any value (scalar or whole subtree) under a key that names secret material
//!   (`key`, `*Key`, `token`, `secret`, `password`, `passphrase`, `auth`, `credentials`, …).
//! - **The machine-config schema**: fields whose names say nothing but whose content may be
//!   anything (`machine.files[].content`, `cluster.extraManifestHeaders`), Kubernetes Secret
//!   manifests inside `cluster.inlineManifests[].contents`, `kind: Secret` objects, `name`/`value`
//!   pairs whose name looks secret (container `env`), and `RegistryAuthConfig` documents.
//! - **Values that look secret** wherever they appear: PEM private keys (also base64-encoded, as
//!   kubeconfigs and talosconfigs carry them), userinfo in URLs (`http://user:pass@proxy`),
//!   `key=value` pairs with a secret-looking key (`?jointoken=…`), Kubernetes bootstrap tokens and
//!   JSON web tokens.

use base64::Engine as _;
use serde_yaml_ng::Value;

/// Placeholder for removed values.
pub(crate) const REDACTED: &str = "[redacted]";

/// Whether a mapping key names secret material.
pub fn is_secret_key(key: &str) -> bool {
    let k: String = key
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | '.' | ' ' | '"' | '\''))
        .collect::<String>()
        .to_ascii_lowercase();
    if k.is_empty() {
        return false;
    }
    k.ends_with("key")
        || (k.contains("key") && k.ends_with("data"))
        || k.ends_with("auth")
        || k == "authorization"
        || k == "cookie"
        || k == "signature"
        || k == "sig"
        || [
            "secret",
            "token",
            "password",
            "passwd",
            "passphrase",
            "credential",
            "privatekey",
        ]
        .iter()
        .any(|w| k.contains(w))
}

/// Replaces secret values in a YAML value, recursively (all three layers; see the module docs).
pub fn redact_value(value: &mut Value) {
    redact_at(value, &mut Vec::new());
}

/// Path segments below the document root; sequence items are `*`.
fn path_ends_with(path: &[String], suffix: &[&str]) -> bool {
    path.len() >= suffix.len()
        && path[path.len() - suffix.len()..]
            .iter()
            .zip(suffix)
            .all(|(a, b)| *b == "?" || a == b)
}

fn redact_at(value: &mut Value, path: &mut Vec<String>) {
    match value {
        Value::Mapping(map) => {
            let kind = map
                .get("kind")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_default();
            let secret_pair = map
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(is_secret_key);
            for (k, v) in map.iter_mut() {
                let key = match k {
                    Value::String(s) => s.clone(),
                    other => serde_yaml_ng::to_string(other).unwrap_or_default(),
                };
                path.push(key.clone());
                let whole = is_secret_key(&key)
                    || (secret_pair && key == "value")
                    || (kind == "Secret" && (key == "data" || key == "stringData"))
                    || (kind == "RegistryAuthConfig" && key == "username")
                    || path_ends_with(path, &["files", "*", "content"])
                    || path_ends_with(path, &["extraManifestHeaders"]);
                if whole {
                    if !matches!(v, Value::Null) {
                        *v = Value::String(REDACTED.into());
                    }
                } else if path_ends_with(path, &["inlineManifests", "*", "contents"])
                    && let Value::String(text) = v
                {
                    *text = redact_manifests(text);
                } else {
                    redact_at(v, path);
                }
                path.pop();
            }
        }
        Value::Sequence(items) => {
            path.push("*".into());
            for item in items.iter_mut() {
                redact_at(item, path);
            }
            path.pop();
        }
        Value::String(s) => {
            let cleaned = redact_scalar(s);
            if cleaned != *s {
                *s = cleaned;
            }
        }
        Value::Tagged(tagged) => redact_at(&mut tagged.value, path),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Kubernetes manifests embedded in a machine config: every document redacted; a manifest that
/// cannot be parsed is withheld.
fn redact_manifests(text: &str) -> String {
    let mut out = String::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let Ok(mut value) = <Value as serde::Deserialize>::deserialize(doc) else {
            return REDACTED.to_owned();
        };
        redact_value(&mut value);
        if !out.is_empty() {
            out.push_str("---\n");
        }
        match serde_yaml_ng::to_string(&value) {
            Ok(s) => out.push_str(&s),
            Err(_) => return REDACTED.to_owned(),
        }
    }
    out
}

/// A string value: withheld whole when it carries a private key, else cleaned of embedded
/// secrets (URL userinfo, `key=value` secrets, tokens).
fn redact_scalar(s: &str) -> String {
    if has_private_key(s) {
        return REDACTED.to_owned();
    }
    redact_text(s)
}

/// Whether text holds a PEM private key, plain or base64-encoded.
fn has_private_key(s: &str) -> bool {
    (s.contains("-----BEGIN") && s.contains("PRIVATE KEY")) || base64_pem_spans(s).next().is_some()
}

/// Byte ranges of base64 words that decode to a PEM private key (or start like PEM and cannot be
/// decoded, which is treated the same).
fn base64_pem_spans(s: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    const PEM_B64: &str = "LS0tLS1CRUdJTi";
    let is_b64 = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=');
    let bytes = s.as_bytes();
    s.match_indices(PEM_B64).filter_map(move |(start, _)| {
        if start > 0 && is_b64(bytes[start - 1]) {
            return None;
        }
        let end = start
            + bytes[start..]
                .iter()
                .position(|b| !is_b64(*b))
                .unwrap_or(bytes.len() - start);
        let word = &s[start..end];
        let usable = word.len() - word.len() % 4;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&word[..usable])
            .or_else(|_| {
                base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode(word.trim_end_matches('=').as_bytes())
            });
        match decoded {
            Ok(d) if !String::from_utf8_lossy(&d).contains("PRIVATE KEY") => None,
            _ => Some((start, end)),
        }
    })
}

/// Parses YAML (possibly several documents), redacts secrets, and renders it again. Text that
/// does not parse is withheld entirely rather than risk showing a secret.
pub fn redact_yaml(text: &str) -> String {
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

/// A machine configuration (one or more documents) with every secret-bearing field redacted,
/// for the machine-config resource and the apply dry-run diff.
pub fn redact_machine_config(yaml: &str) -> String {
    redact_yaml(yaml)
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

/// What a file's content is, when it is a whole secret document.
fn secret_document(text: &str) -> Option<&'static str> {
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    let has = |l: &str| lines.contains(&l);
    let starts = |p: &str| lines.iter().any(|l| l.starts_with(p));
    if has("version: v1alpha1")
        || (starts("machine:") && starts("cluster:"))
        || (starts("machine:") && text.contains("token:"))
    {
        return Some("a Talos machine configuration");
    }
    if text.contains("client-key-data")
        || text.contains("client-certificate-data")
        || (has("kind: Config") && starts("users:"))
    {
        return Some("a kubeconfig");
    }
    if starts("contexts:") && text.contains("crt:") && text.contains("key:") {
        return Some("a talosconfig");
    }
    None
}

/// The content of a file read from a node, as it may be shown: machine configs, kubeconfigs and
/// talosconfigs are withheld whole; anything else has embedded secrets redacted.
pub fn redact_file(text: &str) -> String {
    match secret_document(text) {
        Some(what) => format!(
            "{REDACTED} (this file looks like {what}, which holds keys and tokens, so its content is withheld; \
             read the machine config from the resource talos://{{context}}/nodes/{{node}}/machineconfig, which is redacted)"
        ),
        None => redact_text(text),
    }
}

/// Talos's apply summary without the config diff it quotes. The diff is made of fragments of the
/// old and new machine configs, where a secret's field name may be lines away from its value
/// (`files[].content`, Secret manifests in `inlineManifests`), so no line-by-line redaction is
/// safe: the summary is kept up to the diff, the diff is replaced by a note (the apply result
/// has its own `diff`, computed from the two configs after schema-aware redaction).
pub fn redact_apply_summary(text: &str) -> String {
    let mut kept = Vec::new();
    let mut cut = false;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("Config diff")
            || t.starts_with("@@")
            || t.starts_with("--- ")
            || t.starts_with("+++ ")
        {
            cut = true;
            break;
        }
        kept.push(line);
    }
    let mut out = redact_text(&kept.join("\n"));
    if cut {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(
            "Config diff: [omitted: it quotes the machine config; see `diff`, which is redacted]",
        );
    }
    out
}

/// Free text with embedded secrets replaced by `[redacted]`: PEM private-key blocks (also
/// base64-encoded), the value of any `key: value` / `key=value` whose key looks secret, userinfo
/// in URLs, Kubernetes bootstrap tokens and JSON web tokens. Never panics; text without secrets
/// comes back unchanged.
pub fn redact_text(text: &str) -> String {
    let text = redact_pem_blocks(text);
    let text = replace_spans(&text, base64_pem_spans(&text).collect());
    let text = redact_pairs(&text);
    let text = redact_url_userinfo(&text);
    replace_spans(&text, token_spans(&text)).into_owned()
}

/// Replaces byte ranges (sorted, non-overlapping, on char boundaries) with `[redacted]`.
fn replace_spans(text: &str, spans: Vec<(usize, usize)>) -> std::borrow::Cow<'_, str> {
    if spans.is_empty() {
        return text.into();
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in spans {
        if start < at {
            continue;
        }
        out.push_str(&text[at..start]);
        out.push_str(REDACTED);
        at = end;
    }
    out.push_str(&text[at..]);
    out.into()
}

/// PEM blocks whose label says PRIVATE KEY, from `-----BEGIN` to the end of the matching
/// `-----END …-----` line (or to the end of the text when it is cut short).
fn redact_pem_blocks(text: &str) -> std::borrow::Cow<'_, str> {
    let mut spans = Vec::new();
    let mut from = 0;
    while let Some(offset) = text[from..].find("-----BEGIN ") {
        let start = from + offset;
        let label_start = start + "-----BEGIN ".len();
        let label_end = text[label_start..]
            .find("-----")
            .map_or(text.len(), |i| label_start + i);
        let label = &text[label_start..label_end];
        if !label.contains("PRIVATE KEY") || label.contains('\n') {
            from = label_start;
            continue;
        }
        let end = match text[label_end..].find("-----END ") {
            Some(i) => {
                let end_label = label_end + i + "-----END ".len();
                text[end_label..]
                    .find("-----")
                    .map_or(text.len(), |j| end_label + j + "-----".len())
            }
            None => text.len(),
        };
        spans.push((start, end));
        from = end;
    }
    replace_spans(text, spans)
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// `key: value`, `key=value`, `"key": "value"`: the value of a secret-looking key. An unquoted
/// value after `:` runs to the end of the line (`Authorization: Bearer …`); after `=` it ends at
/// whitespace, `&`, `,` or `;`.
fn redact_pairs(text: &str) -> String {
    let mut spans = Vec::new();
    let bytes = text.as_bytes();
    let mut covered = 0;
    for (i, sep) in text.char_indices() {
        if i < covered || (sep != ':' && sep != '=') {
            continue;
        }
        // `://` is a URL, not a pair.
        if sep == ':' && text[i..].starts_with("://") {
            continue;
        }
        // The key: key characters just before the separator, maybe inside quotes.
        let trimmed = text[..i].trim_end_matches(['"', '\'']);
        let key_start = trimmed
            .char_indices()
            .rev()
            .take_while(|(_, c)| is_key_char(*c))
            .last()
            .map_or(trimmed.len(), |(j, _)| j);
        let key = &trimmed[key_start..];
        if key.is_empty() || !is_secret_key(key) {
            continue;
        }
        let mut start = i + 1;
        while start < bytes.len() && matches!(bytes[start], b' ' | b'\t') {
            start += 1;
        }
        let eol = line_end(text, start);
        let end = match bytes.get(start) {
            Some(q @ (b'"' | b'\'')) => {
                start += 1;
                text[start..eol]
                    .find(char::from(*q))
                    .map_or(eol, |j| start + j)
            }
            Some(_) if sep == ':' => eol,
            Some(_) => text[start..eol]
                .find(|c: char| c.is_whitespace() || matches!(c, '&' | ',' | ';'))
                .map_or(eol, |j| start + j),
            None => start,
        };
        if end > start && &text[start..end] != REDACTED {
            spans.push((start, end));
            covered = end;
        }
    }
    replace_spans(text, spans).into_owned()
}

fn line_end(text: &str, from: usize) -> usize {
    text[from..]
        .find(['\n', '\r', '\0'])
        .map_or(text.len(), |j| from + j)
}

/// `scheme://user:pass@host` → `scheme://[redacted]@host`.
fn redact_url_userinfo(text: &str) -> std::borrow::Cow<'_, str> {
    let mut spans = Vec::new();
    for (i, _) in text.match_indices("://") {
        let start = i + 3;
        let authority_end = text[start..]
            .find(|c: char| {
                c.is_whitespace() || matches!(c, '/' | '?' | '#' | '"' | '\'' | '\0' | '<' | '>')
            })
            .map_or(text.len(), |j| start + j);
        if let Some(at) = text[start..authority_end].rfind('@')
            && at > 0
        {
            spans.push((start, start + at));
        }
    }
    replace_spans(text, spans)
}

/// Kubernetes bootstrap tokens (`abcdef.0123456789abcdef`) and JSON web tokens
/// (`eyJ….eyJ….…`).
fn token_spans(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-');
    let mut spans = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !word(bytes[i]) || (i > 0 && (word(bytes[i - 1]) || bytes[i - 1] == b'.')) {
            i += 1;
            continue;
        }
        // A run of word characters and dots starting at i.
        let end = bytes[i..]
            .iter()
            .position(|b| !(word(*b) || *b == b'.'))
            .map_or(bytes.len(), |j| i + j);
        let run = &text[i..end];
        let parts: Vec<&str> = run.split('.').collect();
        let lower_alnum = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        };
        let bootstrap = parts.len() == 2
            && parts[0].len() == 6
            && parts[1].len() == 16
            && lower_alnum(parts[0])
            && lower_alnum(parts[1]);
        let jwt = parts.len() == 3
            && parts[0].starts_with("eyJ")
            && parts[1].len() >= 4
            && parts[0].len() >= 10;
        if bootstrap || jwt {
            spans.push((i, end));
        }
        i = end;
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    /// Every secret-bearing field of the v1alpha1 machine config, each holding a marker.
    const FULL_CONFIG: &str = r#"version: v1alpha1
machine:
  type: controlplane
  token: M-TOKEN
  ca:
    crt: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t
    key: M-CA-KEY
  env:
    https_proxy: http://proxyuser:M-PROXY-PASS@proxy.example:3128
    GRPC_GO_LOG_SEVERITY_LEVEL: info
  install:
    disk: /dev/sda
    extraKernelArgs:
      - siderolink.api=https://omni.example:8090?jointoken=M-JOIN-TOKEN
      - console=ttyS0
  files:
    - path: /var/etc/app.conf
      op: create
      permissions: 0o600
      content: |
        api_login = M-FILE-CONTENT
  registries:
    config:
      registry.example:
        auth:
          username: M-REG-USER
          password: M-REG-PASS
          auth: M-REG-AUTH
          identityToken: M-REG-IDTOKEN
        tls:
          clientIdentity:
            crt: CRT
            key: M-REG-TLS-KEY
  systemDiskEncryption:
    state:
      provider: luks2
      keys:
        - slot: 0
          static:
            passphrase: M-DISK-PASSPHRASE
  network:
    hostname: cp-1
    interfaces:
      - interface: wg0
        wireguard:
          privateKey: M-WG-KEY
        vip:
          ip: 10.0.0.5
          hcloud:
            apiToken: M-HCLOUD-TOKEN
  pods:
    - apiVersion: v1
      kind: Pod
      spec:
        containers:
          - name: x
            env:
              - name: DB_PASSWORD
                value: M-POD-ENV
              - name: MODE
                value: plain
  logging:
    destinations:
      - endpoint: tcp://loguser:M-LOG-PASS@logs.example:5000
        format: json_lines
cluster:
  id: clusterid
  secret: M-CLUSTER-SECRET
  token: abcdef.0123456789abcdef
  secretboxEncryptionSecret: M-SECRETBOX
  aescbcEncryptionSecret: M-AESCBC
  ca:
    crt: CRT
    key: M-K8S-CA-KEY
  aggregatorCA:
    crt: CRT
    key: M-AGG-KEY
  serviceAccount:
    key: M-SA-KEY
  etcd:
    ca:
      crt: CRT
      key: M-ETCD-KEY
  apiServer:
    extraArgs:
      oidc-client-secret: M-OIDC-SECRET
  extraManifests:
    - https://manifests.example/app.yaml
  extraManifestHeaders:
    X-Custom: M-HEADER-VALUE
  inlineManifests:
    - name: creds
      contents: |
        apiVersion: v1
        kind: Secret
        metadata:
          name: creds
        stringData:
          anything: M-INLINE-STRINGDATA
        data:
          other: TS1JTkxJTkUtREFUQQ==
        ---
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: plain
        data:
          greeting: hello
---
apiVersion: v1alpha1
kind: VolumeConfig
name: EPHEMERAL
encryption:
  keys:
    - slot: 0
      static:
        passphrase: M-VOLUME-PASSPHRASE
---
apiVersion: v1alpha1
kind: RegistryAuthConfig
name: registry.example
username: M-RAC-USER
password: M-RAC-PASS
---
apiVersion: v1alpha1
kind: SideroLinkConfig
apiUrl: https://omni.example:8090/?jointoken=M-SIDEROLINK-TOKEN
"#;

    #[test]
    fn every_secret_field_of_the_machine_config_is_redacted() {
        let out = redact_machine_config(FULL_CONFIG);
        for marker in [
            "M-TOKEN",
            "M-CA-KEY",
            "M-PROXY-PASS",
            "proxyuser",
            "M-JOIN-TOKEN",
            "M-FILE-CONTENT",
            "M-REG-USER",
            "M-REG-PASS",
            "M-REG-AUTH",
            "M-REG-IDTOKEN",
            "M-REG-TLS-KEY",
            "M-DISK-PASSPHRASE",
            "M-WG-KEY",
            "M-HCLOUD-TOKEN",
            "M-POD-ENV",
            "M-LOG-PASS",
            "M-CLUSTER-SECRET",
            "abcdef.0123456789abcdef",
            "M-SECRETBOX",
            "M-AESCBC",
            "M-K8S-CA-KEY",
            "M-AGG-KEY",
            "M-SA-KEY",
            "M-ETCD-KEY",
            "M-OIDC-SECRET",
            "M-HEADER-VALUE",
            "M-INLINE-STRINGDATA",
            "TS1JTkxJTkUtREFUQQ==",
            "M-VOLUME-PASSPHRASE",
            "M-RAC-USER",
            "M-RAC-PASS",
            "M-SIDEROLINK-TOKEN",
        ] {
            assert!(!out.contains(marker), "{marker} leaked:\n{out}");
        }
        for kept in [
            "hostname: cp-1",
            "console=ttyS0",
            "GRPC_GO_LOG_SEVERITY_LEVEL: info",
            "proxy.example:3128",
            "greeting: hello",
            "value: plain",
            "https://manifests.example/app.yaml",
            "kind: VolumeConfig",
            "crt: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t",
        ] {
            assert!(out.contains(kept), "{kept} lost:\n{out}");
        }
    }

    #[test]
    fn file_text_secrets_are_redacted() {
        let text = "level=info msg=ok token=T-ONE other=1\n\
                    Authorization: Bearer T-TWO\n\
                    {\"password\": \"T-THREE\", \"user\": \"kept\"}\n\
                    proxy http://u:T-FOUR@proxy:3128/path\n\
                    -----BEGIN EC PRIVATE KEY-----\nT-FIVE\n-----END EC PRIVATE KEY-----\n\
                    -----BEGIN CERTIFICATE-----\nCERTBODY\n-----END CERTIFICATE-----\n\
                    join abcdef.0123456789abcdef now\n\
                    bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl\n\
                    HOME=/root\0AWS_SECRET_ACCESS_KEY=T-SIX\0PATH=/bin\n\
                    -----BEGIN RSA PRIVATE KEY-----\nT-SEVEN-CUT-SHORT";
        let out = redact_file(text);
        for secret in [
            "T-ONE",
            "T-TWO",
            "T-THREE",
            "T-FOUR",
            "T-FIVE",
            "abcdef.0123456789abcdef",
            "eyJzdWIiOiJ4In0",
            "T-SIX",
            "T-SEVEN",
        ] {
            assert!(!out.contains(secret), "{secret} leaked:\n{out}");
        }
        for kept in [
            "level=info msg=ok",
            "other=1",
            "\"user\": \"kept\"",
            "proxy:3128/path",
            "CERTBODY",
            "PATH=/bin",
            "HOME=/root",
        ] {
            assert!(out.contains(kept), "{kept} lost:\n{out}");
        }
        let plain = "0.42 0.37 0.30 2/612 4211\nMemTotal: 8388608 kB\n";
        assert_eq!(redact_file(plain), plain);
    }

    #[test]
    fn base64_private_keys_are_redacted_and_certificates_kept() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let key = b64("-----BEGIN PRIVATE KEY-----\nB64-KEY-BODY\n-----END PRIVATE KEY-----\n");
        let cert = b64("-----BEGIN CERTIFICATE-----\nCERT\n-----END CERTIFICATE-----\n");
        let out = redact_text(&format!("a {key} b\nc {cert}\n"));
        assert!(!out.contains(&key[..20]), "{out}");
        assert!(out.contains(&cert), "{out}");
        let yaml = redact_yaml(&format!("data:\n  blob: {key}\n  cert: {cert}\n"));
        assert!(!yaml.contains(&key[..20]) && yaml.contains(&cert), "{yaml}");
    }

    #[test]
    fn whole_secret_documents_are_withheld() {
        for doc in [
            FULL_CONFIG,
            "machine:\n  type: worker\n  token: X\n",
            "apiVersion: v1\nkind: Config\nusers:\n  - name: a\n    user:\n      token: KTOKEN\n",
            "clusters: []\nusers:\n- user:\n    client-key-data: Zm9v\n",
            "context: a\ncontexts:\n  a:\n    ca: X\n    crt: Y\n    key: Z\n",
        ] {
            let out = redact_file(doc);
            assert!(out.starts_with(REDACTED), "{out}");
            assert!(!out.contains("KTOKEN") && !out.contains("Zm9v"));
        }
    }

    #[test]
    fn apply_summaries_lose_the_quoted_config_diff() {
        let text = "Dry run summary:\nApplied configuration with a mode: NO_REBOOT\nConfig diff:\n\n-       content: |\n-         login = D-FILE\n+   token: D-TOKEN\n";
        let out = redact_apply_summary(text);
        assert!(!out.contains("D-FILE") && !out.contains("D-TOKEN"), "{out}");
        assert!(
            out.contains("mode: NO_REBOOT") && out.contains("Config diff: [omitted"),
            "{out}"
        );
        assert_eq!(
            redact_apply_summary("Applied configuration without a reboot"),
            "Applied configuration without a reboot"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn redaction_never_panics_on_arbitrary_text(text in "\\PC{0,200}") {
            let _ = redact_yaml(&text);
            let _ = redact_file(&text);
            let _ = redact_text(&text);
            let _ = spec_object(&text);
            let _ = redact_apply_summary(&text);
        }

        #[test]
        fn planted_secrets_never_survive(
            prefix in "[a-zA-Z0-9 ,:=\n#-]{0,30}",
            key in prop_oneof![
                Just("token"), Just("password"), Just("secret"), Just("passphrase"),
                Just("clientKey"), Just("auth"), Just("identityToken"), Just("apiToken"),
            ],
            style in 0usize..4,
            suffix in "[a-zA-Z0-9 ,\n#-]{0,30}",
        ) {
            let secret = "PLANTED-S3CRET-VALUE";
            let line = match style {
                0 => format!("{key}: {secret}"),
                1 => format!("{key}={secret}"),
                2 => format!("\"{key}\": \"{secret}\""),
                _ => format!("url https://user:{secret}@host/x"),
            };
            let text = format!("{prefix}\n{line}\n{suffix}");
            prop_assert!(!redact_text(&text).contains(secret), "{}", text);
            prop_assert!(!redact_file(&text).contains(secret), "{}", text);
            let yaml = format!("a:\n  b:\n    {key}: {secret}\n  list:\n    - {key}: {secret}\n");
            prop_assert!(!redact_yaml(&yaml).contains(secret));
        }
    }
}
