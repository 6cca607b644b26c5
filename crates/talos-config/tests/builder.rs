//! Contexts from code: `Credentials::from_pem` and `Context::builder` give what resolving a
//! talosconfig gives, with the same checks; `proxy-url` is validated (http only) and never shown.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use base64::Engine as _;
use talos_config::{
    ConfigError, ConfigErrorKind, Context, Credentials, DEFAULT_PROXY_PORT, Endpoint, TalosConfig,
};
use talos_sim::pki::{CertificateAuthority, IssuedCert, Validity};

struct Pki {
    ca: CertificateAuthority,
    admin: IssuedCert,
}

fn pki() -> Pki {
    let ca = CertificateAuthority::generate("builder-test").unwrap();
    let admin = ca.client_cert("os:admin", Validity::Current).unwrap();
    Pki { ca, admin }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

impl Pki {
    fn credentials(&self) -> Credentials {
        Credentials::from_pem(
            self.ca.cert_pem(),
            &self.admin.cert_pem,
            self.admin.talos_key_pem(),
        )
        .unwrap()
    }

    fn yaml(&self, extra: &str) -> String {
        format!(
            "context: prod\ncontexts:\n  prod:\n    endpoints: [\"10.5.0.2\", \"[fd00::3]:50001\", \"10.5.0.2:50000\"]\n    nodes: [\" 10.5.0.2 \", \"[fd00::4]\", \"\", \"10.5.0.2\"]\n    cluster: prod-cluster\n{extra}    ca: {}\n    crt: {}\n    key: {}\n",
            b64(self.ca.cert_pem()),
            b64(&self.admin.cert_pem),
            b64(&self.admin.talos_key_pem()),
        )
    }

    fn resolve(&self, extra: &str) -> Result<Context, ConfigError> {
        TalosConfig::from_yaml(&self.yaml(extra), "/test/config")
            .unwrap()
            .context(None)
    }
}

fn der(creds: &Credentials) -> (Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<u8>) {
    (
        creds.ca_certificates().iter().map(|c| c.to_vec()).collect(),
        creds.client_chain().iter().map(|c| c.to_vec()).collect(),
        creds.private_key().secret_der().to_vec(),
    )
}

#[test]
fn the_builder_gives_what_the_talosconfig_gives() {
    let pki = pki();
    let from_yaml = pki
        .resolve("    proxy-url: http://u:pw@proxy.example:3128\n")
        .unwrap();
    let from_code = Context::builder("prod", pki.credentials())
        .endpoints(["10.5.0.2", "[fd00::3]:50001", "10.5.0.2:50000"])
        .nodes([" 10.5.0.2 ", "[fd00::4]", "", "10.5.0.2"])
        .cluster("prod-cluster")
        .proxy_url("http://u:pw@proxy.example:3128")
        .build()
        .unwrap();
    for ctx in [&from_yaml, &from_code] {
        assert_eq!(ctx.name(), "prod");
        assert_eq!(ctx.cluster(), Some("prod-cluster"));
        // Defaults applied, repeats kept once, in order.
        assert_eq!(
            ctx.endpoints(),
            &[
                Endpoint::new("10.5.0.2", 50000),
                Endpoint::new("fd00::3", 50001)
            ]
        );
        assert_eq!(ctx.nodes(), &["10.5.0.2", "fd00::4"]);
    }
    assert_eq!(from_yaml.proxy(), from_code.proxy());
    assert_eq!(der(from_yaml.credentials()), der(from_code.credentials()));
    // The Debug forms agree too: nothing differs between the two ways.
    assert_eq!(format!("{from_yaml:?}"), format!("{from_code:?}"));
}

#[test]
fn from_pem_accepts_talos_and_standard_key_labels() {
    let pki = pki();
    let talos = pki.credentials();
    let standard =
        Credentials::from_pem(pki.ca.cert_pem(), &pki.admin.cert_pem, &pki.admin.key_pem).unwrap();
    assert_eq!(der(&talos), der(&standard));
    // Bytes work as well as text, and a chain may follow the certificate.
    let chain = format!("{}{}", pki.admin.cert_pem, pki.ca.cert_pem());
    let creds = Credentials::from_pem(
        pki.ca.cert_pem().to_owned().into_bytes(),
        chain.as_bytes(),
        pki.admin.key_pem.as_bytes(),
    )
    .unwrap();
    assert_eq!(creds.client_chain().len(), 2);
}

#[test]
fn from_pem_refusals_name_the_argument_not_the_content() {
    let pki = pki();
    let other = pki.ca.client_cert("os:reader", Validity::Current).unwrap();
    let ca = pki.ca.cert_pem();
    let crt = pki.admin.cert_pem.as_str();
    let key = pki.admin.talos_key_pem();
    let cases: [(&str, &str, &str, &str, &str); 7] = [
        ("", crt, &key, "ca", "empty"),
        (ca, "  \n", &key, "crt", "empty"),
        // A talosconfig field passed without base64-decoding it.
        (ca, crt, &b64(&key), "key", "base64-decode"),
        (&b64(ca), crt, &key, "ca", "not PEM text"),
        // Certificate and key swapped.
        (ca, &key, crt, "crt", "no CERTIFICATE"),
        (ca, crt, ca, "key", "no PRIVATE KEY"),
        (ca, crt, &other.key_pem, "crt/key", "does not belong"),
    ];
    for (ca, crt, key, field, reason) in cases {
        let err = Credentials::from_pem(ca, crt, key).unwrap_err();
        assert!(
            matches!(&err, ConfigError::InvalidPem { field: f, .. } if *f == field),
            "{field}: {err:?}"
        );
        assert_eq!(err.kind(), ConfigErrorKind::InvalidConfig);
        let text = err.to_string();
        assert!(
            text.contains(reason) && text.contains(&format!("invalid {field} PEM")),
            "{text}"
        );
        let key_body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
        for leaked in [&key_body[..key_body.len().min(24)], &other.key_pem[40..70]] {
            assert!(leaked.is_empty() || !text.contains(leaked), "{text}");
            assert!(leaked.is_empty() || !format!("{err:?}").contains(leaked));
        }
    }
    let not_utf8 = Credentials::from_pem(ca, [0xff, 0xfe, 0x00], &key).unwrap_err();
    assert!(not_utf8.to_string().contains("UTF-8"), "{not_utf8}");
}

#[test]
fn builder_refusals_name_the_context() {
    let pki = pki();
    let err = Context::builder("lab", pki.credentials())
        .build()
        .unwrap_err();
    assert!(
        matches!(err, ConfigError::NoEndpoints { ref context } if context == "lab"),
        "{err}"
    );

    let err = Context::builder("lab", pki.credentials())
        .endpoint("10.0.0.1")
        .endpoint("10.0.0.1:99999")
        .build()
        .unwrap_err();
    assert!(
        matches!(err, ConfigError::InvalidEndpoint { ref endpoint, .. } if endpoint == "10.0.0.1:99999"),
        "{err}"
    );
    assert!(err.to_string().contains("`lab`"), "{err}");

    let err = Context::builder("lab", pki.credentials())
        .endpoint("cp\r\nX-Injected:1")
        .build()
        .unwrap_err();
    assert!(matches!(err, ConfigError::InvalidEndpoint { .. }), "{err}");
}

#[test]
fn only_http_proxies_are_accepted_and_others_are_refused_at_resolve_time() {
    let pki = pki();
    for (url, scheme) in [
        ("socks5://proxy:1080", "socks5"),
        ("https://proxy:443", "https"),
    ] {
        for err in [
            pki.resolve(&format!("    proxy-url: {url}\n")).unwrap_err(),
            Context::builder("prod", pki.credentials())
                .endpoint("10.5.0.2")
                .proxy_url(url)
                .build()
                .unwrap_err(),
        ] {
            assert!(
                matches!(&err, ConfigError::UnsupportedProxy { scheme: s, context } if s == scheme && context == "prod"),
                "{err:?}"
            );
            assert_eq!(err.kind(), ConfigErrorKind::InvalidConfig);
            let text = err.to_string();
            assert!(
                text.contains("only http://") && text.contains("remove proxy-url"),
                "{text}"
            );
        }
    }
    let err = pki
        .resolve("    proxy-url: \"proxy.example:3128\"\n")
        .unwrap_err();
    assert!(matches!(err, ConfigError::InvalidProxy { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("http://[user:password@]host[:port]"),
        "{err}"
    );

    // An empty proxy-url is none, as in talosctl; no proxy-url is none.
    assert!(
        pki.resolve("    proxy-url: \"\"\n")
            .unwrap()
            .proxy()
            .is_none()
    );
    assert!(pki.resolve("").unwrap().proxy().is_none());
    let ctx = pki.resolve("    proxy-url: http://[fd00::9]\n").unwrap();
    let proxy = ctx.proxy().unwrap();
    assert_eq!(
        (proxy.host(), proxy.port()),
        ("fd00::9", DEFAULT_PROXY_PORT)
    );
    assert!(!proxy.has_credentials());
}

#[test]
fn proxy_passwords_never_appear_in_formatted_output() {
    let pki = pki();
    let line = "    proxy-url: http://proxy-user:PROXY-S3CRET@proxy.example:3128/\n";
    let config = TalosConfig::from_yaml(&pki.yaml(line), "/test/config").unwrap();
    let ctx = config.context(None).unwrap();
    let builder = Context::builder("prod", pki.credentials())
        .endpoint("10.5.0.2")
        .proxy_url("http://proxy-user:PROXY-S3CRET@proxy.example:3128/");
    let bad = pki
        .resolve("    proxy-url: http://proxy-user:PROXY-S3CRET@proxy.example:3128/x\n")
        .unwrap_err();
    let outputs = [
        format!("{config:?}"),
        format!("{:?}", config.raw()),
        format!("{ctx:?}"),
        format!("{ctx:#?}"),
        format!("{builder:?}"),
        format!("{}", ctx.proxy().unwrap()),
        format!("{bad}"),
        format!("{bad:?}"),
    ];
    for out in &outputs {
        assert!(!out.contains("PROXY-S3CRET"), "password leaked into: {out}");
        assert!(!out.contains("proxy-user"), "user leaked into: {out}");
    }
    assert!(format!("{:?}", config.raw()).contains("[redacted]@proxy.example:3128"));
    // The credentials are kept for the proxy itself: "proxy-user:PROXY-S3CRET".
    assert_eq!(
        ctx.proxy().unwrap().proxy_authorization(),
        Some("Basic cHJveHktdXNlcjpQUk9YWS1TM0NSRVQ=")
    );
}
