//! A resolved context: what a client needs to dial and authenticate.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use rustls_pki_types::ServerName;

use crate::{ConfigError, Credentials};

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
        let s = s.trim_end_matches('/');
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
        if host.contains(['/', ' ', '@']) {
            return Err("host contains `/`, `@` or a space".into());
        }
        // A bracketed host, and a bare one with colons, can only be an IPv6 address (a bare
        // `a:b:c` would otherwise print as `[a:b:c]:50000`, which is not an address at all).
        if (s.starts_with('[') || host.contains(':')) && host.parse::<std::net::Ipv6Addr>().is_err()
        {
            return Err(format!("`{host}` is not an IPv6 address"));
        }
        let port = match port {
            None => DEFAULT_APID_PORT,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("invalid port `{p}`"))?,
        };
        Ok(Self::new(host, port))
    }
}

/// A context resolved from a talosconfig and checked: endpoints parsed, credentials decoded and
/// matched. Cheap to clone. `Debug` never shows key material.
#[derive(Debug, Clone)]
pub struct Context {
    pub(crate) name: String,
    pub(crate) cluster: Option<String>,
    pub(crate) endpoints: Vec<Endpoint>,
    pub(crate) nodes: Vec<String>,
    pub(crate) proxy_url: Option<String>,
    pub(crate) credentials: Credentials,
}

impl Context {
    /// Builds a context directly, e.g. for a simulated cluster or a config not stored in a file.
    pub fn new(
        name: impl Into<String>,
        endpoints: Vec<Endpoint>,
        nodes: Vec<String>,
        credentials: Credentials,
    ) -> Result<Self, ConfigError> {
        let name = name.into();
        if endpoints.is_empty() {
            return Err(ConfigError::NoEndpoints { context: name });
        }
        Ok(Self {
            name,
            cluster: None,
            endpoints,
            nodes,
            proxy_url: None,
            credentials,
        })
    }

    /// The context's name in the talosconfig.
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

    /// The proxy URL, when set.
    pub fn proxy_url(&self) -> Option<&str> {
        self.proxy_url.as_deref()
    }

    /// The mTLS credentials.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }
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
