//! Behaviour of talosconfig loading and resolution, with credentials generated at test time.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use talos_config::{ConfigError, ConfigErrorKind, Endpoint, TalosConfig};
use talos_sim::pki::{
    CertificateAuthority, IssuedCert, TalosconfigContext, Validity, render_talosconfig,
};

struct Fixture {
    ca: CertificateAuthority,
    admin: IssuedCert,
}

impl Fixture {
    fn new() -> Self {
        let ca = CertificateAuthority::generate("test-cluster").unwrap();
        let admin = ca.client_cert("os:admin", Validity::Current).unwrap();
        Self { ca, admin }
    }

    fn yaml(&self) -> String {
        render_talosconfig(
            "prod",
            &[
                TalosconfigContext {
                    name: "prod",
                    endpoints: vec!["10.5.0.2".into(), "[fd00::3]:50001".into()],
                    nodes: vec!["10.5.0.2".into(), "10.5.0.4".into()],
                    ca_pem: self.ca.cert_pem(),
                    client: &self.admin,
                },
                TalosconfigContext {
                    name: "staging",
                    endpoints: vec!["cp.staging.example:50000".into()],
                    nodes: vec![],
                    ca_pem: self.ca.cert_pem(),
                    client: &self.admin,
                },
            ],
        )
    }

