//! A context's `proxy-url`: the HTTP proxy that connections to its endpoints tunnel through.

use std::fmt;

use base64::Engine as _;

use crate::ConfigError;
use crate::context::split_host_port;

/// The port of an `http://` proxy URL that names none.
pub const DEFAULT_PROXY_PORT: u16 = 80;

/// A validated HTTP proxy: connections to the endpoints are opened with `CONNECT host:port`
/// through it, and TLS runs end to end inside the tunnel (the proxy never sees the session).
///
/// Only `http://[user[:password]@]host[:port]` is accepted; other schemes (`https://`,
/// `socks5://`, …) are refused when the context is resolved rather than silently ignored. A user
/// and password become a `Proxy-Authorization: Basic` header. `Display` and `Debug` never show
/// them.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    host: String,
    port: u16,
    /// `Basic …` — a secret.
    authorization: Option<String>,
}

impl ProxyUrl {
    /// Parses a proxy URL as written in a talosconfig.
    pub(crate) fn parse(url: &str) -> Result<Self, ProxyProblem> {
        let (scheme, rest) = url.trim().split_once("://").ok_or(ProxyProblem::Invalid(
            "it has no scheme (write http://host:port)",
        ))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" {
            let printable = !scheme.is_empty()
                && scheme.len() <= 16
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
            return Err(if printable {
                ProxyProblem::UnsupportedScheme(scheme)
            } else {
                ProxyProblem::Invalid("its scheme is malformed")
            });
        }
        // The authority ends at the first `/`, `?` or `#`; only an empty path or `/` may follow.
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if !matches!(tail, "" | "/") {
            return Err(ProxyProblem::Invalid(
                "a proxy URL has no path, query or fragment",
            ));
        }
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => (Some(userinfo), host_port),
            None => (None, authority),
        };
        let (host, port) = split_host_port(host_port).map_err(ProxyProblem::Host)?;
        let authorization = match userinfo.filter(|u| !u.is_empty()) {
            None => None,
            Some(userinfo) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let mut pair = percent_decode(user)?;
                pair.push(b':');
                pair.extend(percent_decode(password)?);
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))
            }
        };
        Ok(Self {
            host: host.to_owned(),
            port: port.unwrap_or(DEFAULT_PROXY_PORT),
            authorization,
        })
    }

    /// The proxy's host (an IP address or DNS name, without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The proxy's TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the URL carries a user (and password) for the proxy.
    pub fn has_credentials(&self) -> bool {
        self.authorization.is_some()
    }

    /// The value of the `Proxy-Authorization` header (`Basic …`), when the URL carries a user.
    ///
    /// This is a secret: send it to the proxy and nowhere else; never log or display it.
    pub fn proxy_authorization(&self) -> Option<&str> {
        self.authorization.as_deref()
    }
}

impl std::str::FromStr for ProxyUrl {
    type Err = String;

    /// Parses `http://[user[:password]@]host[:port]` as a talosconfig's `proxy-url` is parsed; the
    /// reason for a refusal never quotes the user or password.
    fn from_str(url: &str) -> Result<Self, Self::Err> {
        Self::parse(url).map_err(|problem| match problem {
            ProxyProblem::UnsupportedScheme(scheme) => format!(
                "the scheme `{scheme}` is not supported: only http:// proxies (HTTP CONNECT) are"
            ),
            ProxyProblem::Invalid(reason) => reason.to_owned(),
            ProxyProblem::Host(reason) => reason,
        })
    }
}

