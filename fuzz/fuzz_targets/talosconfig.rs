//! talosconfig parsing and context resolution: any bytes, no panic; errors and Debug output
//! never echo key material (the `key:` value, or a PEM block).
#![no_main]

use libfuzzer_sys::fuzz_target;
use talos_config::TalosConfig;

/// Fails if `shown` contains one of the (long enough) `keys`, or a PEM block (decoded credentials)
/// that the input did not hold as plain text.
fn assert_no_key(yaml: &str, keys: &[String], shown: &str) {
    if !yaml.contains("-----BEGIN") {
        assert!(
            !shown.contains("-----BEGIN"),
            "a PEM block is shown: {shown}"
        );
    }
    for key in keys {
        assert!(!shown.contains(key.as_str()), "the key is shown: {shown}");
    }
}

/// The values of `key:` lines (for a document that does not parse, where one may be misplaced).
fn key_lines(yaml: &str) -> Vec<String> {
    yaml.lines()
        .filter_map(|l| l.trim().strip_prefix("key: "))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .filter(|v| v.len() >= 16)
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Ok(yaml) = std::str::from_utf8(data) else {
        return;
    };
    let config = match TalosConfig::from_yaml(yaml, "<fuzz>") {
        Ok(config) => config,
        Err(e) => {
            assert_no_key(yaml, &key_lines(yaml), &format!("{e} {e:?} {:?}", e.kind()));
            return;
        }
    };
    // The keys as parsed, unless the same text is also an endpoint, node or name (which errors
    // may rightly quote).
    let raw = config.raw();
    let visible: Vec<&str> = raw
        .contexts
        .iter()
        .flat_map(|(name, c)| {
            let mut v: Vec<&str> = c
                .endpoints
                .iter()
                .chain(&c.nodes)
                .map(String::as_str)
                .collect();
            v.push(name);
            v.extend(c.target.as_deref());
            v.extend(c.cluster.as_deref());
            v.extend(c.proxy_url.as_deref());
            v
        })
        .chain(raw.context.as_deref())
        .collect();
    let keys: Vec<String> = raw
        .contexts
        .values()
        .filter_map(|c| c.key.clone())
        .filter(|k| k.len() >= 16 && !visible.iter().any(|v| v.contains(k.as_str())))
        .collect();
    let _ = config.current_context();
    for name in config.context_names() {
        match config.context(Some(&name)) {
            Ok(ctx) => assert_no_key(yaml, &keys, &format!("{ctx:?}")),
            Err(e) => assert_no_key(yaml, &keys, &format!("{e} {e:?}")),
        }
    }
    let _ = config.context(None);
});
