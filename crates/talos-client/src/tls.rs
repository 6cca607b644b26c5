//! rustls configuration for apid: mutual TLS 1.3 with the context's CA and client certificate.

use std::sync::Arc;

use rustls::ClientConfig;
use talos_config::{ConfigError, Credentials};

/// Builds the client TLS configuration for one context.
///
/// TLS 1.3 only (apid speaks it; older versions are refused), server certificates verified against
/// the context's CA alone (never the system roots), the client certificate presented, ALPN `h2`.
pub(crate) fn client_config(
    context: &str,
    creds: &Credentials,
) -> Result<Arc<ClientConfig>, ConfigError> {
    let invalid = |field: &'static str, reason: String| ConfigError::InvalidCredentials {
        context: context.to_owned(),
        field,
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    for ca in creds.ca_certificates() {
        roots
            .add(ca.clone())
            .map_err(|e| invalid("ca", format!("CA certificate rejected ({e})")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| invalid("ca", format!("TLS setup failed ({e})")))?
        .with_root_certificates(roots)
        .with_client_auth_cert(creds.client_chain().to_vec(), creds.private_key())
        .map_err(|e| invalid("crt/key", format!("client certificate rejected ({e})")))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}
