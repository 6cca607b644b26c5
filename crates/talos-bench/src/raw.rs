//! The baselines a tool call is compared with: a bare tonic `Version` RPC over our own mTLS
//! connector (TLS 1.3, h2, TCP_NODELAY: the same kind of channel talos-client opens), and the
//! same RPC through talos-client's `TalosApi`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use talos_proto::machine::machine_service_client::MachineServiceClient;
use talos_sim::{SimCluster, pki};
use tonic::transport::Channel;

/// A MachineService client on one mTLS connection to the simulator, as `os:reader`.
pub(crate) async fn machine_client(sim: &SimCluster) -> Result<MachineServiceClient<Channel>> {
    let cert = sim.client_cert("os:reader")?;
    let der = |pem: &str| pki::pem_to_der(pem).context("a PEM block from the simulator");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(der(&sim.ca_pem())?))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der(&cert.key_pem)?));
    let chain = vec![CertificateDer::from(der(&cert.cert_pem)?)];
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let addr = sim.endpoint();
    let service = tower::service_fn(move |_uri: http::Uri| {
        let connector = connector.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let tls = connector
                .connect(ServerName::IpAddress(addr.ip().into()), tcp)
                .await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(service)
        .await?;
    Ok(MachineServiceClient::new(channel).max_decoding_message_size(64 << 20))
}

/// A request aimed at `node` through the `node` metadata.
pub(crate) fn to<T>(node: &str, message: T) -> Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("node", node.parse()?);
    Ok(request)
}

/// talos-client for the simulator's talosconfig.
pub(crate) fn talos_client(sim: &SimCluster) -> Result<talos_client::GrpcTalosClient> {
    let yaml = sim.talosconfig("os:reader")?;
    let context = talos_config::TalosConfig::from_yaml(&yaml, "<talos-sim>")?.context(None)?;
    Ok(talos_client::GrpcTalosClient::new(&context)?)
}
