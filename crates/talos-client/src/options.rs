//! Per-call options and the single place that turns them into gRPC metadata.

use std::time::Duration;

/// Metadata key naming the node apid should proxy a call to.
pub const NODE_METADATA_KEY: &str = "node";

/// Options for one call: which node answers and how long to wait.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallOptions {
    /// The node to target (bare address or hostname, no port). `None`: the endpoint answers itself.
    pub node: Option<String>,
    /// Overrides the client's default timeout for unary calls (and the idle timeout for streams).
    pub timeout: Option<Duration>,
}

impl CallOptions {
    /// Targets `node` through the endpoint.
    pub fn node(node: impl Into<String>) -> Self {
        Self {
            node: Some(node.into()),
            timeout: None,
        }
    }

    /// Lets the endpoint itself answer.
    pub fn endpoint() -> Self {
        Self::default()
    }

    /// Sets the timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Adds the node metadata and, for unary calls, the gRPC deadline to `request`. Every call the
    /// client makes goes through here; so can calls made through the `proto` escape hatch.
    pub fn apply<T>(
        &self,
        request: &mut tonic::Request<T>,
        deadline: Option<Duration>,
    ) -> Result<(), String> {
        if let Some(node) = &self.node {
            let value = node
                .parse()
                .map_err(|_| format!("node `{node}` is not a valid metadata value"))?;
            request.metadata_mut().insert(NODE_METADATA_KEY, value);
        }
        if let Some(deadline) = deadline {
            request.set_timeout(deadline);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_and_deadline_become_metadata() {
        let mut req = tonic::Request::new(());
        CallOptions::node("10.5.0.3")
            .apply(&mut req, Some(Duration::from_secs(3)))
            .unwrap();
        assert_eq!(req.metadata().get("node").unwrap(), "10.5.0.3");
        assert_eq!(req.metadata().get("grpc-timeout").unwrap(), "3000000u");
    }

    #[test]
    fn endpoint_calls_carry_no_node() {
        let mut req = tonic::Request::new(());
        CallOptions::endpoint().apply(&mut req, None).unwrap();
        assert!(req.metadata().get("node").is_none());
        assert!(req.metadata().get("grpc-timeout").is_none());
    }

    #[test]
    fn invalid_node_is_refused_before_sending() {
        let mut req = tonic::Request::new(());
        assert!(
            CallOptions::node("bad\nnode")
                .apply(&mut req, None)
                .is_err()
        );
    }
}
