//! Reads talosconfig files exactly as `talosctl` does and resolves a context into validated mTLS
//! credentials — or builds the same context in code.
//!
//! Two layers: [`RawConfig`] is what the YAML says (every field optional, unknown fields ignored),
//! and [`Context`] is what a client needs: endpoints parsed with the default apid port, nodes
//! normalised, the proxy URL checked ([`ProxyUrl`]: `http://` only, anything else is refused rather
//! than ignored), and the CA, client chain and key as rustls types ([`Credentials`]), the key checked
//! against the certificate. Nothing here touches the network, and nothing ever writes the file: it
//! may be mounted read-only. `Debug` and error messages never show key material or proxy
//! passwords.
//!
//! From a talosconfig, found the way talosctl finds it:
//!
//! ```no_run
//! let config = talos_config::TalosConfig::load(None)?; // $TALOSCONFIG, ~/.talos/config, ...
//! let context = config.context(None)?;                 // the current context
//! println!("{} -> {:?}", context.name(), context.endpoints());
//! # Ok::<(), talos_config::ConfigError>(())
//! ```
//!
//! From code, with PEM files and a builder ([`Context::builder`]):
//!
//! ```no_run
//! use talos_config::{Context, Credentials};
//!
//! let credentials = Credentials::from_pem(
//!     std::fs::read("ca.crt")?,
//!     std::fs::read("admin.crt")?,
//!     std::fs::read("admin.key")?,
//! )?;
//! let context = Context::builder("prod", credentials)
//!     .endpoint("10.5.0.2")
//!     .node("10.5.0.3")
//!     .build()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

mod context;
mod credentials;
mod error;
mod paths;
mod proxy;
mod raw;

use std::path::{Path, PathBuf};

pub use context::{Context, ContextBuilder, DEFAULT_APID_PORT, Endpoint};
pub use credentials::Credentials;
pub use error::{ConfigError, ConfigErrorKind};
pub use paths::{SERVICE_ACCOUNT_CONFIG, TALOS_HOME_ENV, TALOSCONFIG_ENV, candidate_paths};
pub use proxy::{DEFAULT_PROXY_PORT, ProxyUrl};
pub use raw::{RawAuth, RawConfig, RawContext, RawSideroV1};

/// A talosconfig file that has been read and parsed (but whose contexts are resolved on demand).
#[derive(Debug, Clone)]
pub struct TalosConfig {
    path: PathBuf,
    raw: RawConfig,
}

/// What may be shown about a context without revealing credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextSummary {
    /// The context's name.
    pub name: String,
    /// Whether this is the file's current context.
    pub current: bool,
    /// Endpoints as written.
    pub endpoints: Vec<String>,
    /// Default nodes as written.
    pub nodes: Vec<String>,
    /// Cluster name, when recorded.
    pub cluster: Option<String>,
    /// How the context authenticates: `client certificate`, `siderov1`, `basic`, or `none`.
    pub auth: &'static str,
}

impl TalosConfig {
    /// Finds and reads the talosconfig: `explicit` if given, else the first existing of
    /// `$TALOSCONFIG`, `$TALOS_HOME/config` (or `~/.talos/config`), `/var/run/secrets/talos.dev/config`.
    pub fn load(explicit: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(explicit, |name| std::env::var_os(name))
    }

    /// [`TalosConfig::load`] with environment variables read through `env` (for tests and embedders).
    pub fn load_with_env(
        explicit: Option<&Path>,
        env: impl Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Result<Self, ConfigError> {
        let path = paths::first_existing(candidate_paths(explicit, env))
            .map_err(|tried| ConfigError::NotFound { tried })?;
        Self::from_file(&path)
    }

    /// Reads and parses one file. Warns when the file is readable by group or others.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        warn_if_exposed(path);
        Self::from_yaml(&text, path)
    }

    /// Parses talosconfig YAML; `origin` names it in errors.
    pub fn from_yaml(yaml: &str, origin: impl Into<PathBuf>) -> Result<Self, ConfigError> {
        let path = origin.into();
        let raw: RawConfig = if yaml.trim().is_empty() {
            RawConfig::default()
        } else {
            serde_yaml_ng::from_str(yaml).map_err(|e| {
                let location = e.location();
                ConfigError::InvalidYaml {
                    path: path.clone(),
                    line: location.as_ref().map(|l| l.line()),
                    column: location.as_ref().map(|l| l.column()),
                    message: without_quoted_values(&strip_location(&e.to_string())),
                }
            })?
        };
        Ok(Self { path, raw })
    }

