//! A bare tonic client for the simulator over real mTLS: its own rustls connector (like the
//! server's, the versions chosen by the test), requests targeted with `node` metadata, and stream
//! helpers.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use talos_proto::common;
use talos_proto::cosi::resource::state_client::StateClient;
use talos_proto::machine::machine_service_client::MachineServiceClient;
use talos_sim::{SimCluster, pki};
use tokio::net::TcpStream;
use tonic::transport::Channel;
use tonic::{Code, Request, Status, Streaming};

pub type Machine = MachineServiceClient<Channel>;

/// TLS versions a test client offers.
pub const TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
pub const TLS12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];

/// A client TLS config trusting the sim CA and presenting `cert`.
pub fn tls_config(
    ca_pem: &str,
    cert: &pki::IssuedCert,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(pki::pem_to_der(ca_pem).unwrap()))
        .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        pki::pem_to_der(&cert.key_pem).unwrap(),
    ));
    let chain = vec![CertificateDer::from(
        pki::pem_to_der(&cert.cert_pem).unwrap(),
    )];
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// Connects (eagerly, so handshake failures show here) with a TLS config of the test's choice.
pub async fn connect_with(
    sim: &SimCluster,
    tls: Arc<rustls::ClientConfig>,
) -> Result<Channel, tonic::transport::Error> {
    let addr = sim.endpoint();
    let connector = tokio_rustls::TlsConnector::from(tls);
    let service = tower::service_fn(move |_uri: http::Uri| {
        let connector = connector.clone();
        async move {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::IpAddress(addr.ip().into());
            let tls = connector.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(service)
        .await
}

/// A TLS 1.3 channel with a fresh client certificate of `role`.
pub async fn channel(sim: &SimCluster, role: &str) -> Channel {
    let cert = sim.client_cert(role).unwrap();
    connect_with(sim, tls_config(&sim.ca_pem(), &cert, TLS13))
        .await
        .unwrap()
}

/// A MachineService client with `role`.
pub async fn machine(sim: &SimCluster, role: &str) -> Machine {
    MachineServiceClient::new(channel(sim, role).await).max_decoding_message_size(64 << 20)
}

/// A COSI State client with `role`.
pub async fn state(sim: &SimCluster, role: &str) -> StateClient<Channel> {
    StateClient::new(channel(sim, role).await)
}

/// A request targeted at `node` (address or hostname) like talosctl does.
pub fn to<T>(node: &str, msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut().insert("node", node.parse().unwrap());
    req
}

/// Asserts a call failed with `code` and returns the status.
pub fn expect_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> Status {
    match result {
        Ok(v) => panic!("expected {code:?}, got {v:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "{status:?}");
            status
        }
    }
}

/// Reads a `common.Data` stream to its end: the chunks, and the status it ended with.
pub async fn chunks(mut stream: Streaming<common::Data>) -> (Vec<Vec<u8>>, Option<Status>) {
    let mut out = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(d)) => out.push(d.bytes),
            Ok(None) => return (out, None),
            Err(status) => return (out, Some(status)),
        }
    }
}

/// Polls until `cond` holds or `limit` passes.
pub async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

/// Every error in a chain, Debug-formatted (rustls errors show their variant there).
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = format!("{err:?}");
    let mut next = err.source();
    while let Some(e) = next {
        out.push_str(&format!(" <- {e:?}"));
        next = e.source();
    }
    out
}
