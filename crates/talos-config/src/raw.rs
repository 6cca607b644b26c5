//! The talosconfig file as written: every field optional, unknown fields ignored.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A talosconfig document exactly as the YAML says it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct RawConfig {
    /// Name of the current context.
    pub context: Option<String>,
    /// Contexts by name.
    pub contexts: BTreeMap<String, RawContext>,
}

/// One context as written. Credential fields hold base64-encoded PEM.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct RawContext {
    /// Old single-endpoint field that talosctl still upgrades into `endpoints`.
    pub target: Option<String>,
    /// Addresses to dial (apid, port 50000 unless given).
    pub endpoints: Vec<String>,
    /// Default target nodes.
    pub nodes: Vec<String>,
    /// Base64 PEM of the cluster's OS CA certificate.
    pub ca: Option<String>,
    /// Base64 PEM of the client certificate.
    pub crt: Option<String>,
    /// Base64 PEM of the client private key.
    pub key: Option<String>,
    /// Alternative authentication schemes (not supported, but detected).
    pub auth: RawAuth,
    /// Cluster name (informational).
    pub cluster: Option<String>,
    /// HTTP proxy for reaching the endpoints (`http://[user:password@]host[:port]`); resolution
    /// refuses other schemes. `Debug` hides its user and password.
    #[serde(rename = "proxy-url")]
    pub proxy_url: Option<String>,
}

impl std::fmt::Debug for RawContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let present = |v: &Option<String>| v.as_ref().map(|_| "[redacted]");
        f.debug_struct("RawContext")
            .field("target", &self.target)
            .field("endpoints", &self.endpoints)
            .field("nodes", &self.nodes)
            .field("ca", &self.ca.as_ref().map(|_| "[present]"))
            .field("crt", &self.crt.as_ref().map(|_| "[present]"))
            .field("key", &present(&self.key))
            .field("auth", &self.auth)
            .field("cluster", &self.cluster)
            .field(
                "proxy_url",
                &self.proxy_url.as_deref().map(crate::proxy::redact_userinfo),
            )
            .finish()
    }
}

/// The `auth` block of a context.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct RawAuth {
    /// Omni-style identity authentication.
    pub siderov1: Option<RawSideroV1>,
    /// Username/password authentication (only used by proxies in front of apid).
    pub basic: Option<serde_yaml_ng::Value>,
}

impl std::fmt::Debug for RawAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawAuth")
            .field("siderov1", &self.siderov1)
            .field("basic", &self.basic.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// `auth.siderov1`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct RawSideroV1 {
    /// The identity (an e-mail address) whose key signs requests.
    pub identity: String,
}