    /// The file this configuration came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The document as written.
    pub fn raw(&self) -> &RawConfig {
        &self.raw
    }

    /// The current context's name, if the file sets one.
    pub fn current_context(&self) -> Option<&str> {
        self.raw.context.as_deref().filter(|c| !c.is_empty())
    }

    /// All context names, sorted.
    pub fn context_names(&self) -> Vec<String> {
        self.raw.contexts.keys().cloned().collect()
    }

    /// Every context, without secrets, sorted by name.
    pub fn summaries(&self) -> Vec<ContextSummary> {
        let current = self.current_context();
        self.raw
            .contexts
            .iter()
            .map(|(name, ctx)| ContextSummary {
                name: name.clone(),
                current: current == Some(name.as_str()),
                endpoints: effective_endpoints(ctx),
                nodes: ctx.nodes.clone(),
                cluster: ctx.cluster.clone().filter(|c| !c.is_empty()),
                auth: auth_scheme(ctx).unwrap_or(if ctx.crt.is_some() || ctx.key.is_some() {
                    "client certificate"
                } else {
                    "none"
                }),
            })
            .collect()
    }

    /// Resolves a context by name, or the current context when `name` is `None`.
    pub fn context(&self, name: Option<&str>) -> Result<Context, ConfigError> {
        let name = match name {
            Some(n) => n,
            None => self
                .current_context()
                .ok_or_else(|| ConfigError::NoCurrentContext {
                    path: self.path.clone(),
                    available: self.context_names(),
                })?,
        };
        let raw = self
            .raw
            .contexts
            .get(name)
            .ok_or_else(|| ConfigError::ContextNotFound {
                name: name.to_owned(),
                path: self.path.clone(),
                available: self.context_names(),
            })?;
        resolve(name, raw)
    }
}

/// `endpoints`, or the deprecated `target` when `endpoints` is empty (as talosctl upgrades it).
fn effective_endpoints(raw: &RawContext) -> Vec<String> {
    if raw.endpoints.is_empty() {
        raw.target
            .iter()
            .filter(|t| !t.is_empty())
            .cloned()
            .collect()
    } else {
        raw.endpoints.clone()
    }
}

/// The unsupported scheme a context uses instead of a client certificate, if any.
fn auth_scheme(raw: &RawContext) -> Option<&'static str> {
    if raw.auth.siderov1.is_some() {
        Some("siderov1")
    } else if raw.auth.basic.is_some() {
        Some("basic")
    } else {
        None
    }
}

fn resolve(name: &str, raw: &RawContext) -> Result<Context, ConfigError> {
    // Identity-based auth replaces client certificates; with a certificate present it is additive
    // (used by Omni's proxy) and we can still talk mTLS, so only refuse when no key is there.
    if raw.key.as_deref().is_none_or(str::is_empty)
        && let Some(scheme) = auth_scheme(raw)
    {
        return Err(ConfigError::UnsupportedAuth {
            context: name.to_owned(),
            scheme: if scheme == "siderov1" {
                "auth.siderov1 (identity)"
            } else {
                "auth.basic"
            },
        });
    }
    let endpoints = context::parse_endpoints(name, &effective_endpoints(raw));
    context::assemble(
        name.to_owned(),
        raw.cluster.clone(),
        endpoints,
        &raw.nodes,
        raw.proxy_url.as_deref(),
        || {
            Credentials::decode(
                name,
                raw.ca.as_deref(),
                raw.crt.as_deref(),
                raw.key.as_deref(),
            )
        },
    )
}

/// serde_yaml_ng appends "at line X column Y" to its messages; we report the location separately.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// Replaces what the parser quotes from the document (`invalid type: string "…"`) with `…`: a
/// misplaced value in a talosconfig may be a private key, and errors never show content.
fn without_quoted_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '"' {
            // Skip to the closing quote; an escaped quote is part of the value.
            let mut escaped = false;
            for c in chars.by_ref() {
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => break,
                    (false, _) => {}
                }
            }
            out.push_str("…\"");
        }
    }
    out
}

#[cfg(unix)]
fn warn_if_exposed(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{:o}", mode & 0o777),
                "talosconfig holds a private key but is readable by group or others; run `chmod 600` on it"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_exposed(_path: &Path) {}
