//! Talos API client: the `TalosApi` trait and its native gRPC/mTLS implementation.
//!
//! Not built yet: this crate is filled by the client-layer issue. It exports nothing so far.
