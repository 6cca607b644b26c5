//! A context's proxy-url is honoured: calls to talos-sim go through an HTTP CONNECT proxy written
//! here (loopback only), with Basic authentication from the URL; a refusing, absent or
//! unauthenticated proxy gives an error that says what to fix.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use talos_client::{CallOptions, ClientSettings, ErrorKind, GrpcTalosClient, NodeInfo as _};
use talos_config::{Context, Credentials, TalosConfig};
use talos_sim::{SimCluster, SimConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// How the test proxy answers a CONNECT.
#[derive(Clone)]
enum Behaviour {
    /// Opens the tunnel, if the request carries this `Proxy-Authorization` (when set).
    Tunnel { require: Option<&'static str> },
    /// Answers with this status line and closes.
    Refuse(&'static str),
}

/// A tiny HTTP CONNECT proxy on 127.0.0.1 that records the request heads it receives.
struct TestProxy {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
}

impl TestProxy {
    async fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let behaviour = behaviour.clone();
                let seen = seen.clone();
                tokio::spawn(serve(conn, behaviour, seen));
            }
        });
        Self { addr, requests }
    }

    fn url(&self, userinfo: &str) -> String {
        format!("http://{userinfo}{}", self.addr)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

async fn serve(mut conn: TcpStream, behaviour: Behaviour, seen: Arc<Mutex<Vec<String>>>) {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") && head.len() < 4096 {
        match conn.read_u8().await {
            Ok(b) => head.push(b),
            Err(_) => return,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    seen.lock().unwrap().push(head.clone());
    let target = head
        .strip_prefix("CONNECT ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_default()
        .to_owned();
    let answer = match behaviour {
        Behaviour::Refuse(status) => status,
        Behaviour::Tunnel {
            require: Some(auth),
        } if !head.contains(&format!("\r\nProxy-Authorization: {auth}\r\n")) => {
            "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"t\""
        }
        // Loopback only: this proxy never reaches anything else.
        Behaviour::Tunnel { .. } if !target.starts_with("127.0.0.1:") => "HTTP/1.1 403 Forbidden",
        Behaviour::Tunnel { .. } => {
            let Ok(mut upstream) = TcpStream::connect(&target).await else {
                let _ = conn.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                return;
            };
            if conn
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await
                .is_ok()
            {
                let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
            }
            return;
        }
    };
    let _ = conn.write_all(format!("{answer}\r\n\r\n").as_bytes()).await;
}

fn settings() -> ClientSettings {
    ClientSettings {
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        read_retries: 0,
        ..ClientSettings::default()
    }
}

/// A context for the simulated cluster built in code, through `proxy_url`.
fn context(sim: &SimCluster, proxy_url: &str) -> Context {
    let admin = sim.client_cert("os:admin").unwrap();
    let credentials =
        Credentials::from_pem(sim.ca_pem(), &admin.cert_pem, admin.talos_key_pem()).unwrap();
    Context::builder("sim", credentials)
        .endpoint(sim.endpoint().to_string())
        .nodes(sim.nodes().into_iter().map(|n| n.address))
        .proxy_url(proxy_url)
        .build()
        .unwrap()
}

fn connect_line(sim: &SimCluster) -> String {
    format!("CONNECT {} HTTP/1.1\r\n", sim.endpoint())
}

#[tokio::test]
async fn calls_go_through_the_proxy_tunnel() {
    let sim = SimCluster::start(SimConfig::default()).await.unwrap();
    let proxy = TestProxy::start(Behaviour::Tunnel { require: None }).await;
    let ctx = context(&sim, &proxy.url(""));
    let client = GrpcTalosClient::with_settings(&ctx, settings()).unwrap();
    let node = CallOptions::node(ctx.nodes()[0].clone());
    assert_eq!(client.version(&node).await.unwrap().tag, "v1.11.5");
    assert_eq!(client.hostname(&node).await.unwrap(), "talos-cp-1");

    let requests = proxy.requests();
    assert_eq!(
        requests.len(),
        1,
        "one tunnel carries the channel: {requests:?}"
    );
    assert!(requests[0].starts_with(&connect_line(&sim)), "{requests:?}");
    assert!(
        !requests[0].contains("Proxy-Authorization"),
        "no credentials were configured: {requests:?}"
    );
}

#[tokio::test]
async fn a_proxy_url_in_the_talosconfig_is_honoured_with_basic_auth() {
    let sim = SimCluster::start(SimConfig::default()).await.unwrap();
    // "tunnel-user:p@ss word" in base64.
    let proxy = TestProxy::start(Behaviour::Tunnel {
        require: Some("Basic dHVubmVsLXVzZXI6cEBzcyB3b3Jk"),
    })
    .await;
    let yaml = sim.talosconfig("os:reader").unwrap().replacen(
        "    talos-sim:\n",
        &format!(
            "    talos-sim:\n        proxy-url: {}\n",
            proxy.url("tunnel-user:p%40ss%20word@")
        ),
        1,
    );
    let ctx = TalosConfig::from_yaml(&yaml, "<sim>")
        .unwrap()
        .context(None)
        .unwrap();
    let proxy_url = ctx.proxy().expect("proxy-url resolved");
    assert_eq!(proxy_url.to_string(), format!("http://{}", proxy.addr));
    assert!(!format!("{ctx:?}").contains("p%40ss"), "{ctx:?}");

    let client = GrpcTalosClient::with_settings(&ctx, settings()).unwrap();
    let node = CallOptions::node(ctx.nodes()[1].clone());
    assert_eq!(client.hostname(&node).await.unwrap(), "talos-cp-2");
    assert_eq!(proxy.requests().len(), 1);
}

#[tokio::test]
async fn wrong_proxy_credentials_are_reported_without_them() {
    let sim = SimCluster::start(SimConfig::default()).await.unwrap();
    let proxy = TestProxy::start(Behaviour::Tunnel {
        require: Some("Basic dHVubmVsLXVzZXI6cEBzcyB3b3Jk"),
    })
    .await;
    for (userinfo, hint) in [
        (
            "tunnel-user:WRONG-PASSWORD@",
            "did not accept the user and password",
        ),
        ("", "add user:password@ to proxy-url"),
    ] {
        let ctx = context(&sim, &proxy.url(userinfo));
        let client = GrpcTalosClient::with_settings(&ctx, settings()).unwrap();
        let err = client
            .version(&CallOptions::node(ctx.nodes()[0].clone()))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
        let text = err.to_string();
        assert!(text.contains("407") && text.contains(hint), "{text}");
        assert!(!text.contains("WRONG-PASSWORD"), "{text}");
    }
}

#[tokio::test]
async fn a_refusing_proxy_gives_an_actionable_error() {
    let sim = SimCluster::start(SimConfig::default()).await.unwrap();
    let proxy = TestProxy::start(Behaviour::Refuse("HTTP/1.1 403 Forbidden")).await;
    let ctx = context(&sim, &proxy.url(""));
    let client = GrpcTalosClient::with_settings(&ctx, settings()).unwrap();
    let err = client
        .version(&CallOptions::node(ctx.nodes()[0].clone()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("the proxy http://{} refused CONNECT", proxy.addr))
            && text.contains(&sim.endpoint().to_string())
            && text.contains("403 Forbidden")
            && text.contains("allows tunnels"),
        "{text}"
    );
    assert_eq!(
        sim.calls(&ctx.nodes()[0], "Version"),
        0,
        "nothing reached apid"
    );
}

#[tokio::test]
async fn an_unreachable_proxy_names_proxy_url() {
    let sim = SimCluster::start(SimConfig::default()).await.unwrap();
    // A port nothing listens on: bind one, then free it.
    let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let ctx = context(&sim, &format!("http://user:SECRET-PW@{addr}"));
    let client = GrpcTalosClient::with_settings(&ctx, settings()).unwrap();
    let err = client
        .version(&CallOptions::node(ctx.nodes()[0].clone()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("cannot connect to the proxy http://{addr}"))
            && text.contains("proxy-url"),
        "{text}"
    );
    assert!(!text.contains("SECRET-PW"), "{text}");
}
