//! A simulated Talos `apid` for tests, benchmarks and the demo.
//!
//! So far this crate holds the simulated cluster's PKI ([`pki`]): an Ed25519 OS CA, server
//! certificates with IP and DNS SANs, role-bearing client certificates, and a talosconfig renderer
//! that writes credentials the way Talos does. The gRPC server itself arrives with the client layer.

pub mod pki;
