//! Waits built on COSI watches: follow a node until its machine is running, its services are
//! healthy, it runs a version, or it has booted again, by watching the resource that says so
//! (`MachineStatuses`, `Services`, `Versions`, `BootIDs`) instead of asking again and again.
//!
//! A watch breaks when the node goes down (a reboot): the wait opens it again, with a bounded
//! backoff, until its deadline. A node that does not answer watches (`Unimplemented`,
//! `PermissionDenied`, or a stream that fails other than by losing the node) is polled instead,
//! for the rest of the wait. Every wait ends by its deadline, and says whether it watched or
//! polled.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::{Map, Value};
use talos_client::{CallOptions, ErrorKind, ResourceEvent, TalosApi, TalosError, WatchOptions};
use tokio::time::Instant;

/// How a wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitOutcome<T> {
    /// The condition holds; what was seen when it did.
    Reached(T),
    /// The deadline passed first.
    TimedOut,
    /// The node cannot be followed any more (for example it refused the credentials).
    Lost(String),
}

/// How a wait learnt what it reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// A COSI watch of the resource.
    Watch,
    /// Repeated reads (the node does not answer watches).
    Poll,
}

/// The result of a wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waited<T> {
    /// How it ended.
    pub outcome: WaitOutcome<T>,
    /// Whether it watched or polled (at the end).
    pub via: Via,
}

/// Events one watch delivers before the wait opens a new one.
const MAX_EVENTS: usize = 10_000;
/// Largest watch message a wait accepts (the resources it watches are small).
const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// Pause between polls.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// First and largest pause before a broken watch is opened again.
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Waits until the node's machine status is `running` and ready. Call it once the node is known
/// to be on its way (after [`until_new_boot`] for a reboot): a node about to go down may still
/// say `running`.
pub async fn until_machine_running(
    api: &dyn TalosApi,
    opts: &CallOptions,
    timeout: Duration,
) -> Waited<()> {
    let watched = Watched {
        namespace: "runtime",
        resource_type: "MachineStatuses.runtime.talos.dev",
        id: Some("machine"),
    };
    let check = |view: &View| {
        let spec = view.get("machine")?;
        let running = spec.get("stage").and_then(Value::as_str) == Some("running");
        let ready = spec.get("status").and_then(|s| s.get("ready")) == Some(&Value::Bool(true));
        (running && ready).then_some(())
    };
    let poll = || async {
        match api
            .resource_get(
                opts,
                "runtime",
                "MachineStatuses.runtime.talos.dev",
                "machine",
            )
            .await
        {
            Ok(r) => {
                let view = View::from([(
                    "machine".to_owned(),
                    crate::redact::spec_object(&r.spec_yaml),
                )]);
                Ok(check(&view))
            }
            Err(e) if transient(&e) => Err(e),
            // A node without the resource (or that will not show it): answering at all is the
            // best sign it is running.
            Err(_) => api.version(opts).await.map(|_| Some(())),
        }
    };
    wait(api, opts, timeout, &watched, check, poll).await
}

/// Waits until every service of the node runs and is healthy (or has no health check);
/// reports their ids.
pub async fn until_services_healthy(
    api: &dyn TalosApi,
    opts: &CallOptions,
    timeout: Duration,
) -> Waited<Vec<String>> {
    let watched = Watched {
        namespace: "runtime",
        resource_type: "Services.v1alpha1.talos.dev",
        id: None,
    };
    let check = |view: &View| {
        let flag = |spec: &Map<String, Value>, key: &str| spec.get(key) == Some(&Value::Bool(true));
        let all_up = view
            .values()
            .all(|s| flag(s, "running") && (flag(s, "healthy") || flag(s, "unknown")));
        (!view.is_empty() && all_up).then(|| view.keys().cloned().collect())
    };
    let poll = || async {
        let services = api.services(opts).await?;
        let all_up = services
            .iter()
            .all(|s| s.state == "Running" && (s.health.healthy || s.health.unknown));
        Ok((!services.is_empty() && all_up).then(|| services.into_iter().map(|s| s.id).collect()))
    };
    wait(api, opts, timeout, &watched, check, poll).await
}

