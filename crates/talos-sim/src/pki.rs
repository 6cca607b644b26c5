//! Certificates for a simulated cluster, generated at run time with rcgen (never stored).
//!
//! Mirrors Talos: an Ed25519 OS CA; apid's server certificate carries the node's addresses as SANs;
//! client certificates carry their role (`os:admin`, `os:operator`, `os:reader`, …) as the subject
//! Organization and the clientAuth extended key usage; keys are PEM-labelled `ED25519 PRIVATE KEY`
//! in talosconfigs.

use std::fmt;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ED25519, SanType,
};
use time::OffsetDateTime;

/// Errors from certificate generation.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused the parameters or failed to sign.
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// How long generated certificates stay valid.
const VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// A certificate and its private key, both PEM. `Debug` hides the key.
#[derive(Clone)]
pub struct IssuedCert {
    /// The certificate, PEM `CERTIFICATE`.
    pub cert_pem: String,
    /// The PKCS#8 private key, PEM `PRIVATE KEY`.
    pub key_pem: String,
}

impl IssuedCert {
    /// The key as Talos writes it: the same PKCS#8 body under the label `ED25519 PRIVATE KEY`.
    pub fn talos_key_pem(&self) -> String {
        self.key_pem
            .replace("PRIVATE KEY-----", "ED25519 PRIVATE KEY-----")
    }
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &"[redacted]")
            .finish()
    }
}

/// An OS certificate authority that issues server and client certificates.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .finish_non_exhaustive()
    }
}

/// Validity window for a certificate.
#[derive(Debug, Clone, Copy)]
pub enum Validity {
    /// Valid from an hour ago for a year.
    Current,
    /// Expired: valid for a day, ending a day ago.
    Expired,
}

impl Validity {
    fn apply(self, params: &mut CertificateParams) {
        let now = OffsetDateTime::now_utc();
        let hour = time::Duration::hours(1);
        let day = time::Duration::days(1);
        match self {
            Self::Current => {
                params.not_before = now - hour;
                params.not_after = now + VALIDITY;
            }
            Self::Expired => {
                params.not_before = now - day - day;
                params.not_after = now - day;
            }
        }
    }
}

impl CertificateAuthority {
    /// Generates a fresh Ed25519 CA whose subject Organization is `talos`.
    pub fn generate(common_name: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ED25519)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::OrganizationName, "talos");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        Validity::Current.apply(&mut params);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A server certificate for apid with the given SANs (IP addresses become IP SANs).
    pub fn server_cert(&self, sans: &[&str], validity: Validity) -> Result<IssuedCert, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ED25519)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, "apid");
        params.subject_alt_names = sans
            .iter()
            .map(|san| match san.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName((*san).try_into()?)),
            })
            .collect::<Result<_, rcgen::Error>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity.apply(&mut params);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A client certificate whose subject Organization is `role` (e.g. `os:admin`).
    pub fn client_cert(&self, role: &str, validity: Validity) -> Result<IssuedCert, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ED25519)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::OrganizationName, role);
        params
            .distinguished_name
            .push(DnType::CommonName, "talos-mcp");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity.apply(&mut params);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// One context to render into a talosconfig.
#[derive(Debug, Clone)]
pub struct TalosconfigContext<'a> {
    /// Context name.
    pub name: &'a str,
    /// Endpoints (`host:port`).
    pub endpoints: Vec<String>,
    /// Default nodes.
    pub nodes: Vec<String>,
    /// CA certificate PEM.
    pub ca_pem: &'a str,
    /// Client certificate and key.
    pub client: &'a IssuedCert,
}

/// Renders a talosconfig as talosctl writes it: base64 PEM fields, key labelled for Ed25519.
pub fn render_talosconfig(current: &str, contexts: &[TalosconfigContext<'_>]) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let list = |items: &[String]| {
        items
            .iter()
            .map(|i| format!("\n            - \"{i}\""))
            .collect::<String>()
    };
    let mut out = format!("context: {current}\ncontexts:\n");
    for ctx in contexts {
        // Writing into a String cannot fail.
        let _ = write!(
            out,
            "    {name}:\n        endpoints:{endpoints}\n        nodes:{nodes}\n        ca: {ca}\n        crt: {crt}\n        key: {key}\n",
            name = ctx.name,
            endpoints = list(&ctx.endpoints),
            nodes = if ctx.nodes.is_empty() {
                " []".to_owned()
            } else {
                list(&ctx.nodes)
            },
            ca = b64(ctx.ca_pem),
            crt = b64(&ctx.client.cert_pem),
            key = b64(&ctx.client.talos_key_pem()),
        );
    }
    out
}

/// The DER bytes of the first PEM block in `pem`.
pub fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}
