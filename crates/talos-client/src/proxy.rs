//! HTTP CONNECT tunnels: how a context's `proxy-url` is honoured.
//!
//! The connector dials the proxy, asks it for a tunnel to the endpoint (`CONNECT host:port`), reads
//! its answer with a bounded head, and hands the stream to TLS: the session with apid runs end to
//! end inside the tunnel, verified exactly as without a proxy. A user and password in the URL are
//! sent as `Proxy-Authorization: Basic` and never logged or put in errors.

use std::io;

use talos_config::{Endpoint, ProxyUrl};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The most bytes of the proxy's answer (status line and headers) read before giving up.
pub(crate) const MAX_RESPONSE_HEAD: usize = 8 * 1024;

/// The most characters of the proxy's reason phrase quoted in an error.
const MAX_REASON_CHARS: usize = 80;

/// Opens a TCP connection to `proxy` and a CONNECT tunnel through it to `target`.
pub(crate) async fn tunnel(proxy: &ProxyUrl, target: &Endpoint) -> io::Result<TcpStream> {
    let mut tcp = TcpStream::connect((proxy.host(), proxy.port()))
        .await
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot connect to the proxy {proxy} ({e}); check the context's proxy-url"),
            )
        })?;
    tcp.set_nodelay(true)?;
    handshake(&mut tcp, proxy, target).await?;
    Ok(tcp)
}

/// Sends `CONNECT` for `target` and reads the proxy's answer; on success the stream is the tunnel.
pub(crate) async fn handshake<S>(
    stream: &mut S,
    proxy: &ProxyUrl,
    target: &Endpoint,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // `Endpoint::new` takes any host: never let one smuggle a line into the request.
    let authority = target.to_string();
    if authority
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the endpoint's host contains whitespace or control characters; it cannot be tunnelled",
        ));
    }
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(credentials) = proxy.proxy_authorization() {
        request.push_str("Proxy-Authorization: ");
        request.push_str(credentials);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;

    let head = read_head(stream, proxy).await?;
    let status_line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let status_line = String::from_utf8_lossy(status_line);
    let mut parts = status_line.trim_end().splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts
        .next()
        .and_then(|c| (c.len() == 3).then(|| c.parse::<u16>().ok()).flatten());
    let (true, Some(code)) = (version.starts_with("HTTP/1."), code) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the proxy {proxy} did not answer CONNECT with an HTTP/1.x status line; check that proxy-url names an HTTP proxy"
            ),
        ));
    };
    if (200..300).contains(&code) {
        return Ok(());
    }
    let reason: String = parts
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(MAX_REASON_CHARS)
        .collect();
    let hint = match code {
        407 if proxy.has_credentials() => {
            "the proxy did not accept the user and password in proxy-url; correct them"
        }
        407 => "the proxy requires authentication; add user:password@ to proxy-url",
        _ => "check that the proxy allows tunnels to this endpoint's address and port",
    };
    Err(io::Error::new(
        io::ErrorKind::ConnectionRefused,
        format!("the proxy {proxy} refused CONNECT {authority} with {code} {reason}; {hint}"),
    ))
}

