//! A resolved context: what a client needs to dial and authenticate.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use rustls_pki_types::ServerName;

use crate::{ConfigError, Credentials, ProxyUrl};

/// The port apid listens on.
pub const DEFAULT_APID_PORT: u16 = 50000;

/// One endpoint to dial: a host (IP or DNS name) and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    host: String,
    port: u16,
}

impl Endpoint {
    /// Builds an endpoint from its parts.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }

    /// The host without brackets or port.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host as an IP address, when it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        IpAddr::from_str(&self.host).ok()
    }

    /// The name the server certificate must match: an IP address SAN or a DNS name SAN.
    pub fn server_name(&self) -> Result<ServerName<'static>, String> {
        ServerName::try_from(self.host.clone()).map_err(|e| e.to_string())
    }

    /// `https://host:port`, the URI form gRPC channels take.
    pub fn uri(&self) -> String {
        format!("https://{self}")
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for Endpoint {
    type Err = String;

    /// Accepts `host`, `host:port`, `[ipv6]`, `[ipv6]:port`, a bare IPv6 address, and any of these
    /// behind `https://` or `tcp://`.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let mut s = input.trim();
        if let Some((scheme, rest)) = s.split_once("://") {
            if !matches!(scheme, "https" | "tcp" | "grpc") {
                return Err(format!("unsupported scheme `{scheme}`"));
            }
            s = rest;
        }
        let (host, port) = split_host_port(s.trim_end_matches('/'))?;
        Ok(Self::new(host, port.unwrap_or(DEFAULT_APID_PORT)))
    }
}

/// Splits `host`, `host:port`, `[ipv6]`, `[ipv6]:port` or a bare IPv6 address into the host
/// (without brackets) and the port, if one is written. Shared by endpoints and proxy URLs.
pub(crate) fn split_host_port(s: &str) -> Result<(&str, Option<u16>), String> {
    if s.is_empty() {
        return Err("empty address".into());
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| "missing `]` after IPv6 address".to_owned())?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("unexpected `{p}` after `]`"))?,
            ),
        };
        (host, port)
    } else if s.matches(':').count() > 1 {
        // A bare IPv6 address: colons belong to the address, not to a port.
        (s, None)
    } else if let Some((host, port)) = s.split_once(':') {
        (host, Some(port))
    } else {
        (s, None)
    };
    if host.is_empty() {
        return Err("empty host".into());
    }
    if host
        .chars()
        .any(|c| matches!(c, '/' | '@') || c.is_whitespace() || c.is_control())
    {
        return Err("host contains `/`, `@`, a space or a control character".into());
    }
    // A bracketed host, and a bare one with colons, can only be an IPv6 address (a bare
    // `a:b:c` would otherwise print as `[a:b:c]:50000`, which is not an address at all).
    if (s.starts_with('[') || host.contains(':')) && host.parse::<std::net::Ipv6Addr>().is_err() {
        return Err(format!("`{host}` is not an IPv6 address"));
    }
    let port = match port {
        None => None,
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("invalid port `{p}`"))?,
        ),
    };
    Ok((host, port))
}

/// A context resolved and checked: endpoints parsed, nodes normalised, the proxy URL validated,
/// credentials decoded and matched. Cheap to clone. `Debug` never shows key material or proxy
/// passwords.
///
/// It comes from a talosconfig ([`TalosConfig::context`](crate::TalosConfig::context)) or from
/// code ([`Context::builder`]); both go through the same checks and give the same value.
#[derive(Debug, Clone)]
pub struct Context {
    pub(crate) name: String,
    pub(crate) cluster: Option<String>,
    pub(crate) endpoints: Vec<Endpoint>,
    pub(crate) nodes: Vec<String>,
    pub(crate) proxy: Option<ProxyUrl>,
    pub(crate) credentials: Credentials,
}

impl Context {
    /// Starts building a context in code, from its name and credentials (see [`ContextBuilder`]).
    ///
    /// ```no_run
    /// use talos_config::{Context, Credentials};
    ///
    /// let credentials = Credentials::from_pem(
    ///     &std::fs::read_to_string("ca.crt")?,
    ///     &std::fs::read_to_string("admin.crt")?,
    ///     &std::fs::read_to_string("admin.key")?,
    /// )?;
    /// let context = Context::builder("prod", credentials)
    ///     .endpoint("10.5.0.2")
    ///     .endpoint("[fd00::3]:50000")
    ///     .nodes(["10.5.0.2", "10.5.0.3"])
    ///     .build()?;
    /// assert_eq!(context.endpoints()[0].port(), 50000);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn builder(name: impl Into<String>, credentials: Credentials) -> ContextBuilder {
        ContextBuilder {
            name: name.into(),
            cluster: None,
            endpoints: Vec::new(),
            nodes: Vec::new(),
            proxy: None,
            credentials,
        }
    }

    /// Builds a context from endpoints already parsed; nodes are normalised as
    /// [`ContextBuilder::node`] does. [`Context::builder`] is the general way.
    pub fn new(
        name: impl Into<String>,
        endpoints: Vec<Endpoint>,
        nodes: Vec<String>,
        credentials: Credentials,
    ) -> Result<Self, ConfigError> {
        let name = name.into();
        assemble(name, None, Ok(endpoints), &nodes, None, || Ok(credentials))
    }

    /// The context's name (in the talosconfig, or as given to [`Context::builder`]).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cluster name, when the talosconfig records one.
    pub fn cluster(&self) -> Option<&str> {
        self.cluster.as_deref()
    }

    /// Endpoints in the order to try them; never empty.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Default target nodes (bare addresses or names, no port). May be empty: then calls go to the
    /// endpoint itself.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// The HTTP proxy that connections to the endpoints tunnel through, when one is set.
    pub fn proxy(&self) -> Option<&ProxyUrl> {
        self.proxy.as_ref()
    }

    /// The mTLS credentials.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }
}

