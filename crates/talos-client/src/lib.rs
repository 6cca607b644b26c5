//! Talos API client: the [`TalosApi`] trait and its native gRPC/mTLS implementation,
//! [`GrpcTalosClient`].
//!
//! Layers, bottom up:
//! - `tls`: a rustls client config per context — TLS 1.3 only, the context CA as the only root,
//!   the client certificate presented, ALPN `h2`.
//! - `channel`: one lazily connected tonic channel per endpoint, and the call pipeline every RPC
//!   goes through (timeouts, endpoint failover, retries for idempotent reads only). A context's
//!   `proxy-url` is honoured there: connections go through an HTTP CONNECT tunnel (`proxy`).
//! - [`CallOptions::apply`]: the one place where node targeting and deadlines become gRPC metadata.
//! - `grpc`: [`GrpcTalosClient`], which implements [`TalosApi`] by calling the generated stubs and
//!   converting answers into this crate's own types ([`types`]); [`GrpcTalosClient::proto`] is the
//!   escape hatch to the generated clients.
//! - [`fan_out`]: one call per node, concurrently and bounded, with a result per node.
//!
//! Streams (logs, dmesg, events, snapshots, kubeconfig) are consumed with bounded memory; COSI
//! watches are handed out as bounded streams ([`Resources::watch`]).
//! With the `mock` feature, `MockTalosApi` implements [`TalosApi`] for unit tests.

mod api;
mod channel;
mod code;
mod convert;
mod error;
mod fanout;
mod grpc;
mod kubeconfig;
mod lines;
mod options;
mod proxy;
mod tls;
pub mod types;

pub use api::{Cluster, Etcd, Files, Lifecycle, Logs, NodeInfo, Resources, TalosApi, Workloads};
#[cfg(any(test, feature = "mock"))]
pub use api::{
    MockCluster, MockEtcd, MockFiles, MockLifecycle, MockLogs, MockNodeInfo, MockResources,
    MockTalosApi, MockWorkloads,
};
pub use channel::{ClientSettings, ClientStats, RpcObserver};
pub use code::Code;
pub use error::{ErrorKind, Result, TalosError, Target};
pub use fanout::{DEFAULT_FAN_OUT_LIMIT, NodeResult, fan_out};
pub use grpc::{GrpcTalosClient, ProtoClients};
pub use kubeconfig::Kubeconfig;
pub use lines::{LineAssembler, MAX_LINE_BYTES, TailBuffer};
pub use options::{CallOptions, NODE_METADATA_KEY};
pub use types::*;

/// Extracts the `kubeconfig` file from the gzip'd tar apid streams, as [`Cluster::kubeconfig`]
/// does with the bytes it receives. Public only for the fuzz targets and property tests.
#[doc(hidden)]
pub fn unpack_kubeconfig(gzipped_tar: &[u8]) -> std::result::Result<Kubeconfig, String> {
    kubeconfig::unpack(gzipped_tar)
}

/// The API traits, for `use talos_client::prelude::*;`: calling a domain method on a concrete
/// client (not through `dyn TalosApi`) needs its trait in scope.
pub mod prelude {
    pub use crate::api::{
        Cluster, Etcd, Files, Lifecycle, Logs, NodeInfo, Resources, TalosApi, Workloads,
    };
}

/// The generated protobuf crate, for callers of [`GrpcTalosClient::proto`].
pub use talos_proto as proto;
