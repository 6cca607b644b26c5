//! Talos API client: the Talos API as domain traits under [`TalosApi`], and their native
//! gRPC/mTLS implementation, [`GrpcTalosClient`].
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
//! # Design
//!
//! - **Domain traits.** [`NodeInfo`], [`Files`], [`Workloads`], [`Logs`], [`Cluster`], [`Etcd`],
//!   [`Lifecycle`] and [`Resources`] each cover one area of the API; [`TalosApi`] is their
//!   supertrait, implemented for every type that implements them all. Code that needs one area
//!   takes that trait; code that needs everything takes `Arc<dyn TalosApi>` (its methods are
//!   callable there without importing the domain traits; on a concrete client, import
//!   [`prelude`]).
//! - **Call options first.** Every method takes [`CallOptions`] first (the target node and an
//!   optional timeout), then its arguments.
//! - **COSI kinds.** [`kinds`] names the resource kinds Talos serves as typed [`ResourceKind`]
//!   constants (namespace and fully qualified type); [`ResourceKind::is_sensitive`] tells the
//!   kinds that hold secrets.
//! - **One call path.** Every RPC goes through one pipeline call (deadline, endpoint failover,
//!   retries for idempotent reads only), the generated clients are built in one place, and
//!   stream items are gathered by one bounded helper.
//! - **Mocks.** With the `mock` feature, mockall generates a mock per domain trait
//!   (`MockNodeInfo`, `MockEtcd`, …) and `MockTalosApi`, which implements all of them.
//! - **Bounded streams.** Logs, dmesg, events, file reads and the kubeconfig are read with
//!   bounded memory; COSI watches are handed out as bounded streams ([`Resources::watch`]).
//!
//! # Example
//!
//! A client for a talosconfig context, asking every node for its version, one call per node
//! with [`fan_out`]. Here the cluster is the simulated one of `talos-sim`, over real mTLS:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use talos_client::{CallOptions, GrpcTalosClient, TalosApi, fan_out};
//!
//! let sim = talos_sim::SimCluster::start(talos_sim::SimConfig::default()).await?;
//! let config = talos_config::TalosConfig::from_yaml(&sim.talosconfig("os:reader")?, "<sim>")?;
//! let api: Arc<dyn TalosApi> = Arc::new(GrpcTalosClient::new(&config.context(None)?)?);
//!
//! let nodes: Vec<String> = sim.nodes().into_iter().map(|n| n.address).collect();
//! let results = fan_out(&nodes, 16, |node| {
//!     let api = api.clone();
//!     async move { api.version(&CallOptions::node(node)).await }
//! })
//! .await;
//! for r in &results {
//!     let version = r.result.as_ref().map_err(|e| e.to_string())?;
//!     assert!(version.tag.starts_with('v'), "{}: {}", r.node, version.tag);
//! }
//! assert_eq!(results.len(), nodes.len());
//! # Ok(())
//! # }
//! ```
//!
//! Errors are [`TalosError`], whose [`ErrorKind`] says what went wrong (connection, timeout,
//! permission, …) and whose `Api` variant keeps the gRPC [`Code`] the node answered.

#![warn(missing_docs)]

mod api;
mod channel;
mod code;
mod convert;
mod cosi;
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
pub use cosi::{ResourceKind, is_sensitive, kinds};
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