    /// Every secret string a formatted value must never contain.
    fn secrets(&self) -> Vec<String> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(self.admin.talos_key_pem());
        let body: String = self
            .admin
            .key_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        vec![b64, body]
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn parse(yaml: &str) -> TalosConfig {
    TalosConfig::from_yaml(yaml, "/test/config").unwrap()
}

#[test]
fn resolves_current_context_with_ed25519_talos_key() {
    let fx = Fixture::new();
    let config = parse(&fx.yaml());
    assert_eq!(config.current_context(), Some("prod"));
    assert_eq!(config.context_names(), vec!["prod", "staging"]);

    let ctx = config.context(None).unwrap();
    assert_eq!(ctx.name(), "prod");
    assert_eq!(
        ctx.endpoints(),
        &[
            Endpoint::new("10.5.0.2", 50000),
            Endpoint::new("fd00::3", 50001)
        ]
    );
    assert_eq!(ctx.nodes(), &["10.5.0.2".to_owned(), "10.5.0.4".to_owned()]);
    assert_eq!(ctx.credentials().ca_certificates().len(), 1);
    assert_eq!(ctx.credentials().client_chain().len(), 1);
    assert!(matches!(
        ctx.credentials().private_key(),
        rustls_pki_types::PrivateKeyDer::Pkcs8(_)
    ));
}

#[test]
fn any_context_resolves_by_name() {
    let fx = Fixture::new();
    let ctx = parse(&fx.yaml()).context(Some("staging")).unwrap();
    assert_eq!(
        ctx.endpoints(),
        &[Endpoint::new("cp.staging.example", 50000)]
    );
    assert!(ctx.nodes().is_empty());
}

#[test]
fn plain_pkcs8_and_ecdsa_keys_are_accepted() {
    let fx = Fixture::new();
    // The same Ed25519 key under the standard PKCS#8 label.
    let yaml = format!(
        "context: a\ncontexts:\n  a:\n    endpoints: [10.0.0.1]\n    ca: {}\n    crt: {}\n    key: {}\n",
        b64(fx.ca.cert_pem()),
        b64(&fx.admin.cert_pem),
        b64(&fx.admin.key_pem)
    );
    parse(&yaml).context(None).unwrap();

    // Plain (not base64) PEM is tolerated too.
    let yaml = format!(
        "context: a\ncontexts:\n  a:\n    endpoints: [10.0.0.1]\n    ca: |\n{}\n    crt: {}\n    key: {}\n",
        indent(fx.ca.cert_pem()),
        b64(&fx.admin.cert_pem),
        b64(&fx.admin.talos_key_pem())
    );
    parse(&yaml).context(None).unwrap();
}

fn indent(pem: &str) -> String {
    pem.lines()
        .map(|l| format!("      {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn unknown_fields_are_ignored_and_target_is_upgraded() {
    let fx = Fixture::new();
    let yaml = format!(
        "context: old\nsomething-new: 1\ncontexts:\n  old:\n    target: 192.168.1.10\n    future-field: {{a: b}}\n    ca: {}\n    crt: {}\n    key: {}\n",
        b64(fx.ca.cert_pem()),
        b64(&fx.admin.cert_pem),
        b64(&fx.admin.talos_key_pem())
    );
    let ctx = parse(&yaml).context(None).unwrap();
    assert_eq!(ctx.endpoints(), &[Endpoint::new("192.168.1.10", 50000)]);
}

#[test]
fn missing_credentials_name_the_field_and_context() {
    let fx = Fixture::new();
    for (field, yaml) in [
        (
            "ca",
            format!(
                "contexts:\n  c:\n    endpoints: [h]\n    crt: {}\n    key: {}\n",
                b64(&fx.admin.cert_pem),
                b64(&fx.admin.key_pem)
            ),
        ),
        (
            "crt",
            format!(
                "contexts:\n  c:\n    endpoints: [h]\n    ca: {}\n    key: {}\n",
                b64(fx.ca.cert_pem()),
                b64(&fx.admin.key_pem)
            ),
        ),
        (
            "key",
            format!(
                "contexts:\n  c:\n    endpoints: [h]\n    ca: {}\n    crt: {}\n    key: \"\"\n",
                b64(fx.ca.cert_pem()),
                b64(&fx.admin.cert_pem)
            ),
        ),
    ] {
        let err = parse(&yaml).context(Some("c")).unwrap_err();
        assert_eq!(err.kind(), ConfigErrorKind::MissingCredentials, "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("`{field}`")) && text.contains("`c`"),
            "{text}"
        );
        assert!(text.contains("talosctl"), "says what to do next: {text}");
    }
}

#[test]
fn invalid_credentials_are_explained_without_content() {
    let fx = Fixture::new();
    let other = fx.ca.client_cert("os:admin", Validity::Current).unwrap();
    let cases = [
        (
            "ca",
            b64("not a pem"),
            b64(&fx.admin.cert_pem),
            b64(&fx.admin.key_pem),
            "no CERTIFICATE",
        ),
        (
            "ca",
            "\"%%%not-base64%%%\"".to_owned(),
            b64(&fx.admin.cert_pem),
            b64(&fx.admin.key_pem),
            "base64",
        ),
        (
            "key",
            b64(fx.ca.cert_pem()),
            b64(&fx.admin.cert_pem),
            b64(&fx.admin.cert_pem),
            "no PRIVATE KEY",
        ),
        (
            "crt/key",
            b64(fx.ca.cert_pem()),
            b64(&fx.admin.cert_pem),
            b64(&other.key_pem),
            "does not belong",
        ),
    ];
    for (field, ca, crt, key, reason) in cases {
        let yaml = format!(
            "contexts:\n  c:\n    endpoints: [h]\n    ca: {ca}\n    crt: {crt}\n    key: {key}\n"
        );
        let err = parse(&yaml).context(Some("c")).unwrap_err();
        assert_eq!(err.kind(), ConfigErrorKind::InvalidConfig);
        let text = err.to_string();
        assert!(
            text.contains(&format!("invalid `{field}`")) && text.contains(reason),
            "{text}"
        );
        assert!(
            !text.contains(&other.key_pem[40..80]) && !text.contains(&key[10..40]),
            "{text}"
        );
    }
}

#[test]
fn context_errors_list_what_exists() {
    let fx = Fixture::new();
    let config = parse(&fx.yaml());
    let err = config.context(Some("nope")).unwrap_err();
    assert!(matches!(err, ConfigError::ContextNotFound { .. }));
    assert!(err.to_string().contains("prod, staging"), "{err}");

    let no_current = parse(&fx.yaml().replacen("context: prod", "context: \"\"", 1));
    let err = no_current.context(None).unwrap_err();
    assert!(matches!(err, ConfigError::NoCurrentContext { .. }), "{err}");
    assert!(err.to_string().contains("prod, staging"), "{err}");
}

#[test]
fn endpoint_problems_are_invalid_config() {
    let fx = Fixture::new();
    let creds = format!(
        "ca: {}\n    crt: {}\n    key: {}",
        b64(fx.ca.cert_pem()),
        b64(&fx.admin.cert_pem),
        b64(&fx.admin.key_pem)
    );
    let err = parse(&format!(
        "contexts:\n  c:\n    endpoints: []\n    {creds}\n"
    ))
    .context(Some("c"))
    .unwrap_err();
    assert!(matches!(err, ConfigError::NoEndpoints { .. }), "{err}");
    let err = parse(&format!(
        "contexts:\n  c:\n    endpoints: ['10.0.0.1:99999']\n    {creds}\n"
    ))
    .context(Some("c"))
    .unwrap_err();
    assert!(matches!(err, ConfigError::InvalidEndpoint { .. }), "{err}");
    assert!(err.to_string().contains("10.0.0.1:99999"));
}

#[test]
fn invalid_yaml_reports_line_and_column() {
    let err =
        TalosConfig::from_yaml("context: a\ncontexts:\n  a: [unclosed\n", "/x/config").unwrap_err();
    match &err {
        ConfigError::InvalidYaml {
            line, column, path, ..
        } => {
            assert!(line.is_some() && column.is_some());
            assert_eq!(path, &PathBuf::from("/x/config"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("at line"), "{err}");
    assert_eq!(err.kind(), ConfigErrorKind::InvalidConfig);

    let err = TalosConfig::from_yaml("contexts: 5\n", "/x/config").unwrap_err();
    assert!(matches!(err, ConfigError::InvalidYaml { .. }), "{err}");
}

#[test]
fn identity_auth_is_reported_as_unsupported() {
    let yaml = "context: omni\ncontexts:\n  omni:\n    endpoints: [https://acme.omni.example]\n    auth:\n      siderov1:\n        identity: me@example.com\n";
    let err = parse(yaml).context(None).unwrap_err();
    assert!(matches!(err, ConfigError::UnsupportedAuth { .. }), "{err}");
    assert_eq!(err.kind(), ConfigErrorKind::MissingCredentials);
    assert!(err.to_string().contains("siderov1"), "{err}");
    assert_eq!(parse(yaml).summaries()[0].auth, "siderov1");
}

#[test]
fn summaries_show_no_secrets() {
    let fx = Fixture::new();
    let summaries = parse(&fx.yaml()).summaries();
    assert_eq!(summaries.len(), 2);
    assert!(summaries[0].current && !summaries[1].current);
    assert_eq!(summaries[0].auth, "client certificate");
    let text = format!("{summaries:?}");
    for secret in fx.secrets() {
        assert!(!text.contains(&secret));
    }
}

#[test]
fn no_key_material_in_any_formatted_output() {
    let fx = Fixture::new();
    let config = parse(&fx.yaml());
    let ctx = config.context(None).unwrap();
    let mismatched = format!(
        "contexts:\n  c:\n    endpoints: [h]\n    ca: {}\n    crt: {}\n    key: {}\n",
        b64(fx.ca.cert_pem()),
        b64(&fx
            .ca
            .client_cert("os:reader", Validity::Current)
            .unwrap()
            .cert_pem),
        b64(&fx.admin.talos_key_pem())
    );
    let err = parse(&mismatched).context(Some("c")).unwrap_err();
    let outputs = [
        format!("{config:?}"),
        format!("{config:#?}"),
        format!("{ctx:?}"),
        format!("{:?}", ctx.credentials()),
        format!("{:?}", config.raw()),
        format!("{err}"),
        format!("{err:?}"),
        format!("{:?}", fx.admin),
    ];
    for out in &outputs {
        for secret in fx.secrets() {
            assert!(!out.contains(&secret), "secret leaked into: {out}");
        }
    }
    assert!(format!("{ctx:?}").contains("[redacted]"));
}

fn env_with(vars: Vec<(&'static str, OsString)>) -> impl Fn(&str) -> Option<OsString> {
    move |name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    }
}

fn write_config(dir: &Path, rel: &str, body: &str) -> PathBuf {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, body).unwrap();
    path
}

#[test]
fn lookup_follows_talosctl_order() {
    let fx = Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let home_cfg = write_config(&home, ".talos/config", &fx.yaml());

    let env = env_with(vec![("HOME", home.clone().into_os_string())]);
    assert_eq!(
        TalosConfig::load_with_env(None, &env).unwrap().path(),
        home_cfg
    );

    // $TALOSCONFIG wins over ~/.talos/config when it exists...
    let explicit_env = write_config(dir.path(), "env/talosconfig", &fx.yaml());
    let env = env_with(vec![
        ("HOME", home.clone().into_os_string()),
        ("TALOSCONFIG", explicit_env.clone().into_os_string()),
    ]);
    assert_eq!(
        TalosConfig::load_with_env(None, &env).unwrap().path(),
        explicit_env
    );

    // ...and an explicit path wins over everything.
    let flag = write_config(dir.path(), "flag/config", &fx.yaml());
    assert_eq!(
        TalosConfig::load_with_env(Some(&flag), &env)
            .unwrap()
            .path(),
        flag
    );

    // $TALOS_HOME replaces ~/.talos.
    let th = dir.path().join("talos-home");
    let th_cfg = write_config(&th, "config", &fx.yaml());
    let env = env_with(vec![
        ("HOME", home.into_os_string()),
        ("TALOS_HOME", th.into_os_string()),
    ]);
    assert_eq!(
        TalosConfig::load_with_env(None, &env).unwrap().path(),
        th_cfg
    );
}

#[test]
fn not_found_lists_every_path_tried() {
    let dir = tempfile::tempdir().unwrap();
    let env = env_with(vec![
        ("HOME", dir.path().join("h").into_os_string()),
        ("TALOSCONFIG", dir.path().join("missing").into_os_string()),
    ]);
    let err = TalosConfig::load_with_env(None, &env).unwrap_err();
    let ConfigError::NotFound { tried } = &err else {
        panic!("{err:?}")
    };
    if !Path::new(talos_config::SERVICE_ACCOUNT_CONFIG).exists() {
        assert_eq!(tried.len(), 3);
    }
    let text = err.to_string();
    assert!(
        text.contains("missing")
            && text.contains(".talos/config")
            && text.contains("talos.dev/config"),
        "{text}"
    );
    assert!(text.contains("TALOSCONFIG"), "says what to do: {text}");
}

/// A tracing writer that keeps everything written to it.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(unix)]
#[test]
fn warns_when_the_file_is_readable_by_others() {
    use std::os::unix::fs::PermissionsExt as _;
    let fx = Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "config", &fx.yaml());

    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        TalosConfig::from_file(&path).unwrap();
        assert!(captured.0.lock().unwrap().is_empty(), "no warning for 0600");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        TalosConfig::from_file(&path).unwrap();
    });
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("readable by group or others") && log.contains("644"),
        "{log}"
    );
    let _ = std::io::stderr().flush();
}

#[test]
fn unreadable_path_is_an_io_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = TalosConfig::from_file(dir.path()).unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains(&dir.path().display().to_string()));
}
