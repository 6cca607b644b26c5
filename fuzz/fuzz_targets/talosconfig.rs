//! talosconfig parsing and context resolution: any bytes, no panic; errors and Debug output
//! never echo key material (the `key:` value, or a PEM block).
#![no_main]

use libfuzzer_sys::fuzz_target;
use talos_config::TalosConfig;

/// Fails if `shown` contains a PEM block or the (long enough) `key:` value of the input.
fn assert_no_key(yaml: &str, shown: &str) {
    assert!(
        !shown.contains("-----BEGIN"),
        "a PEM block is shown: {shown}"
    );
    for line in yaml.lines() {
        if let Some(value) = line.trim().strip_prefix("key:") {
            let value = value.trim().trim_matches('"');
            if value.len() >= 16 {
                assert!(!shown.contains(value), "the key is shown: {shown}");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(yaml) = std::str::from_utf8(data) else {
        return;
    };
    let config = match TalosConfig::from_yaml(yaml, "<fuzz>") {
        Ok(config) => config,
        Err(e) => {
            assert_no_key(yaml, &format!("{e} {e:?} {:?}", e.kind()));
            return;
        }
    };
    let _ = config.current_context();
    for name in config.context_names() {
        match config.context(Some(&name)) {
            Ok(ctx) => {
                assert_no_key(yaml, &format!("{ctx:?}"));
            }
            Err(e) => {
                assert_no_key(yaml, &format!("{e} {e:?}"));
            }
        }
    }
    let _ = config.context(None);
});
