//! Resource subscriptions: `resources/subscribe` on a node's resources, fed by a COSI watch,
//! answered with `notifications/resources/updated {uri}`.
//!
//! Subscribable URIs (the same the client reads, checked the same way):
//! - `talos://{context}/nodes/{node}/resources/{resource_type}` — any type a read may show
//!   (secret types and the machine config are refused exactly like reads);
//! - `talos://{context}/nodes/{node}/services` and `…/version`.
//!
//! Bounds: at most [`MAX_PER_SESSION`] subscriptions per session (beyond, refused); at most one
//! notification per URI per [`NOTIFY_EVERY`] (changes in between are coalesced into the next
//! one); a URI of at most [`MAX_URI`] bytes. Each subscription is one task holding one watch,
//! ended on `resources/unsubscribe` and when the session's server instance goes away
//! ([`crate::TalosMcp::for_session`]). A watch that breaks (the node rebooting) is opened again
//! with a backoff for as long as the server's longest wait (`max_wait`), then the subscription
//! ends with a last notification, so the client reads the resource and sees why.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use futures_util::StreamExt as _;
use rmcp::model::ResourceUpdatedNotificationParam;
use rmcp::service::Peer;
use rmcp::{ErrorData, RoleServer};
use serde_json::json;
use talos_client::{CallOptions, ErrorKind, TalosApi, TalosError, WatchOptions, WatchStream};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::server::TalosMcp;

/// Subscriptions one session may hold.
pub(crate) const MAX_PER_SESSION: usize = 16;
/// Longest URI considered.
pub(crate) const MAX_URI: usize = 512;
/// At most one notification per URI this often.
pub(crate) const NOTIFY_EVERY: Duration = Duration::from_secs(1);
/// Pauses before a broken watch is opened again.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(15);
/// Events one watch delivers before it is opened again; largest watch message accepted.
const WATCH_EVENTS: usize = 10_000;
const WATCH_MESSAGE_BYTES: usize = 1024 * 1024;