/// Waits until the node runs Talos `version` (`v1.11.3` or `1.11.3`); reports the tag seen.
pub async fn until_version(
    api: &dyn TalosApi,
    opts: &CallOptions,
    version: &str,
    timeout: Duration,
) -> Waited<String> {
    let wanted = version.trim_start_matches('v').to_owned();
    let matches = |tag: &str| tag.trim_start_matches('v') == wanted;
    let watched = Watched {
        namespace: "runtime",
        resource_type: "Versions.runtime.talos.dev",
        id: Some("version"),
    };
    let check = |view: &View| {
        let tag = text(view.get("version")?.get("version")?)?;
        matches(&tag).then_some(tag)
    };
    let poll = || async {
        let v = api.version(opts).await?;
        Ok(matches(&v.tag).then_some(v.tag))
    };
    wait(api, opts, timeout, &watched, check, poll).await
}

/// Waits until the node has booted again: its boot id differs from `before`; reports the new
/// one.
pub async fn until_new_boot(
    api: &dyn TalosApi,
    opts: &CallOptions,
    before: &str,
    timeout: Duration,
) -> Waited<String> {
    let watched = Watched {
        namespace: "runtime",
        resource_type: "BootIDs.runtime.talos.dev",
        id: Some("boot-id"),
    };
    let check = |view: &View| {
        let id = text(view.get("boot-id")?.get("bootId")?)?;
        (!id.is_empty() && id != before).then_some(id)
    };
    let poll = || async {
        let file = api
            .read_file(opts, "/proc/sys/kernel/random/boot_id", 128)
            .await?;
        let id = String::from_utf8_lossy(&file.data).trim().to_owned();
        Ok((!id.is_empty() && id != before).then_some(id))
    };
    wait(api, opts, timeout, &watched, check, poll).await
}

/// The resource (or type, when `id` is `None`) a wait watches.
struct Watched {
    namespace: &'static str,
    resource_type: &'static str,
    id: Option<&'static str>,
}

/// The watched resources as last seen: id → spec.
type View = BTreeMap<String, Map<String, Value>>;

/// A scalar spec value as text.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The node is (for now) out of reach: wait and try again.
fn transient(e: &TalosError) -> bool {
    matches!(e.kind(), ErrorKind::Connection | ErrorKind::Timeout)
}

/// Nothing will change by trying again: the credentials or the configuration are wrong.
fn fatal(e: &TalosError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Authentication
            | ErrorKind::InvalidConfig
            | ErrorKind::MissingCredentials
            | ErrorKind::Local
    )
}

/// Applies one watch event to the view; returns whether the view is complete (bootstrapped).
fn apply(view: &mut View, event: ResourceEvent) -> bool {
    if event.kind == "bootstrapped" {
        return true;
    }
    let destroyed = event.kind == "destroyed";
    if let Some(r) = event.resource.or(event.old) {
        if destroyed {
            view.remove(&r.id);
        } else {
            view.insert(r.id, crate::redact::spec_object(&r.spec_yaml));
        }
    }
    false
}

/// How one opened watch ended, when it did not reach the condition.
enum Ended<T> {
    Done(Waited<T>),
    /// Broken by the node going away, or ended at its cap: open another.
    Reopen,
    /// The node does not answer watches: poll.
    Poll,
}