/// Builds a [`Context`] in code: the same checks, defaults and normalisation as resolving a
/// talosconfig context, so the result is the value YAML with the same fields would give.
///
/// Endpoints are written like a talosconfig's (`host`, `host:port`, `[ipv6]:port`, optionally
/// behind `https://`; the port defaults to 50000) and parsed by [`ContextBuilder::build`], which
/// reports the first problem as a [`ConfigError`] naming the context. Repeated endpoints and nodes
/// are kept once, in first-seen order.
///
/// ```
/// # let ca = talos_sim::pki::CertificateAuthority::generate("lab").unwrap();
/// # let admin = ca.client_cert("os:admin", talos_sim::pki::Validity::Current).unwrap();
/// # let (ca_pem, crt_pem, key_pem) = (ca.cert_pem().to_owned(), admin.cert_pem.clone(), admin.talos_key_pem());
/// use talos_config::{Context, Credentials};
///
/// let credentials = Credentials::from_pem(&ca_pem, &crt_pem, &key_pem)?;
/// let context = Context::builder("lab", credentials)
///     .endpoints(["cp-1.lab:50001", "cp-2.lab", "cp-1.lab:50001"])
///     .nodes(["10.0.0.5", " [fd00::5] ", ""])
///     .proxy_url("http://proxy.lab:3128")
///     .build()?;
/// assert_eq!(context.endpoints().len(), 2); // the repeated endpoint is kept once
/// assert_eq!(context.endpoints()[1].port(), 50000);
/// assert_eq!(context.nodes(), ["10.0.0.5", "fd00::5"]);
/// assert_eq!(context.proxy().map(|p| p.port()), Some(3128));
/// # Ok::<(), talos_config::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct ContextBuilder {
    name: String,
    cluster: Option<String>,
    endpoints: Vec<String>,
    nodes: Vec<String>,
    proxy: Option<ProxySpec>,
    credentials: Credentials,
}

/// A proxy as given to the builder: text to check at build time, or a URL already checked.
#[derive(Clone)]
enum ProxySpec {
    Written(String),
    Parsed(ProxyUrl),
}

impl ContextBuilder {
    /// Adds an endpoint to dial (tried in the order added).
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoints.push(endpoint.into());
        self
    }

    /// Adds several endpoints.
    pub fn endpoints<I, S>(mut self, endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.endpoints.extend(endpoints.into_iter().map(Into::into));
        self
    }

    /// Adds a default target node: an address or name without a port (IPv6 brackets and
    /// surrounding spaces are removed; an empty entry is dropped).
    pub fn node(mut self, node: impl Into<String>) -> Self {
        self.nodes.push(node.into());
        self
    }

    /// Adds several default target nodes.
    pub fn nodes<I, S>(mut self, nodes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.nodes.extend(nodes.into_iter().map(Into::into));
        self
    }

    /// Records the cluster name (informational; an empty name is none).
    pub fn cluster(mut self, cluster: impl Into<String>) -> Self {
        self.cluster = Some(cluster.into());
        self
    }

    /// Sets the HTTP proxy to reach the endpoints through: `http://[user[:password]@]host[:port]`
    /// (port 80 by default). Any other scheme is refused by [`ContextBuilder::build`].
    pub fn proxy_url(mut self, url: impl Into<String>) -> Self {
        self.proxy = Some(ProxySpec::Written(url.into()));
        self
    }

    /// Sets a proxy already checked, e.g. another context's ([`Context::proxy`]).
    pub fn proxy(mut self, proxy: ProxyUrl) -> Self {
        self.proxy = Some(ProxySpec::Parsed(proxy));
        self
    }

    /// Checks everything and builds the context. Fails with [`ConfigError::NoEndpoints`],
    /// [`ConfigError::InvalidEndpoint`], [`ConfigError::InvalidProxy`] or
    /// [`ConfigError::UnsupportedProxy`].
    pub fn build(self) -> Result<Context, ConfigError> {
        let endpoints = parse_endpoints(&self.name, &self.endpoints);
        let (written, parsed) = match self.proxy {
            None => (None, None),
            Some(ProxySpec::Written(url)) => (Some(url), None),
            Some(ProxySpec::Parsed(proxy)) => (None, Some(proxy)),
        };
        let mut context = assemble(
            self.name,
            self.cluster,
            endpoints,
            &self.nodes,
            written.as_deref(),
            || Ok(self.credentials),
        )?;
        if parsed.is_some() {
            context.proxy = parsed;
        }
        Ok(context)
    }
}

