//! Unit-testing your own code with `MockTalosApi` (feature `mock`): the function below works on
//! any `TalosApi` — the gRPC client in `main`, the mock in its tests.
//!
//! ```sh
//! cargo test -p talos-client --features mock --example mock_test      # the tests
//! TALOSCONFIG=/tmp/sim-talosconfig cargo run -p talos-client --features mock --example mock_test -- talos-cp-1
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)] // an example talks to its user

use std::process::ExitCode;

use talos_client::{CallOptions, GrpcTalosClient, TalosApi, TalosError};
use talos_config::TalosConfig;

/// The services on `node` that are not running and healthy, with their state, sorted by id.
async fn unhealthy_services(
    api: &dyn TalosApi,
    node: &str,
) -> Result<Vec<(String, String)>, TalosError> {
    let mut bad: Vec<(String, String)> = api
        .services(&CallOptions::node(node))
        .await?
        .into_iter()
        .filter(|s| s.state != "Running" || !(s.health.healthy || s.health.unknown))
        .map(|s| {
            let health = if s.health.last_message.is_empty() {
                String::new()
            } else {
                format!(" ({})", s.health.last_message)
            };
            (s.id, format!("{}{health}", s.state))
        })
        .collect();
    bad.sort();
    Ok(bad)
}

#[tokio::main]
async fn main() -> ExitCode {
    let Some(node) = std::env::args().nth(1) else {
        eprintln!("usage: mock_test NODE");
        return ExitCode::FAILURE;
    };
    let client = match TalosConfig::load(None)
        .and_then(|config| config.context(None))
        .map_err(|e| e.to_string())
        .and_then(|ctx| GrpcTalosClient::new(&ctx).map_err(|e| e.to_string()))
    {
        Ok(client) => client,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match unhealthy_services(&client, &node).await {
        Ok(bad) if bad.is_empty() => {
            println!("{node}: every service is running and healthy");
            ExitCode::SUCCESS
        }
        Ok(bad) => {
            for (id, state) in bad {
                println!("{node}: {id}: {state}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a panic in a test is a failed test

    use super::*;
    use talos_client::{MockTalosApi, ServiceHealth, ServiceInfo, Target};

    fn service(id: &str, state: &str, healthy: bool, unknown: bool) -> ServiceInfo {
        ServiceInfo {
            id: id.into(),
            state: state.into(),
            health: ServiceHealth {
                healthy,
                unknown,
                last_message: if healthy {
                    String::new()
                } else {
                    "probe failed".into()
                },
                ..ServiceHealth::default()
            },
            ..ServiceInfo::default()
        }
    }

    #[tokio::test]
    async fn reports_stopped_and_failing_services_only() {
        let mut api = MockTalosApi::new();
        api.expect_services()
            .withf(|opts| opts.node.as_deref() == Some("10.5.0.2"))
            .times(1)
            .returning(|_| {
                Ok(vec![
                    service("kubelet", "Running", false, false),
                    service("etcd", "Running", true, false),
                    service("udevd", "Running", false, true), // no health check: fine
                    service("apid", "Finished", true, false),
                ])
            });
        let bad = unhealthy_services(&api, "10.5.0.2").await.unwrap();
        assert_eq!(
            bad,
            vec![
                ("apid".to_owned(), "Finished".to_owned()),
                ("kubelet".to_owned(), "Running (probe failed)".to_owned()),
            ]
        );
    }

    #[tokio::test]
    async fn errors_pass_through() {
        let mut api = MockTalosApi::new();
        api.expect_services().returning(|opts| {
            Err(TalosError::PermissionDenied {
                target: Target {
                    endpoint: None,
                    node: opts.node.clone(),
                },
                message: "not allowed".into(),
            })
        });
        let err = unhealthy_services(&api, "10.5.0.9").await.unwrap_err();
        assert_eq!(err.kind(), talos_client::ErrorKind::PermissionDenied);
    }
}
