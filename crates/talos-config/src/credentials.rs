//! Decoding the base64 PEM credentials of a context into rustls types.

use std::fmt;

use base64::Engine as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::ConfigError;

/// The mTLS material of one context: CA bundle, client certificate chain and private key.
///
/// `Debug` shows counts only; the key is never printed.
pub struct Credentials {
    ca: Vec<CertificateDer<'static>>,
    client_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Credentials {
    /// Certificates that may sign the server's certificate (the cluster's OS CA).
    pub fn ca_certificates(&self) -> &[CertificateDer<'static>] {
        &self.ca
    }

    /// The client certificate, followed by any intermediates.
    pub fn client_chain(&self) -> &[CertificateDer<'static>] {
        &self.client_chain
    }

    /// A copy of the client private key, for handing to rustls.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }

    /// Builds credentials from PEM text: the cluster's CA certificate(s), the client certificate
    /// (optionally followed by intermediates) and the client's private key.
    ///
    /// The key may be PKCS#8 (`PRIVATE KEY`, or `ED25519 PRIVATE KEY` as Talos labels its Ed25519
    /// keys), SEC1 (`EC PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`); it must belong to the client
    /// certificate. Errors ([`ConfigError::InvalidPem`]) name the argument and the problem, never
    /// the content. A talosconfig stores these three as base64: decode them first, or use
    /// [`TalosConfig`](crate::TalosConfig) to read the file.
    ///
    /// ```
    /// # let ca = talos_sim::pki::CertificateAuthority::generate("lab").unwrap();
    /// # let admin = ca.client_cert("os:admin", talos_sim::pki::Validity::Current).unwrap();
    /// # let (ca_pem, crt_pem, key_pem) = (ca.cert_pem().to_owned(), admin.cert_pem.clone(), admin.talos_key_pem());
    /// use talos_config::{ConfigError, Credentials};
    ///
    /// let credentials = Credentials::from_pem(&ca_pem, &crt_pem, &key_pem)?;
    /// assert_eq!(credentials.client_chain().len(), 1);
    /// // `Debug` counts certificates and hides the key.
    /// assert!(format!("{credentials:?}").contains("[redacted]"));
    ///
    /// // The certificate and key swapped: refused, naming the argument.
    /// let err = Credentials::from_pem(&ca_pem, &key_pem, &crt_pem).unwrap_err();
    /// assert!(matches!(err, ConfigError::InvalidPem { field: "crt", .. }));
    /// # Ok::<(), ConfigError>(())
    /// ```
    pub fn from_pem(
        ca: impl AsRef<[u8]>,
        crt: impl AsRef<[u8]>,
        key: impl AsRef<[u8]>,
    ) -> Result<Self, ConfigError> {
        Self::from_pem_fields(
            pem_text("ca", ca.as_ref()),
            pem_text("crt", crt.as_ref()),
            pem_text("key", key.as_ref()),
        )
        .map_err(|(field, reason)| ConfigError::InvalidPem { field, reason })
    }

    /// Decodes and cross-checks the three fields of `context`.
    pub(crate) fn decode(
        context: &str,
        ca: Option<&str>,
        crt: Option<&str>,
        key: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let ca_pem = field_pem(context, "ca", ca)?;
        let crt_pem = field_pem(context, "crt", crt)?;
        let key_pem = field_pem(context, "key", key)?;
        Self::from_pem_fields(Ok(&ca_pem), Ok(&crt_pem), Ok(&key_pem)).map_err(|(field, reason)| {
            ConfigError::InvalidCredentials {
                context: context.to_owned(),
                field,
                reason,
            }
        })
    }

    /// Parses the three PEM fields in order and checks the key against the certificate.
    fn from_pem_fields(
        ca: Result<&[u8], Problem>,
        crt: Result<&[u8], Problem>,
        key: Result<&[u8], Problem>,
    ) -> Result<Self, Problem> {
        let ca = certificates("ca", ca?)?;
        let client_chain = certificates("crt", crt?)?;
        let key = private_key(key?)?;
        check_key_matches(&client_chain, &key)?;
        Ok(Self {
            ca,
            client_chain,
            key,
        })
    }
}

/// A problem with one field: its name and what is wrong (never its content).
type Problem = (&'static str, String);

/// Checks that an argument of [`Credentials::from_pem`] is non-empty PEM text.
fn pem_text<'a>(field: &'static str, bytes: &'a [u8]) -> Result<&'a [u8], Problem> {
    let text = std::str::from_utf8(bytes).map_err(|_| (field, "not UTF-8 text".to_owned()))?;
    if text.trim().is_empty() {
        return Err((field, "empty".into()));
    }
    if !text.contains("-----BEGIN ") {
        return Err((
            field,
            "not PEM text (no -----BEGIN line); base64-decode a talosconfig field first".into(),
        ));
    }
    Ok(bytes)
}

impl Clone for Credentials {
    fn clone(&self) -> Self {
        Self {
            ca: self.ca.clone(),
            client_chain: self.client_chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("ca_certificates", &self.ca.len())
            .field("client_chain", &self.client_chain.len())
            .field("key", &"[redacted]")
            .finish()
    }
}

/// Base64-decodes a field into PEM text. Plain PEM is accepted as well.
fn field_pem(
    context: &str,
    field: &'static str,
    value: Option<&str>,
) -> Result<Vec<u8>, ConfigError> {
    let value = value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ConfigError::MissingCredentials {
            context: context.to_owned(),
            field,
        })?;
    if value.starts_with("-----BEGIN") {
        return Ok(value.as_bytes().to_vec());
    }
    let compact: String = value.split_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|e| invalid(context, field, format!("not valid base64 ({e})")))
}

fn certificates(field: &'static str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Problem> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| (field, format!("malformed PEM ({e})")))?;
    if certs.is_empty() {
        return Err((field, "no CERTIFICATE block in the PEM data".into()));
    }
    Ok(certs)
}

/// Talos labels its PKCS#8 Ed25519 keys `ED25519 PRIVATE KEY`, a label PEM parsers do not know.
const TALOS_ED25519_LABEL: &str = "ED25519 PRIVATE KEY";

fn private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, Problem> {
    let text =
        std::str::from_utf8(pem).map_err(|_| ("key", "PEM data is not UTF-8 text".to_owned()))?;
    // The body is plain PKCS#8, so relabelling is enough.
    let relabelled = text.replace(TALOS_ED25519_LABEL, "PRIVATE KEY");
    PrivateKeyDer::from_pem_slice(relabelled.as_bytes()).map_err(|e| {
        let reason = match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "no PRIVATE KEY, ED25519 PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY block"
                    .to_owned()
            }
            other => format!("malformed PEM ({other})"),
        };
        ("key", reason)
    })
}

/// Refuses a key that does not belong to the client certificate (a common copy-paste mistake that
/// otherwise surfaces as a confusing TLS failure).
fn check_key_matches(
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
) -> Result<(), Problem> {
    let provider = rustls::crypto::ring::default_provider();
    let signing_key = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| ("key", format!("unsupported or corrupt private key ({e})")))?;
    let certified = rustls::sign::CertifiedKey::new(chain.to_vec(), signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(()),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => Err((
            "crt/key",
            "the private key does not belong to the client certificate".into(),
        )),
        // The key type cannot report its public half: nothing to compare, let the handshake decide.
        Err(rustls::Error::InconsistentKeys(_)) => Ok(()),
        Err(e) => Err(("crt", format!("certificate cannot be parsed ({e})"))),
    }
}

fn invalid(context: &str, field: &'static str, reason: String) -> ConfigError {
    ConfigError::InvalidCredentials {
        context: context.to_owned(),
        field,
        reason,
    }
}