/// Reads the answer's head up to the blank line, one byte at a time: nothing after it is read
/// (it belongs to the tunnel), and nothing beyond [`MAX_RESPONSE_HEAD`] is accepted.
async fn read_head<S>(stream: &mut S, proxy: &ProxyUrl) -> io::Result<Vec<u8>>
where
    S: AsyncRead + Unpin,
{
    let mut head = Vec::with_capacity(256);
    loop {
        if head.len() >= MAX_RESPONSE_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the proxy {proxy} sent more than {MAX_RESPONSE_HEAD} bytes of headers in answer to CONNECT; check that proxy-url names an HTTP proxy"
                ),
            ));
        }
        let byte = match stream.read_u8().await {
            Ok(byte) => byte,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the proxy {proxy} closed the connection without answering CONNECT"),
                ));
            }
            Err(e) => return Err(e),
        };
        head.push(byte);
        if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
            return Ok(head);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tokio::io::duplex;

    fn proxy(url: &str) -> ProxyUrl {
        url.parse().unwrap()
    }

    fn target() -> Endpoint {
        Endpoint::new("10.5.0.2", 50000)
    }

    /// Runs the handshake against a fake proxy that answers `answer` after reading the request;
    /// returns the outcome and the request the proxy received.
    async fn exchange(url: &str, target: Endpoint, answer: Vec<u8>) -> (io::Result<()>, String) {
        let (mut client, mut server) = duplex(64 * 1024);
        let proxy = proxy(url);
        let fake = tokio::spawn(async move {
            let mut request = Vec::new();
            while !request.ends_with(b"\r\n\r\n") {
                match server.read_u8().await {
                    Ok(b) => request.push(b),
                    Err(_) => break,
                }
            }
            let _ = server.write_all(&answer).await;
            // Keep the pipe open for tunnel data.
            let _ = server.write_all(b"TLS-BYTES").await;
            (String::from_utf8(request).unwrap(), server)
        });
        let outcome = handshake(&mut client, &proxy, &target).await;
        let (request, _server) = fake.await.unwrap();
        if outcome.is_ok() {
            // The bytes after the head are left for TLS.
            let mut rest = [0u8; 9];
            client.read_exact(&mut rest).await.unwrap();
            assert_eq!(&rest, b"TLS-BYTES");
        }
        (outcome, request)
    }

    #[tokio::test]
    async fn connect_request_and_success() {
        let (outcome, request) = exchange(
            "http://p:3128",
            Endpoint::new("fd00::1", 50000),
            b"HTTP/1.1 200 Connection established\r\nVia: p\r\n\r\n".to_vec(),
        )
        .await;
        outcome.unwrap();
        assert_eq!(
            request,
            "CONNECT [fd00::1]:50000 HTTP/1.1\r\nHost: [fd00::1]:50000\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn basic_auth_from_userinfo() {
        let (outcome, request) = exchange(
            "http://user:pass@p:3128",
            target(),
            b"HTTP/1.0 200 OK\r\n\r\n".to_vec(),
        )
        .await;
        outcome.unwrap();
        assert!(
            request.contains("\r\nProxy-Authorization: Basic dXNlcjpwYXNz\r\n"),
            "{request}"
        );
    }

    #[tokio::test]
    async fn refusals_are_explained_without_credentials() {
        let (outcome, _) = exchange(
            "http://user:S3CRET@p:3128",
            target(),
            b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n".to_vec(),
        )
        .await;
        let err = outcome.unwrap_err().to_string();
        assert!(
            err.contains("407") && err.contains("user and password"),
            "{err}"
        );
        assert!(!err.contains("S3CRET") && !err.contains("dXNlcj"), "{err}");

        let (outcome, _) = exchange(
            "http://p:3128",
            target(),
            b"HTTP/1.1 403 Forbidden\x1b[31m\r\n\r\n".to_vec(),
        )
        .await;
        let err = outcome.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        let err = err.to_string();
        assert!(
            err.contains("403 Forbidden[31m;") && err.contains("10.5.0.2:50000"),
            "control characters from the proxy are dropped: {err}"
        );
    }

    #[tokio::test]
    async fn a_non_http_answer_is_refused() {
        let (outcome, _) = exchange("http://p:1", target(), b"SSH-2.0-x\r\n\r\n".to_vec()).await;
        assert!(outcome.unwrap_err().to_string().contains("status line"));
    }

    #[tokio::test]
    async fn the_answer_head_is_bounded() {
        let mut answer = b"HTTP/1.1 200 OK\r\n".to_vec();
        while answer.len() <= MAX_RESPONSE_HEAD {
            answer.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        answer.extend_from_slice(b"\r\n");
        let (outcome, _) = exchange("http://p:1", target(), answer).await;
        let err = outcome.unwrap_err().to_string();
        assert!(
            err.contains(&format!("more than {MAX_RESPONSE_HEAD} bytes")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_closed_connection_is_reported() {
        let (mut client, mut server) = duplex(1024);
        let fake = tokio::spawn(async move {
            let mut request = [0u8; 16];
            server.read_exact(&mut request).await.unwrap();
            // Hangs up without answering.
        });
        let err = handshake(&mut client, &proxy("http://p:1"), &target())
            .await
            .unwrap_err();
        fake.await.unwrap();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(
            err.to_string().contains("without answering CONNECT"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_endpoint_host_cannot_inject_headers() {
        // Nobody answers: without the check the request would be written and fail otherwise.
        let (mut client, server) = duplex(1024);
        drop(server);
        let evil = Endpoint::new("10.0.0.1:1 HTTP/1.1\r\nX-Evil: 1\r\n\r\nCONNECT a", 50000);
        let err = handshake(&mut client, &proxy("http://p:1"), &evil)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
