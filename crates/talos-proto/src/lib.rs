//! Protobuf messages and tonic stubs for the Talos API (generated; see `proto/README.md`).
