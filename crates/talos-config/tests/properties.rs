//! Bounded property tests of talosconfig parsing (the `talosconfig` fuzz target explores the
//! same surface without a bound; see docs/reliability.md).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::sync::OnceLock;

use base64::Engine as _;
use proptest::prelude::*;
use talos_config::{Endpoint, TalosConfig};
use talos_sim::pki::{
    CertificateAuthority, IssuedCert, TalosconfigContext, Validity, render_talosconfig,
};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

struct Pki {
    ca: CertificateAuthority,
    admin: IssuedCert,
    other: IssuedCert,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let ca = CertificateAuthority::generate("prop").unwrap();
        let admin = ca.client_cert("os:admin", Validity::Current).unwrap();
        let other = CertificateAuthority::generate("other")
            .unwrap()
            .client_cert("os:reader", Validity::Current)
            .unwrap();
        Pki { ca, admin, other }
    })
}

/// Strings that look like what a talosconfig holds, and some that do not.
fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9.-]{0,20}(:[0-9]{1,6})?",
        "\\[[0-9a-f:]{0,20}\\](:[0-9]{0,6})?",
        "(https|tcp|grpc|ftp)://[a-z0-9.:\\[\\]]{0,20}/?",
        "[0-9a-f:]{2,30}",
        "\\PC{0,24}",
    ]
}

/// The key's PEM body lines and its base64 form: nothing of either may be shown.
fn key_fragments() -> Vec<String> {
    let key = &pki().admin.key_pem;
    let mut out: Vec<String> = key
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 16)
        .map(str::to_owned)
        .collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(key);
    out.push(b64[20..60].to_owned());
    // The `key:` value exactly as a talosconfig holds it (label as Talos writes it).
    let yaml = render_talosconfig(
        "k",
        &[TalosconfigContext {
            name: "k",
            endpoints: vec![],
            nodes: vec![],
            ca_pem: pki().ca.cert_pem(),
            client: &pki().admin,
        }],
    );
    if let Some(value) = yaml.lines().find_map(|l| l.trim().strip_prefix("key: ")) {
        out.push(value[20..60].to_owned());
    }
    out
}

fn assert_no_key(shown: &str) {
    for frag in key_fragments() {
        assert!(!shown.contains(&frag), "key material shown: {shown}");
    }
    assert!(
        !shown.contains("PRIVATE KEY-----\n"),
        "key material shown: {shown}"
    );
}

/// Loads and resolves every context; whatever happens, nothing panics and nothing shows the key.
fn exercise(yaml: &str) {
    match TalosConfig::from_yaml(yaml, "<prop>") {
        Err(e) => assert_no_key(&format!("{e} {e:?}")),
        Ok(cfg) => {
            assert_no_key(&format!("{cfg:?}"));
            for name in cfg.context_names() {
                match cfg.context(Some(&name)) {
                    Ok(ctx) => {
                        assert_no_key(&format!("{ctx:?}"));
                        assert!(!ctx.endpoints().is_empty());
                        for ep in ctx.endpoints() {
                            assert_ne!(ep.port(), 0);
                            assert!(!ep.host().is_empty());
                        }
                    }
                    Err(e) => assert_no_key(&format!("{e} {e:?} {:?}", e.kind())),
                }
            }
            let _ = cfg.context(None);
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// Arbitrary text, and arbitrary YAML-ish text, never panics the loader.
    #[test]
    fn any_text_loads_or_fails_cleanly(text in "\\PC{0,400}") {
        exercise(&text);
    }

    /// Real credentials with arbitrary endpoints, nodes and corrupted credential fields.
    #[test]
    fn real_credentials_with_arbitrary_fields(
        endpoints in proptest::collection::vec(field(), 0..4),
        nodes in proptest::collection::vec(field(), 0..4),
        corrupt in 0u8..8,
        cut in 0usize..200,
    ) {
        let p = pki();
        let mut yaml = render_talosconfig(
            "prop",
            &[TalosconfigContext {
                name: "prop",
                endpoints,
                nodes,
                ca_pem: p.ca.cert_pem(),
                client: if corrupt == 7 { &p.other } else { &p.admin },
            }],
        );
        // Damage one credential field: cut its base64 short, or drop it.
        let field = ["ca: ", "crt: ", "key: "][usize::from(corrupt % 3)];
        if corrupt < 6
            && let Some(at) = yaml.find(field)
        {
            let start = at + field.len();
            let end = yaml[start..].find('\n').map_or(yaml.len(), |n| start + n);
            let keep = cut.min(end - start);
            if corrupt < 3 {
                yaml.replace_range(start + keep..end, "");
            } else {
                yaml.replace_range(at..end, "");
            }
        }
        exercise(&yaml);
    }

    /// An endpoint that parses prints as a string that parses back to the same endpoint.
    #[test]
    fn endpoints_round_trip(s in field()) {
        if let Ok(ep) = s.parse::<Endpoint>() {
            prop_assert_ne!(ep.port(), 0);
            let again: Endpoint = ep.to_string().parse().map_err(|e| {
                TestCaseError::fail(format!("`{s}` parsed as `{ep}`, which does not parse: {e}"))
            })?;
            prop_assert_eq!(again, ep);
        }
    }
}

/// Found by `endpoints_round_trip`: a bare host with colons that is not an IPv6 address was
/// accepted, and printed as a bracketed address that does not parse.
#[test]
fn a_bare_host_with_colons_must_be_an_ipv6_address() {
    for bad in [":0:", "a:b:c", "host:1:2", "[a:b:c]"] {
        assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
    }
    let ep: Endpoint = "fd00::3".parse().unwrap();
    assert_eq!(ep.to_string(), "[fd00::3]:50000");
    assert_eq!(ep.to_string().parse::<Endpoint>().unwrap(), ep);
}

/// Found by the `talosconfig` fuzz target: a misplaced `key:` (indented as a context of its own)
/// made the parser's error quote the whole value — the base64 of the private key.
#[test]
fn a_misplaced_key_is_not_quoted_in_the_error() {
    let p = pki();
    let yaml = render_talosconfig(
        "prop",
        &[TalosconfigContext {
            name: "prop",
            endpoints: vec!["10.5.0.2".into()],
            nodes: vec![],
            ca_pem: p.ca.cert_pem(),
            client: &p.admin,
        }],
    );
    let misplaced = yaml.replace("        key: ", "    key: ");
    assert_ne!(misplaced, yaml, "the fixture moved the key");
    let err = TalosConfig::from_yaml(&misplaced, "<prop>").unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(shown.contains("line "), "{shown}");
    let value = yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("key: "))
        .unwrap();
    assert!(!shown.contains(&value[..40]), "{shown}");
    assert_no_key(&shown);
}
