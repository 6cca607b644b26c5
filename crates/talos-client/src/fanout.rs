//! Running one call per node, concurrently and bounded, with a result per node.

use std::future::Future;

use futures_util::StreamExt as _;

use crate::TalosError;

/// Default number of nodes called at once.
pub const DEFAULT_FAN_OUT_LIMIT: usize = 16;

/// One node's outcome in a fan-out.
#[derive(Debug)]
pub struct NodeResult<T> {
    /// The node the call targeted.
    pub node: String,
    /// Its value, or its own error; other nodes are unaffected.
    pub result: Result<T, TalosError>,
}

/// Calls `call` once per node with at most `limit` calls in flight, and returns the results in the
/// order of `nodes`. One failing node never fails the others.
///
/// Works with any [`crate::TalosApi`], including the mock:
///
/// ```no_run
/// # async fn demo(api: std::sync::Arc<dyn talos_client::TalosApi>) {
/// use talos_client::{fan_out, CallOptions};
/// let nodes = vec!["10.5.0.2".to_owned(), "10.5.0.3".to_owned()];
/// for r in fan_out(&nodes, 16, |node| {
///     let api = api.clone();
///     async move { api.version(&CallOptions::node(node)).await }
/// })
/// .await
/// {
///     match r.result {
///         Ok(v) => eprintln!("{}: {}", r.node, v.tag),
///         Err(e) => eprintln!("{}: {e}", r.node),
///     }
/// }
/// # }
/// ```
pub async fn fan_out<T, F, Fut>(nodes: &[String], limit: usize, call: F) -> Vec<NodeResult<T>>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<T, TalosError>>,
{
    futures_util::stream::iter(nodes.iter().cloned())
        .map(|node| {
            let fut = call(node.clone());
            async move {
                NodeResult {
                    node,
                    result: fut.await,
                }
            }
        })
        .buffered(limit.max(1))
        .collect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Target;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn bounded_ordered_and_isolated() {
        let nodes: Vec<String> = (0..40).map(|i| format!("10.0.0.{i}")).collect();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let results = fan_out(&nodes, 5, |node| {
            let in_flight = in_flight.clone();
            let peak = peak.clone();
            async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                if node.ends_with(".7") {
                    Err(TalosError::Connection {
                        target: Target {
                            endpoint: None,
                            node: Some(node),
                        },
                        message: "down".into(),
                    })
                } else {
                    Ok(node.len())
                }
            }
        })
        .await;
        assert_eq!(results.len(), 40);
        assert!(peak.load(Ordering::SeqCst) <= 5);
        assert!(peak.load(Ordering::SeqCst) >= 2, "calls overlapped");
        for (i, r) in results.iter().enumerate() {
            assert_eq!(r.node, format!("10.0.0.{i}"));
            assert_eq!(r.result.is_err(), i == 7);
        }
    }
}
