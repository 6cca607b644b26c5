//! The simulated endpoint's TLS and accept loop.
//!
//! rustls is configured here rather than through tonic so the simulator controls the protocol
//! versions, requires client certificates from the cluster CA, and can switch the certificate it
//! presents (expired, foreign CA) at run time. Each accepted connection carries the role of its
//! client certificate into request extensions.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, StoresServerSessions, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

use crate::state::{CertFault, Shared};
use crate::{ServerTlsMode, SimError, pki};

/// The Talos role of the connection's client certificate (`None`: a certificate the simulator did
/// not issue).
#[derive(Debug, Clone)]
pub(crate) struct PeerRole(pub(crate) Option<String>);

/// A TLS connection that tells tonic who is on the other end.
pub(crate) struct SimConn {
    inner: TlsStream<TcpStream>,
    role: PeerRole,
}

impl std::fmt::Debug for SimConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConn")
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl Connected for SimConn {
    type ConnectInfo = PeerRole;
    fn connect_info(&self) -> PeerRole {
        self.role.clone()
    }
}

impl AsyncRead for SimConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Picks the server certificate according to the current [`CertFault`].
#[derive(Debug)]
struct CertSwitch {
    shared: Arc<Shared>,
    good: Arc<CertifiedKey>,
    expired: Arc<CertifiedKey>,
    foreign: Arc<CertifiedKey>,
}

impl ResolvesServerCert for CertSwitch {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(match self.shared.cert_fault() {
            CertFault::None => self.good.clone(),
            CertFault::Expired => self.expired.clone(),
            CertFault::WrongCa => self.foreign.clone(),
        })
    }
}

/// TLS session resumption that stands aside while a [`CertFault`] is set: a resumed session
/// skips the certificate, so the fault would not reach clients that connected before.
#[derive(Debug)]
struct FaultAwareSessions {
    shared: Arc<Shared>,
    inner: Arc<dyn StoresServerSessions>,
}

impl StoresServerSessions for FaultAwareSessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.inner.put(key, value)
    }
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        if self.shared.cert_fault() == CertFault::None {
            self.inner.get(key)
        } else {
            None
        }
    }
    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        let value = self.inner.take(key);
        value.filter(|_| self.shared.cert_fault() == CertFault::None)
    }
    fn can_cache(&self) -> bool {
        self.inner.can_cache()
    }
}

fn certified(
    provider: &rustls::crypto::CryptoProvider,
    cert: &pki::IssuedCert,
) -> Result<Arc<CertifiedKey>, SimError> {
    let der = pki::pem_to_der(&cert.cert_pem)
        .ok_or_else(|| SimError::Tls("bad certificate PEM".into()))?;
    let key_der =
        pki::pem_to_der(&cert.key_pem).ok_or_else(|| SimError::Tls("bad key PEM".into()))?;
    let key = PrivateKeyDer::Pkcs8(key_der.into());
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| SimError::Tls(e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![CertificateDer::from(der)],
        signing,
    )))
}

fn server_config(shared: &Arc<Shared>) -> Result<rustls::ServerConfig, SimError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let ca = pki::pem_to_der(shared.pki.ca.cert_pem())
        .ok_or_else(|| SimError::Tls("bad CA PEM".into()))?;
    roots
        .add(CertificateDer::from(ca))
        .map_err(|e| SimError::Tls(e.to_string()))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| SimError::Tls(e.to_string()))?;
    let versions: &[&rustls::SupportedProtocolVersion] = match shared.config.tls {
        ServerTlsMode::Tls13 => &[&rustls::version::TLS13],
        ServerTlsMode::Tls12Only => &[&rustls::version::TLS12],
    };
    let resolver = CertSwitch {
        shared: shared.clone(),
        good: certified(&provider, &shared.pki.server)?,
        expired: certified(&provider, &shared.pki.expired_server)?,
        foreign: certified(&provider, &shared.pki.foreign_server)?,
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| SimError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec()];
    config.session_storage = Arc::new(FaultAwareSessions {
        shared: shared.clone(),
        inner: config.session_storage.clone(),
    });
    Ok(config)
}

/// A running server: the stop signal, the serving task and the accept loop.
#[derive(Debug)]
pub(crate) struct Running {
    pub(crate) stop: oneshot::Sender<()>,
    pub(crate) task: tokio::task::JoinHandle<()>,
    pub(crate) accept: tokio::task::AbortHandle,
}

/// Binds the listener on `bind` and serves every service until the stop signal fires.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    bind: SocketAddr,
) -> Result<(SocketAddr, Running), SimError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(&shared)?));
    let listener = TcpListener::bind(bind)
        .await
        .map_err(|source| SimError::Bind { addr: bind, source })?;
    let endpoint = listener
        .local_addr()
        .map_err(|source| SimError::Bind { addr: bind, source })?;

    let (conn_tx, conn_rx) = tokio::sync::mpsc::channel::<Result<SimConn, std::io::Error>>(64);
    let accept_shared = shared.clone();
    let accept_task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _peer)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let shared = accept_shared.clone();
            let conn_tx = conn_tx.clone();
            tokio::spawn(async move {
                // A failed handshake just drops the connection, as a real server would.
                let Ok(Ok(tls)) =
                    tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                else {
                    return;
                };
                shared.handshake_done();
                let role = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|certs| certs.first())
                    .and_then(|cert| shared.role_of(cert.as_ref()));
                let _ = conn_tx
                    .send(Ok(SimConn {
                        inner: tls,
                        role: PeerRole(role),
                    }))
                    .await;
            });
        }
    });

    let accept = accept_task.abort_handle();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let router = crate::services::router(shared);
    let task = tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::ReceiverStream::new(conn_rx);
        let result = router
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stop_rx.await;
            })
            .await;
        accept_task.abort();
        if let Err(e) = result {
            tracing::warn!(error = %e, "simulated apid stopped with an error");
        }
    });
    Ok((
        endpoint,
        Running {
            stop: stop_tx,
            task,
            accept,
        },
    ))
}
