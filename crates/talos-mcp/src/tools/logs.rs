//! Logs: service and container logs, kernel messages, machine events.

use super::workloads::Namespace;
use crate::call::{Call, Reply};
use crate::registry::{ToolDef, Toolset, tool};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use talos_client::{EventsRequest, LogSource, StreamLimits};

use super::bounded;
use crate::error::ToolError;
use crate::output::{Keep, PerNode};
use crate::server::{TalosMcp, TargetArgs};

/// Lines kept per node, at most; the output cap applies on top.
const MAX_TAIL: u32 = 5000;

/// Arguments of talos_service_logs.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct ServiceLogsArgs {
    #[serde(flatten)]
    pub target: TargetArgs,
    /// Service id (e.g. `etcd`, `kubelet`) or, in `k8s.io`, a container id.
    pub service: String,
    /// `system` (default): Talos services; `k8s.io`: Kubernetes containers.
    #[serde(default)]
    pub namespace: Option<Namespace>,
    /// Newest lines (1–5000, default 100); with `grep`, newest matching.
    #[serde(default)]
    pub tail: Option<u32>,
    /// Case-insensitive text filter; scans the whole log.
    #[serde(default)]
    pub grep: Option<String>,
}

/// Kernel message severities, most severe first (the kernel's names).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    #[serde(alias = "emergency")]
    Emerg,
    Alert,
    #[serde(alias = "critical")]
    Crit,
    #[serde(alias = "error")]
    Err,
    #[serde(alias = "warn")]
    Warning,
    Notice,
    Info,
    Debug,
}

impl Level {
    /// All severities, most severe first.
    const ALL: [Level; 8] = [
        Level::Emerg,
        Level::Alert,
        Level::Crit,
        Level::Err,
        Level::Warning,
        Level::Notice,
        Level::Info,
        Level::Debug,
    ];

    /// The name Talos writes in dmesg lines.
    fn as_str(self) -> &'static str {
        match self {
            Level::Emerg => "emerg",
            Level::Alert => "alert",
            Level::Crit => "crit",
            Level::Err => "err",
            Level::Warning => "warning",
            Level::Notice => "notice",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

/// Log lines of one node.
#[derive(Debug, Serialize, JsonSchema)]
pub struct LinesOut {
    /// Lines, oldest first (newest kept when cut).
    pub lines: Vec<String>,
    /// Lines read from the node.
    pub lines_read: u64,
    /// Matching lines left out (older than the kept ones).
    pub omitted: u64,
}

/// Arguments of talos_dmesg.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct DmesgArgs {
    #[serde(flatten)]
    pub target: TargetArgs,
    /// Newest lines (1–5000, default 100).
    #[serde(default)]
    pub tail: Option<u32>,
    /// Case-insensitive text filter.
    #[serde(default)]
    pub grep: Option<String>,
    /// Minimum severity.
    #[serde(default)]
    pub level: Option<Level>,
}

/// Arguments of talos_events.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct EventsArgs {
    #[serde(flatten)]
    pub target: TargetArgs,
    /// Newest events (1–500, default 50).
    #[serde(default)]
    pub tail: Option<u32>,
    /// Only this actor's events (e.g. a reboot's id).
    #[serde(default)]
    pub actor_id: Option<String>,
}

/// A machine event.
#[derive(Debug, Serialize, JsonSchema)]
pub struct EventOut {
    pub id: String,
    /// Payload type, e.g. machine.ServiceStateEvent.
    pub kind: String,
    pub summary: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub actor_id: String,
}

fn level_of(line: &str) -> Option<Level> {
    // Talos formats lines as "<host>: <facility>: <level>: [time]: message".
    line.split(": ")
        .take(4)
        .find_map(|part| Level::ALL.into_iter().find(|l| l.as_str() == part.trim()))
}