impl fmt::Display for ProxyUrl {
    /// `http://host:port`, without the user and password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "http://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "http://{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyUrl")
            .field("host", &self.host)
            .field("port", &self.port)
            .field(
                "credentials",
                &self.authorization.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

/// Why a proxy URL was refused; turned into a [`ConfigError`] naming the context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProxyProblem {
    /// A well-formed scheme other than `http`.
    UnsupportedScheme(String),
    /// Malformed (the reason never quotes the user or password).
    Invalid(&'static str),
    /// The host or port is malformed.
    Host(String),
}

impl ProxyProblem {
    pub(crate) fn into_error(self, context: &str) -> ConfigError {
        let context = context.to_owned();
        match self {
            Self::UnsupportedScheme(scheme) => ConfigError::UnsupportedProxy { context, scheme },
            Self::Invalid(reason) => ConfigError::InvalidProxy {
                context,
                reason: reason.to_owned(),
            },
            Self::Host(reason) => ConfigError::InvalidProxy { context, reason },
        }
    }
}

/// Decodes `%XX` escapes of a URL's user or password.
fn percent_decode(text: &str) -> Result<Vec<u8>, ProxyProblem> {
    const BAD: ProxyProblem =
        ProxyProblem::Invalid("its user or password has a malformed %-escape");
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(BAD)?;
            let hex = std::str::from_utf8(hex).map_err(|_| BAD)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| BAD)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// A proxy URL as written, with any user and password replaced by `[redacted]` (for `Debug` of
/// values that hold the unparsed text).
pub(crate) fn redact_userinfo(url: &str) -> String {
    let (prefix, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rsplit_once('@') {
        Some((_, host)) => format!("{prefix}[redacted]@{host}{}", &rest[end..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(url: &str) -> ProxyUrl {
        ProxyUrl::parse(url).unwrap_or_else(|e| panic!("{url}: {e:?}"))
    }

    #[test]
    fn http_forms() {
        let p = ok("http://proxy.example:3128");
        assert_eq!(
            (p.host(), p.port(), p.has_credentials()),
            ("proxy.example", 3128, false)
        );
        assert_eq!(ok("HTTP://10.0.0.1/").port(), DEFAULT_PROXY_PORT);
        let v6 = ok(" http://[fd00::1]:8080 ");
        assert_eq!((v6.host(), v6.port()), ("fd00::1", 8080));
        assert_eq!(v6.to_string(), "http://[fd00::1]:8080");
        assert!(!ok("http://@h:1").has_credentials());
    }

    #[test]
    fn userinfo_becomes_basic_auth() {
        // "user:pass" in base64.
        assert_eq!(
            ok("http://user:pass@h:1").proxy_authorization(),
            Some("Basic dXNlcjpwYXNz")
        );
        // Escapes are decoded ("p@ss:w"), and the last `@` ends the userinfo.
        assert_eq!(
            ok("http://u:p%40ss%3Aw@h:1").proxy_authorization(),
            ok("http://u:p@ss:w@h:1").proxy_authorization()
        );
        assert_eq!(
            ok("http://u:p%40ss%3Aw@h:1").proxy_authorization(),
            Some("Basic dTpwQHNzOnc=")
        );
        // A user without a password: "user:".
        assert_eq!(
            ok("http://user@h").proxy_authorization(),
            Some("Basic dXNlcjo=")
        );
    }

    #[test]
    fn other_schemes_are_unsupported_not_ignored() {
        for (url, scheme) in [
            ("socks5://h:1080", "socks5"),
            ("socks5h://u:p@h:1080", "socks5h"),
            ("https://h:443", "https"),
            ("SOCKS4://h", "socks4"),
        ] {
            assert_eq!(
                ProxyUrl::parse(url),
                Err(ProxyProblem::UnsupportedScheme(scheme.into())),
                "{url}"
            );
        }
    }

    #[test]
    fn malformed_urls_are_invalid() {
        for url in [
            "proxy:3128",
            "://h",
            "ht tp://h",
            "http://",
            "http://u:p@",
            "http://h:0",
            "http://h:99999",
            "http://h:3128/path",
            "http://h?x=1",
            "http://h:3128#f",
            "http://u:%zz@h",
            "http://u:%4@h",
            "http://a:b:c",
            "http://pro xy:1",
            "http://pro\r\nxy:1",
        ] {
            assert!(ProxyUrl::parse(url).is_err(), "{url:?} should be refused");
        }
    }

    #[test]
    fn credentials_never_shown() {
        let p = ok("http://alice:S3CRET-PW@proxy:3128");
        for out in [format!("{p}"), format!("{p:?}"), format!("{p:#?}")] {
            assert!(!out.contains("S3CRET") && !out.contains("alice"), "{out}");
        }
        for url in [
            "http://alice:S3CRET-PW@proxy:3128/",
            "alice:S3CRET-PW@proxy",
        ] {
            let redacted = redact_userinfo(url);
            assert!(!redacted.contains("S3CRET"), "{redacted}");
            assert!(redacted.contains("[redacted]@proxy"), "{redacted}");
        }
        assert_eq!(redact_userinfo("http://proxy:1"), "http://proxy:1");
        // Error reasons never quote the userinfo.
        for url in ["http://alice:S3CRET%zz@h", "http://alice:S3CRET@h/x"] {
            let err = ProxyUrl::parse(url)
                .unwrap_err()
                .into_error("c")
                .to_string();
            assert!(!err.contains("S3CRET") && !err.contains("alice"), "{err}");
        }
    }
}