/// The wait: watch `watched` until `check` holds, reopening broken watches; poll with `poll`
/// where the node does not answer watches. `poll` answers `Ok(Some(_))` when the condition holds.
async fn wait<T, C, P, Fut>(
    api: &dyn TalosApi,
    opts: &CallOptions,
    timeout: Duration,
    watched: &Watched,
    check: C,
    poll: P,
) -> Waited<T>
where
    C: Fn(&View) -> Option<T>,
    P: Fn() -> Fut,
    Fut: Future<Output = Result<Option<T>, TalosError>>,
{
    let deadline = Instant::now() + timeout;
    let timed_out = |via| Waited {
        outcome: WaitOutcome::TimedOut,
        via,
    };
    let mut backoff = BACKOFF_FIRST;
    loop {
        if Instant::now() >= deadline {
            return timed_out(Via::Watch);
        }
        let options = WatchOptions {
            bootstrap: true,
            max_events: MAX_EVENTS,
            max_message_bytes: MAX_MESSAGE_BYTES,
            idle: None,
        };
        let opened = api.watch(
            opts,
            watched.namespace,
            watched.resource_type,
            watched.id.map(str::to_owned),
            options,
        );
        let ended = match tokio::time::timeout_at(deadline, opened).await {
            Err(_) => return timed_out(Via::Watch),
            Ok(Err(e)) if transient(&e) => Ended::Reopen,
            Ok(Err(e)) if fatal(&e) => {
                return Waited {
                    outcome: WaitOutcome::Lost(e.to_string()),
                    via: Via::Watch,
                };
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "the node does not answer watches; polling");
                Ended::Poll
            }
            Ok(Ok(mut stream)) => {
                // A watch of one resource starts with its state; a whole type is complete once
                // the node says it is bootstrapped.
                let mut complete = watched.id.is_some();
                let mut view = View::new();
                loop {
                    match tokio::time::timeout_at(deadline, stream.next()).await {
                        Err(_) => break Ended::Done(timed_out(Via::Watch)),
                        Ok(None) => break Ended::Reopen,
                        Ok(Some(Err(e))) if transient(&e) => break Ended::Reopen,
                        Ok(Some(Err(e))) => {
                            tracing::debug!(error = %e, "the watch failed; polling");
                            break Ended::Poll;
                        }
                        Ok(Some(Ok(event))) => {
                            backoff = BACKOFF_FIRST;
                            complete |= apply(&mut view, event);
                            if complete && let Some(value) = check(&view) {
                                break Ended::Done(Waited {
                                    outcome: WaitOutcome::Reached(value),
                                    via: Via::Watch,
                                });
                            }
                        }
                    }
                }
            }
        };
        match ended {
            Ended::Done(waited) => return waited,
            Ended::Poll => return poll_until(deadline, poll).await,
            Ended::Reopen => {
                let pause = backoff.min(deadline.saturating_duration_since(Instant::now()));
                tokio::time::sleep(pause).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Polls until `poll` says the condition holds, the node is lost, or the deadline passes.
async fn poll_until<T, P, Fut>(deadline: Instant, poll: P) -> Waited<T>
where
    P: Fn() -> Fut,
    Fut: Future<Output = Result<Option<T>, TalosError>>,
{
    let end = |outcome| Waited {
        outcome,
        via: Via::Poll,
    };
    loop {
        if Instant::now() >= deadline {
            return end(WaitOutcome::TimedOut);
        }
        match tokio::time::timeout_at(deadline, poll()).await {
            Err(_) => return end(WaitOutcome::TimedOut),
            Ok(Ok(Some(value))) => return end(WaitOutcome::Reached(value)),
            Ok(Ok(None)) => {}
            Ok(Err(e)) if transient(&e) => {}
            Ok(Err(e)) => return end(WaitOutcome::Lost(e.to_string())),
        }
        let pause = POLL_EVERY.min(deadline.saturating_duration_since(Instant::now()));
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use talos_client::{Code, MockTalosApi, Resource, Target, VersionInfo, WatchStream};

    use super::*;

    fn event(kind: &str, id: &str, spec: &str) -> talos_client::Result<ResourceEvent> {
        Ok(ResourceEvent {
            kind: kind.into(),
            resource: Some(Resource {
                id: id.into(),
                spec_yaml: spec.into(),
                ..Resource::default()
            }),
            old: None,
        })
    }

    fn bootstrapped() -> talos_client::Result<ResourceEvent> {
        Ok(ResourceEvent {
            kind: "bootstrapped".into(),
            resource: None,
            old: None,
        })
    }

    fn lost() -> TalosError {
        TalosError::Connection {
            target: Target::default(),
            message: "connection refused".into(),
        }
    }

    fn stream(items: Vec<talos_client::Result<ResourceEvent>>) -> WatchStream {
        Box::pin(futures_util::stream::iter(items))
    }

    /// A mock whose watches answer from `streams` in turn (then refuse with a lost node).
    fn watching(
        streams: Vec<Vec<talos_client::Result<ResourceEvent>>>,
    ) -> (MockTalosApi, Arc<AtomicUsize>) {
        let opened = Arc::new(AtomicUsize::new(0));
        let count = opened.clone();
        let streams = std::sync::Mutex::new(streams.into_iter());
        let mut mock = MockTalosApi::new();
        mock.expect_watch().returning(move |_, _, _, _, _| {
            count.fetch_add(1, Ordering::SeqCst);
            match streams.lock().unwrap().next() {
                Some(items) => Ok(stream(items)),
                None => Err(lost()),
            }
        });
        (mock, opened)
    }

    const SECOND: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn a_broken_watch_is_opened_again_until_the_machine_runs() {
        let (mock, opened) = watching(vec![
            vec![
                event(
                    "created",
                    "machine",
                    "stage: running\nstatus:\n  ready: false\n",
                ),
                event(
                    "updated",
                    "machine",
                    "stage: rebooting\nstatus:\n  ready: false\n",
                ),
                Err(lost()),
            ],
            vec![event(
                "created",
                "machine",
                "stage: running\nstatus:\n  ready: true\n",
            )],
        ]);
        let waited = until_machine_running(&mock, &CallOptions::node("n1"), SECOND).await;
        assert_eq!(waited.outcome, WaitOutcome::Reached(()));
        assert_eq!(waited.via, Via::Watch);
        assert_eq!(opened.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn services_are_judged_only_once_the_whole_type_is_known() {
        // Had the wait judged before `bootstrapped`, it would have stopped at apid alone.
        let (mock, _) = watching(vec![vec![
            event("created", "apid", "running: true\nhealthy: true\n"),
            event("created", "kubelet", "running: true\nhealthy: false\n"),
            bootstrapped(),
            event("updated", "kubelet", "running: true\nhealthy: true\n"),
        ]]);
        let waited = until_services_healthy(&mock, &CallOptions::node("n1"), SECOND).await;
        assert_eq!(
            waited.outcome,
            WaitOutcome::Reached(vec!["apid".to_owned(), "kubelet".to_owned()])
        );
    }

    #[tokio::test]
    async fn a_destroyed_resource_leaves_the_view() {
        let (mock, _) = watching(vec![vec![
            event("created", "apid", "running: true\nhealthy: true\n"),
            event("created", "kubelet", "running: false\nhealthy: false\n"),
            bootstrapped(),
            event("destroyed", "kubelet", ""),
        ]]);
        let waited = until_services_healthy(&mock, &CallOptions::node("n1"), SECOND).await;
        assert_eq!(
            waited.outcome,
            WaitOutcome::Reached(vec!["apid".to_owned()])
        );
    }

    #[tokio::test]
    async fn a_node_without_watches_is_polled() {
        let mut mock = MockTalosApi::new();
        mock.expect_watch().times(1).returning(|_, _, _, _, _| {
            Err(TalosError::Api {
                target: Target::default(),
                code: Code::Unimplemented,
                message: "unknown method Watch".into(),
            })
        });
        let polls = Arc::new(AtomicUsize::new(0));
        let count = polls.clone();
        mock.expect_version().returning(move |_| {
            // Lost on the first poll, the old version on the second, the new one after.
            match count.fetch_add(1, Ordering::SeqCst) {
                0 => Err(lost()),
                1 => Ok(VersionInfo {
                    tag: "v1.10.0".into(),
                    ..VersionInfo::default()
                }),
                _ => Ok(VersionInfo {
                    tag: "v1.11.3".into(),
                    ..VersionInfo::default()
                }),
            }
        });
        let waited = until_version(&mock, &CallOptions::node("n1"), "1.11.3", SECOND).await;
        assert_eq!(waited.outcome, WaitOutcome::Reached("v1.11.3".to_owned()));
        assert_eq!(waited.via, Via::Poll);
        assert_eq!(polls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_refused_watch_falls_back_to_reading_the_boot_id() {
        let mut mock = MockTalosApi::new();
        mock.expect_watch().returning(|_, _, _, _, _| {
            Err(TalosError::PermissionDenied {
                target: Target::default(),
                message: "not authorized".into(),
            })
        });
        mock.expect_read_file().returning(|_, _, _| {
            Ok(talos_client::FileContent {
                data: b"new-boot\n".to_vec(),
                truncated: false,
            })
        });
        let waited = until_new_boot(&mock, &CallOptions::node("n1"), "old-boot", SECOND).await;
        assert_eq!(waited.outcome, WaitOutcome::Reached("new-boot".to_owned()));
        assert_eq!(waited.via, Via::Poll);
    }

    #[tokio::test]
    async fn bad_credentials_lose_the_node() {
        let mut mock = MockTalosApi::new();
        mock.expect_watch().times(1).returning(|_, _, _, _, _| {
            Err(TalosError::Authentication {
                target: Target::default(),
                message: "unknown ca".into(),
            })
        });
        let waited = until_version(&mock, &CallOptions::node("n1"), "v1.11.3", SECOND).await;
        assert!(matches!(waited.outcome, WaitOutcome::Lost(m) if m.contains("unknown ca")));
    }

    #[tokio::test]
    async fn a_wait_ends_at_its_deadline_on_a_quiet_watch() {
        let mut mock = MockTalosApi::new();
        mock.expect_watch()
            .times(1)
            .returning(|_, _, _, _, _| Ok(Box::pin(futures_util::stream::pending())));
        let waited = until_version(
            &mock,
            &CallOptions::node("n1"),
            "v1.11.3",
            Duration::from_millis(50),
        )
        .await;
        assert_eq!(waited.outcome, WaitOutcome::TimedOut);
    }
}
