//! Follows a Talos service's log on one node and prints lines as they arrive, for a while.
//!
//! The log streams in chunks that split lines anywhere; `LineAssembler` joins them again while
//! holding at most one partial (and bounded) line. The stream is opened through the `proto`
//! escape hatch on the client's managed channel, with the node set by `CallOptions::apply`.
//!
//! ```sh
//! cargo run -p talos-sim -- --talosconfig /tmp/sim-talosconfig &   # or use a real cluster
//! TALOSCONFIG=/tmp/sim-talosconfig cargo run -p talos-client --example follow_logs -- talos-cp-1 etcd 10
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)] // an example talks to its user

use std::process::ExitCode;
use std::time::Duration;

use talos_client::proto::common::ContainerDriver;
use talos_client::proto::machine::LogsRequest;
use talos_client::{CallOptions, GrpcTalosClient, LineAssembler};
use talos_config::TalosConfig;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [node, rest @ ..] = args.as_slice() else {
        eprintln!("usage: follow_logs NODE [SERVICE (default machined)] [SECONDS (default 30)]");
        return ExitCode::FAILURE;
    };
    let service = rest.first().map_or("machined", String::as_str);
    let seconds = match rest.get(1).map(|s| s.parse::<u64>()) {
        None => 30,
        Some(Ok(s)) => s,
        Some(Err(_)) => {
            eprintln!("SECONDS must be a whole number");
            return ExitCode::FAILURE;
        }
    };
    let context = match TalosConfig::load(None).and_then(|config| config.context(None)) {
        Ok(context) => context,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let client = match GrpcTalosClient::new(&context) {
        Ok(client) => client,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };

    // Talos services log under the `system` namespace of containerd.
    let mut request = tonic::Request::new(LogsRequest {
        namespace: "system".into(),
        id: service.to_owned(),
        driver: ContainerDriver::Containerd as i32,
        follow: true,
        tail_lines: 20,
    });
    if let Err(e) = CallOptions::node(node.clone()).apply(&mut request, None) {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    let mut stream = match client.proto().machine().logs(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            eprintln!("cannot open the log of {service} on {node}: {status}");
            return ExitCode::FAILURE;
        }
    };

    let mut lines = LineAssembler::default();
    let print = |line: String| println!("{node}: {line}");
    let stop = tokio::time::sleep(Duration::from_secs(seconds));
    tokio::pin!(stop);
    let outcome = loop {
        tokio::select! {
            () = &mut stop => break ExitCode::SUCCESS,
            message = stream.message() => match message {
                Ok(Some(chunk)) => lines.push(&chunk.bytes, print),
                Ok(None) => break ExitCode::SUCCESS,
                Err(status) => {
                    eprintln!("the log stream broke: {status}");
                    break ExitCode::FAILURE;
                }
            },
        }
    };
    lines.finish(print);
    outcome
}
