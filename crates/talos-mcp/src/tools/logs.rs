//! Logs: service and container logs, kernel messages, machine events.

use crate::call::{Call, Reply};
use crate::registry::{ToolDef, Toolset, tool};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use talos_client::{EventsRequest, LogSource, StreamLimits};

use super::bounded;
use crate::error::{ToolError, echo};
use crate::output::{Keep, PerNode};
use crate::server::{TalosMcp, TargetArgs};

/// Lines kept per node, at most; the output cap applies on top.
const MAX_TAIL: u32 = 5000;

/// Arguments of talos_service_logs.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct ServiceLogsArgs {
    #[serde(flatten)]
    pub target: TargetArgs,
    /// Talos service id (e.g. `etcd`, `kubelet`, `apid`) or, with namespace `k8s.io`, a
    /// Kubernetes container id.
    pub service: String,
    /// `system` (Talos services, default) or `k8s.io` (Kubernetes containers).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Newest lines to return (1–5000, default 100). With `grep`, the newest matching lines.
    #[serde(default)]
    pub tail: Option<u32>,
    /// Only lines containing this text (case-insensitive). With `grep`, the whole log is scanned.
    #[serde(default)]
    pub grep: Option<String>,
    /// Not supported: the Talos log API has no time filter. Use `tail` and `grep`.
    #[serde(default)]
    pub since: Option<String>,
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
    /// Newest lines to return (1–5000, default 100).
    #[serde(default)]
    pub tail: Option<u32>,
    /// Only lines containing this text (case-insensitive).
    #[serde(default)]
    pub grep: Option<String>,
    /// Only messages of at least this severity: `err`, `warning`, `notice`, `info` or `debug`.
    #[serde(default)]
    pub level: Option<String>,
}

/// Arguments of talos_events.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct EventsArgs {
    #[serde(flatten)]
    pub target: TargetArgs,
    /// Most recent events to return (1–500, default 50).
    #[serde(default)]
    pub tail: Option<u32>,
    /// Only events caused by this actor id (e.g. the id a reboot returned).
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

/// Severities, most severe first, as the kernel names them in Talos's dmesg lines.
const LEVELS: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

fn level_of(line: &str) -> Option<usize> {
    // Talos formats lines as "<host>: <facility>: <level>: [time]: message".
    line.split(": ")
        .take(4)
        .find_map(|part| LEVELS.iter().position(|l| *l == part.trim()))
}

impl TalosMcp {
    /// Logs of a Talos service or Kubernetes container.
    pub(crate) async fn talos_service_logs(
        &self,
        _call: &Call,
        args: ServiceLogsArgs,
    ) -> Result<Reply<PerNode<LinesOut>>, ToolError> {
        let checked = (|| {
            if args.since.is_some() {
                return Err(ToolError::invalid(
                    "since",
                    "is not supported: the Talos log API has no time filter; use `tail` and `grep`",
                ));
            }
            if args.service.trim().is_empty() {
                return Err(ToolError::invalid(
                    "service",
                    "is required, e.g. `etcd` or `kubelet`",
                ));
            }
            let source = match args.namespace.as_deref() {
                None | Some("system") => LogSource::service(args.service.trim()),
                Some("k8s.io" | "cri") => LogSource::container(args.service.trim()),
                Some(other) => {
                    return Err(ToolError::invalid(
                        "namespace",
                        format!("must be `system` or `k8s.io`, got `{}`", echo(other)),
                    ));
                }
            };
            Ok((
                source,
                bounded("tail", args.tail.unwrap_or(100), 1, MAX_TAIL)?,
            ))
        })();
        let (source, tail) = match checked {
            Ok(v) => v,
            Err(e) => return Err(e),
        };
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
        let checked = (|| {
            let level = match args.level.as_deref() {
                None => None,
                Some(l) => Some(
                    LEVELS
                        .iter()
                        .position(|x| {
                            *x == l
                                || (l == "error" && *x == "err")
                                || (l == "warn" && *x == "warning")
                        })
                        .ok_or_else(|| {
                            ToolError::invalid(
                                "level",
                                format!("must be one of {}, got `{}`", LEVELS.join(", "), echo(l)),
                            )
                        })?,
                ),
            };
            Ok((
                level,
                bounded("tail", args.tail.unwrap_or(100), 1, MAX_TAIL)?,
            ))
        })();
        let (level, tail) = match checked {
            Ok(v) => v,
            Err(e) => return Err(e),
        };
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
        let tail = match bounded("tail", args.tail.unwrap_or(50), 1, 500) {
            Ok(t) => t,
            Err(e) => return Err(e),
        };
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
            "Newest log lines of a Talos service (etcd, kubelet, apid, …) or a Kubernetes container (namespace k8s.io) on each node, with an optional case-insensitive grep. Large logs are streamed with bounded memory and the newest lines kept.",
        )
        .run(TalosMcp::talos_service_logs)
        .build(),
        tool(
            Toolset::Logs,
            "talos_dmesg",
            "Kernel messages",
            "Newest kernel messages of each node, filtered by text and minimum severity (err, warning, notice, info, debug).",
        )
        .run(TalosMcp::talos_dmesg)
        .build(),
        tool(
            Toolset::Logs,
            "talos_events",
            "Machine events",
            "Recent machine events of each node (boot sequences, phases, service state changes, machine status), newest last.",
        )
        .run(TalosMcp::talos_events)
        .build(),
    ]
}

impl crate::registry::ToolArgs for ServiceLogsArgs {
    fn target(&self) -> crate::registry::CallTarget<'_> {
        self.target.target()
    }
}

impl crate::registry::ToolArgs for DmesgArgs {
    fn target(&self) -> crate::registry::CallTarget<'_> {
        self.target.target()
    }
}

impl crate::registry::ToolArgs for EventsArgs {
    fn target(&self) -> crate::registry::CallTarget<'_> {
        self.target.target()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dmesg_levels_are_parsed() {
        assert_eq!(level_of("cp-1: kern: err: [ 1.0]: ata1 failed"), Some(3));
        assert_eq!(level_of("cp-1: kern: warning: [ 1.0]: x"), Some(4));
        assert_eq!(level_of("no level here"), None);
    }
}