impl TalosMcp {
    /// Logs of a Talos service or Kubernetes container.
    pub(crate) async fn talos_service_logs(
        &self,
        _call: &Call,
        args: ServiceLogsArgs,
    ) -> Result<Reply<PerNode<LinesOut>>, ToolError> {
        let service = args.service.trim();
        if service.is_empty() {
            return Err(ToolError::invalid(
                "service",
                "is required, e.g. `etcd` or `kubelet`",
            ));
        }
        let source = match args.namespace.unwrap_or(Namespace::System) {
            Namespace::System => LogSource::service(service),
            Namespace::K8s => LogSource::container(service),
        };
        let tail = bounded("tail", args.tail.unwrap_or(100), 1, MAX_TAIL)?;
        let limits = StreamLimits {
            // With grep the whole log is scanned; otherwise the node sends only the tail.
            tail: if args.grep.is_some() {
                None
            } else {
                Some(tail)
            },
            follow_for: None,
            max_lines: tail as usize,
            // Set per call below: this node's share of the output cap.
            max_bytes: 0,
            grep: args.grep.clone(),
        };
        let result = self
            .per_node_shared(&args.target, |api, opts, share| {
                let source = source.clone();
                let limits = StreamLimits {
                    max_bytes: share,
                    ..limits.clone()
                };
                async move {
                    let out = api.logs(&opts, &source, &limits).await?;
                    Ok(LinesOut {
                        lines: out.lines,
                        lines_read: out.lines_read,
                        omitted: out.dropped_lines,
                    })
                }
            })
            .await;
        self.respond(
            "talos_service_logs",
            result,
            |l| {
                format!(
                    "{} lines (of {} read){}",
                    l.lines.len(),
                    l.lines_read,
                    l.lines
                        .last()
                        .map(|x| format!("; last: {x}"))
                        .unwrap_or_default()
                )
            },
            Keep::Last,
            "lower `tail`, add a `grep`, or pass fewer `nodes`",
        )
    }

    /// Kernel messages.
    pub(crate) async fn talos_dmesg(
        &self,
        _call: &Call,
        args: DmesgArgs,
    ) -> Result<Reply<PerNode<LinesOut>>, ToolError> {
        let level = args.level;
        let tail = bounded("tail", args.tail.unwrap_or(100), 1, MAX_TAIL)?;
        // Level filtering happens here, so read enough lines to find `tail` matches.
        let limits = StreamLimits {
            tail: None,
            follow_for: None,
            max_lines: if level.is_some() {
                MAX_TAIL as usize * 4
            } else {
                tail as usize
            },
            // Set per call below: this node's share of the output cap, four times that with
            // `level` (the level filter runs after reading).
            max_bytes: 0,
            grep: args.grep.clone(),
        };
        let result = self
            .per_node_shared(&args.target, |api, opts, share| {
                let limits = StreamLimits {
                    max_bytes: if level.is_some() { share * 4 } else { share },
                    ..limits.clone()
                };
                async move {
                    let out = api.dmesg(&opts, &limits).await?;
                    let mut lines: Vec<String> = out
                        .lines
                        .into_iter()
                        .filter(|l| level.is_none_or(|max| level_of(l).is_some_and(|lv| lv <= max)))
                        .collect();
                    let omitted =
                        out.dropped_lines + lines.len().saturating_sub(tail as usize) as u64;
                    let skip = lines.len().saturating_sub(tail as usize);
                    lines.drain(..skip);
                    Ok(LinesOut {
                        lines,
                        lines_read: out.lines_read,
                        omitted,
                    })
                }
            })
            .await;
        self.respond(
            "talos_dmesg",
            result,
            |l| format!("{} lines (of {} read)", l.lines.len(), l.lines_read),
            Keep::Last,
            "lower `tail`, add `grep` or `level`",
        )
    }

    /// Recent machine events.
    pub(crate) async fn talos_events(
        &self,
        _call: &Call,
        args: EventsArgs,
    ) -> Result<Reply<PerNode<Vec<EventOut>>>, ToolError> {
        let tail = bounded("tail", args.tail.unwrap_or(50), 1, 500)?;
        let request = EventsRequest {
            tail_events: Some(tail as i32),
            tail_seconds: None,
            actor_id: args.actor_id.clone(),
            max_events: tail as usize,
            // The stream stays open for new events; stop once the backlog has been sent.
            idle: Some(Duration::from_millis(500)),
        };
        let result = self
            .per_node(&args.target, |api, opts| {
                let request = request.clone();
                async move {
                    Ok(api
                        .events(&opts, &request)
                        .await?
                        .into_iter()
                        .map(|e| EventOut {
                            id: e.id,
                            kind: e.kind,
                            summary: e.summary,
                            actor_id: e.actor_id,
                        })
                        .collect::<Vec<_>>())
                }
            })
            .await;
        self.respond(
            "talos_events",
            result,
            |es| match es.last() {
                Some(e) => format!("{} events; latest: {}", es.len(), e.summary),
                None => "no events".into(),
            },
            Keep::Last,
            "lower `tail` or filter by `actor_id`",
        )
    }
}