impl fmt::Debug for ContextBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextBuilder")
            .field("name", &self.name)
            .field("cluster", &self.cluster)
            .field("endpoints", &self.endpoints)
            .field("nodes", &self.nodes)
            .field(
                "proxy",
                &self.proxy.as_ref().map(|p| match p {
                    ProxySpec::Written(url) => crate::proxy::redact_userinfo(url),
                    ProxySpec::Parsed(url) => url.to_string(),
                }),
            )
            .field("credentials", &self.credentials)
            .finish()
    }
}

/// Parses endpoints as written; the first bad one is the error.
pub(crate) fn parse_endpoints(
    context: &str,
    written: &[String],
) -> Result<Vec<Endpoint>, ConfigError> {
    written
        .iter()
        .map(|e| {
            e.parse::<Endpoint>()
                .map_err(|reason| ConfigError::InvalidEndpoint {
                    context: context.to_owned(),
                    endpoint: e.clone(),
                    reason,
                })
        })
        .collect()
}

/// The one place a [`Context`] is put together, from a talosconfig or from a builder. Checks run
/// in a fixed order: endpoints, proxy, then credentials (decoded only when the rest is sound).
pub(crate) fn assemble(
    name: String,
    cluster: Option<String>,
    endpoints: Result<Vec<Endpoint>, ConfigError>,
    nodes: &[String],
    proxy_url: Option<&str>,
    credentials: impl FnOnce() -> Result<Credentials, ConfigError>,
) -> Result<Context, ConfigError> {
    let endpoints = dedup(endpoints?);
    if endpoints.is_empty() {
        return Err(ConfigError::NoEndpoints { context: name });
    }
    let proxy = match proxy_url.map(str::trim).filter(|p| !p.is_empty()) {
        None => None,
        Some(url) => Some(ProxyUrl::parse(url).map_err(|problem| problem.into_error(&name))?),
    };
    let credentials = credentials()?;
    Ok(Context {
        cluster: cluster.filter(|c| !c.is_empty()),
        endpoints,
        nodes: dedup(
            nodes
                .iter()
                .map(|n| normalise_node(n))
                .filter(|n| !n.is_empty())
                .collect(),
        ),
        proxy,
        credentials,
        name,
    })
}

/// Keeps the first of equal items, in order.
fn dedup<T: Eq + std::hash::Hash + Clone>(items: Vec<T>) -> Vec<T> {
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    items
        .into_iter()
        .filter(|item| seen.insert(item.clone()))
        .collect()
}

/// Normalises a node entry: trims it and strips IPv6 brackets (node metadata carries no port).
pub(crate) fn normalise_node(node: &str) -> String {
    let node = node.trim();
    node.strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(node)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Endpoint {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn endpoint_forms() {
        assert_eq!(parse("10.5.0.2"), Endpoint::new("10.5.0.2", 50000));
        assert_eq!(parse("10.5.0.2:50001"), Endpoint::new("10.5.0.2", 50001));
        assert_eq!(
            parse("cp.example.com"),
            Endpoint::new("cp.example.com", 50000)
        );
        assert_eq!(
            parse("cp.example.com:443"),
            Endpoint::new("cp.example.com", 443)
        );
        assert_eq!(parse("fd00::1"), Endpoint::new("fd00::1", 50000));
        assert_eq!(parse("[fd00::1]"), Endpoint::new("fd00::1", 50000));
        assert_eq!(parse("[fd00::1]:50001"), Endpoint::new("fd00::1", 50001));
        assert_eq!(
            parse("https://10.0.0.1:6443/"),
            Endpoint::new("10.0.0.1", 6443)
        );
        assert_eq!(parse("  10.0.0.1 "), Endpoint::new("10.0.0.1", 50000));
    }

    #[test]
    fn endpoint_display_round_trips() {
        for s in ["10.5.0.2:50000", "[fd00::1]:50000", "cp.example.com:443"] {
            assert_eq!(parse(s).to_string(), s);
            assert_eq!(parse(&parse(s).to_string()), parse(s));
        }
        assert_eq!(parse("fd00::1").uri(), "https://[fd00::1]:50000");
    }

    #[test]
    fn bad_endpoints_are_rejected_with_a_reason() {
        for bad in [
            "",
            ":50000",
            "10.0.0.1:0",
            "10.0.0.1:x",
            "10.0.0.1:70000",
            "[fd00::1",
            "[nothex]:1",
            "ftp://h",
            "a b",
        ] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn server_name_is_ip_for_ip_hosts() {
        assert!(matches!(
            parse("10.0.0.1").server_name(),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            parse("fd00::1").server_name(),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            parse("cp.example.com").server_name(),
            Ok(ServerName::DnsName(_))
        ));
    }

    #[test]
    fn nodes_are_normalised() {
        assert_eq!(normalise_node(" 10.0.0.2 "), "10.0.0.2");
        assert_eq!(normalise_node("[fd00::2]"), "fd00::2");
    }
}
