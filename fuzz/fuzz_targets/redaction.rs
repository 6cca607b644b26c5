//! Redaction: arbitrary text and YAML never panic, and a secret planted in a known secret field of a
//! machine configuration (or as a PEM private key anywhere) never survives.
#![no_main]

use libfuzzer_sys::fuzz_target;
use talos_mcp::fuzzing::{redact_file, redact_machine_config, redact_text, redact_yaml};

const PLANTED: &str = "FUZZ-PLANTED-SECRET";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Arbitrary input: only that nothing panics.
    let _ = redact_yaml(text);
    let _ = redact_text(text);
    let _ = redact_file(text);
    // The input as the value of secret fields of a machine config; the marker must go.
    let value = text.replace(['\n', '\r', '"', '\\'], " ");
    if value.contains("PLANTED") {
        // The marker must come only from the secret fields below.
        return;
    }
    let config = format!(
        "version: v1alpha1\nmachine:\n  token: \"{value}{PLANTED}\"\n  ca:\n    crt: c\n    key: \"{PLANTED}{value}\"\n  env:\n    https_proxy: \"http://u:{PLANTED}@proxy:3128\"\ncluster:\n  secret: \"{PLANTED}\"\n  name: \"{value}\"\n"
    );
    let out = redact_machine_config(&config);
    assert!(!out.contains(PLANTED), "a planted secret survived: {out}");
    let pem = format!(
        "{value}\n-----BEGIN PRIVATE KEY-----\n{PLANTED}\n-----END PRIVATE KEY-----\n{value}"
    );
    assert!(!redact_file(&pem).contains(PLANTED), "a PEM key survived");
});