/// The tools of this module, in listing order.
pub(crate) fn tools() -> Vec<ToolDef> {
    vec![
        tool(
            Toolset::Logs,
            "talos_service_logs",
            "Service logs",
            "Newest log lines of a Talos service or Kubernetes container on each node (no time filter).",
        )
        .run(TalosMcp::talos_service_logs)
        .build(),
        tool(
            Toolset::Logs,
            "talos_dmesg",
            "Kernel messages",
            "Newest kernel messages of each node, optionally filtered by text and minimum severity.",
        )
        .run(TalosMcp::talos_dmesg)
        .build(),
        tool(
            Toolset::Logs,
            "talos_events",
            "Machine events",
            "Recent machine events of each node (boot phases, service states, status), newest last.",
        )
        .run(TalosMcp::talos_events)
        .build(),
    ]
}

super::targeted_by_field!(ServiceLogsArgs, DmesgArgs, EventsArgs);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn dmesg_levels_are_parsed() {
        assert_eq!(
            level_of("cp-1: kern: err: [ 1.0]: ata1 failed"),
            Some(Level::Err)
        );
        assert_eq!(
            level_of("cp-1: kern: warning: [ 1.0]: x"),
            Some(Level::Warning)
        );
        assert_eq!(level_of("no level here"), None);
        assert!(Level::Err < Level::Warning && Level::Emerg < Level::Debug);
    }

    fn property(schema: &serde_json::Map<String, Value>, name: &str) -> Value {
        schema["properties"][name].clone()
    }

    #[test]
    fn closed_choices_are_enums_in_the_schema() {
        let logs = crate::schema::input_schema::<ServiceLogsArgs>();
        assert_eq!(
            property(&logs, "namespace")["enum"],
            json!(["system", "k8s.io"])
        );
        let dmesg = crate::schema::input_schema::<DmesgArgs>();
        assert_eq!(
            property(&dmesg, "level")["enum"],
            json!([
                "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"
            ])
        );
    }

    #[test]
    fn since_is_gone_from_service_logs() {
        // It was refused whatever its value: the log API has no time filter.
        let logs = crate::schema::input_schema::<ServiceLogsArgs>();
        assert!(property(&logs, "since").is_null(), "{logs:?}");
    }

    #[test]
    fn aliases_are_accepted() {
        for (alias, wanted) in [
            ("system", Namespace::System),
            ("k8s.io", Namespace::K8s),
            ("cri", Namespace::K8s),
            ("k8s", Namespace::K8s),
        ] {
            let a: ServiceLogsArgs =
                serde_json::from_value(json!({"service": "x", "namespace": alias})).unwrap();
            assert_eq!(a.namespace, Some(wanted), "{alias}");
        }
        let a: ServiceLogsArgs =
            serde_json::from_value(json!({"service": "x", "namespace": null})).unwrap();
        assert_eq!(a.namespace, None);
        for (alias, wanted) in [
            ("err", Level::Err),
            ("error", Level::Err),
            ("warn", Level::Warning),
            ("warning", Level::Warning),
            ("critical", Level::Crit),
            ("emergency", Level::Emerg),
            ("debug", Level::Debug),
        ] {
            let a: DmesgArgs = serde_json::from_value(json!({"level": alias})).unwrap();
            assert_eq!(a.level, Some(wanted), "{alias}");
        }
        let long = "q".repeat(10_000);
        let args = json!({ "level": long }).as_object().cloned().unwrap();
        let err = crate::call::arguments::<DmesgArgs>(args)
            .unwrap_err()
            .to_string();
        assert!(err.len() < 1024 && err.contains("`warning`"), "{err}");
        assert_eq!(
            serde_json::from_value::<DmesgArgs>(json!({"level": null}))
                .unwrap()
                .level,
            None
        );
        assert_eq!(
            serde_json::from_value::<DmesgArgs>(json!({}))
                .unwrap()
                .level,
            None
        );
        for l in Level::ALL {
            let back: Level = serde_json::from_value(json!(l.as_str())).unwrap();
            assert_eq!(back, l);
        }
    }
}
