//! MCP tools, prompts and resources for Talos, with the safety policy and audit log.
//!
//! Not built yet: this crate is filled by the read-tools and safety issues. It exports nothing so far.