/// The subscriptions of one session: URI → the task that feeds it. Dropping this (the session's
/// server instance going away) ends them all.
#[derive(Debug, Default)]
pub(crate) struct Subscriptions {
    active: Mutex<HashMap<String, (u64, tokio::task::AbortHandle)>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Subscriptions {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, (u64, tokio::task::AbortHandle)>> {
        self.active.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Subscriptions held now.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Ends the subscription to `uri`, if any; returns whether there was one.
    pub(crate) fn remove(&self, uri: &str) -> bool {
        match self.lock().remove(uri) {
            Some((_, task)) => {
                task.abort();
                true
            }
            None => false,
        }
    }

    /// Forgets the subscription `id` to `uri` once its task has ended by itself (and not one
    /// made again since).
    fn forget(&self, uri: &str, id: u64) {
        let mut active = self.lock();
        if active.get(uri).is_some_and(|(current, _)| *current == id) {
            active.remove(uri);
        }
    }
}

impl Drop for Subscriptions {
    fn drop(&mut self) {
        let active = self
            .active
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        for (_, (_, task)) in active.drain() {
            task.abort();
        }
    }
}

/// What a subscription watches on its node.
#[derive(Debug, Clone)]
struct Feed {
    namespace: String,
    resource_type: String,
}

fn invalid(message: impl Into<String>) -> ErrorData {
    ErrorData::invalid_params(message.into(), None)
}

fn watch_options() -> WatchOptions {
    WatchOptions {
        bootstrap: true,
        max_events: WATCH_EVENTS,
        max_message_bytes: WATCH_MESSAGE_BYTES,
        idle: None,
    }
}

/// The node is (for now) out of reach.
fn transient(e: &TalosError) -> bool {
    matches!(e.kind(), ErrorKind::Connection | ErrorKind::Timeout)
}

/// `resources/subscribe`: validates the URI like a read, opens its watch and starts feeding it.
/// Subscribing again to a URI already subscribed changes nothing.
pub(crate) async fn subscribe(
    server: &TalosMcp,
    uri: &str,
    peer: Peer<RoleServer>,
) -> Result<(), ErrorData> {
    if uri.len() > MAX_URI {
        return Err(invalid(format!(
            "the URI is {} bytes; at most {MAX_URI}",
            uri.len()
        )));
    }
    let subs = &server.subscriptions;
    if subs.lock().contains_key(uri) {
        return Ok(());
    }
    if subs.len() >= MAX_PER_SESSION {
        return Err(cap_reached());
    }
    let not_subscribable = || {
        ErrorData::resource_not_found(
            format!(
                "cannot subscribe to {}; subscribable: talos://{{context}}/nodes/{{node}}/resources/{{resource_type}}, …/services, …/version",
                crate::error::echo(uri)
            ),
            Some(json!({ "uri": crate::error::echo(uri) })),
        )
    };
    let rest = uri.strip_prefix("talos://").ok_or_else(not_subscribable)?;
    let parts: Vec<&str> = rest.split('/').collect();
    let (context, node, view) = match parts.as_slice() {
        [context, "nodes", node, "resources", resource_type] => {
            (*context, *node, Some(*resource_type))
        }
        [context, "nodes", node, "services" | "version"] => (*context, *node, None),
        [_, "nodes", _, "machineconfig"] => {
            return Err(invalid(
                "the machine config holds secrets; it cannot be subscribed to",
            ));
        }
        _ => return Err(not_subscribable()),
    };
    if [context, node]
        .iter()
        .chain(view.as_ref())
        .any(|p| p.is_empty() || p.len() > crate::resources::MAX_PART)
    {
        return Err(not_subscribable());
    }
    let (entry, node) = server
        .clusters
        .single(Some(context), Some(node))
        .await
        .map_err(|e| invalid(e.to_string()))?;
    let opts = CallOptions::node(node);
    let api = entry.api.clone();
    let feed = match view {
        Some(resource_type) => {
            if !crate::resources::is_type_name(resource_type) {
                return Err(invalid(
                    "resource_type must be a COSI type name or alias (letters, digits, `.`, `-`, `_`)",
                ));
            }
            match crate::tools::cluster::readable_type(api.as_ref(), &opts, resource_type, None)
                .await
            {
                Ok(Ok((namespace, resource_type))) => Feed {
                    namespace,
                    resource_type,
                },
                Ok(Err(full)) => {
                    return Err(invalid(crate::tools::cluster::refusal(&full).to_string()));
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    return Err(ErrorData::resource_not_found(
                        format!(
                            "no resource type `{}` on this node",
                            crate::error::echo(resource_type)
                        ),
                        None,
                    ));
                }
                Err(e) => return Err(ErrorData::internal_error(e.to_string(), None)),
            }
        }
        None if uri.ends_with("/services") => Feed {
            namespace: "runtime".into(),
            resource_type: "Services.v1alpha1.talos.dev".into(),
        },
        None => Feed {
            namespace: "runtime".into(),
            resource_type: "Versions.runtime.talos.dev".into(),
        },
    };
    // The first watch is opened now, so a node that cannot feed the subscription refuses it
    // here; a node that is down is waited for.
    let first = match api
        .watch(
            &opts,
            &feed.namespace,
            &feed.resource_type,
            None,
            watch_options(),
        )
        .await
    {
        Ok(stream) => Some(stream),
        Err(e) if transient(&e) => None,
        Err(e) => {
            return Err(invalid(format!(
                "the node does not answer a watch of {}: {e}",
                feed.resource_type
            )));
        }
    };
    let mut active = subs.lock();
    if active.contains_key(uri) {
        return Ok(());
    }
    if active.len() >= MAX_PER_SESSION {
        return Err(cap_reached());
    }
    let id = subs
        .next_id
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let task = Task {
        api,
        opts,
        feed,
        uri: uri.to_owned(),
        peer,
        give_up_after: server.settings.max_wait,
        subs: Arc::downgrade(subs),
        id,
    };
    let handle = tokio::spawn(task.run(first));
    active.insert(uri.to_owned(), (id, handle.abort_handle()));
    Ok(())
}

fn cap_reached() -> ErrorData {
    invalid(format!(
        "this session already holds {MAX_PER_SESSION} subscriptions, the most allowed; unsubscribe from one first"
    ))
}

/// One subscription's task: keeps a watch open and turns its changes into notifications.
struct Task {
    api: Arc<dyn TalosApi>,
    opts: CallOptions,
    feed: Feed,
    uri: String,
    peer: Peer<RoleServer>,
    give_up_after: Duration,
    subs: Weak<Subscriptions>,
    id: u64,
}

impl Task {
    async fn run(self, first: Option<WatchStream>) {
        let dirty = Notify::new();
        // Changes mark the subscription dirty; the notifier sends one notification per mark, at
        // most one per interval: marks made in between wait as one stored permit.
        let notifier = async {
            loop {
                dirty.notified().await;
                let sent = self
                    .peer
                    .notify_resource_updated(ResourceUpdatedNotificationParam::new(
                        self.uri.clone(),
                    ))
                    .await;
                if sent.is_err() {
                    return; // the session is gone
                }
                tokio::time::sleep(NOTIFY_EVERY).await;
            }
        };
        let gave_up = tokio::select! {
            reason = self.watch(first, &dirty) => Some(reason),
            () = notifier => None,
        };
        if let Some(reason) = gave_up {
            tracing::info!(uri = %self.uri, %reason, "subscription ended");
            // A last notification: the client reads the resource and sees why.
            let _ = self
                .peer
                .notify_resource_updated(ResourceUpdatedNotificationParam::new(self.uri.clone()))
                .await;
        }
        if let Some(subs) = self.subs.upgrade() {
            subs.forget(&self.uri, self.id);
        }
    }

    /// Follows the watch, opening it again when it breaks; returns why it gave up.
    async fn watch(&self, first: Option<WatchStream>, dirty: &Notify) -> String {
        let mut stream = first;
        // After a (re)connection the node's state may differ from what the client read: the
        // first complete listing counts as a change. Not for the watch opened at subscription.
        let mut reconnected = stream.is_none();
        let mut backoff = RETRY_FIRST;
        let mut failing_since: Option<Instant> = None;
        loop {
            let mut s = match stream.take() {
                Some(s) => s,
                None => match self
                    .api
                    .watch(
                        &self.opts,
                        &self.feed.namespace,
                        &self.feed.resource_type,
                        None,
                        watch_options(),
                    )
                    .await
                {
                    Ok(s) => s,
                    Err(e) if transient(&e) => {
                        let since = *failing_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= self.give_up_after {
                            return format!("the node stayed out of reach: {e}");
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(RETRY_MAX);
                        continue;
                    }
                    Err(e) => return format!("the node refused the watch: {e}"),
                },
            };
            let mut bootstrapped = false;
            while let Some(item) = s.next().await {
                match item {
                    Ok(event) => {
                        failing_since = None;
                        backoff = RETRY_FIRST;
                        if event.kind == "bootstrapped" {
                            bootstrapped = true;
                            if reconnected {
                                dirty.notify_one();
                            }
                        } else if bootstrapped {
                            dirty.notify_one();
                        }
                    }
                    Err(e) => {
                        tracing::debug!(uri = %self.uri, error = %e, "the watch broke; opening it again");
                        // The node going down is a change too.
                        dirty.notify_one();
                        failing_since.get_or_insert_with(Instant::now);
                        break;
                    }
                }
            }
            reconnected = true;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RETRY_MAX);
        }
    }
}
