//! COSI resources: [`Resources`] over gRPC.

use super::*;

#[async_trait]
impl Resources for GrpcTalosClient {
    async fn resource_get(
        &self,
        opts: &CallOptions,
        namespace: &str,
        resource_type: &str,
        id: &str,
    ) -> Result<Resource> {
        let request = cosi::resource::GetRequest {
            namespace: namespace.to_owned(),
            r#type: resource_type.to_owned(),
            id: id.to_owned(),
            options: None,
        };
        let (resp, target) = unary!(self, opts, CallKind::Read, request, resources.get).await?;
        resp.resource
            .map(convert::resource)
            .ok_or_else(|| TalosError::NotFound {
                target,
                message: format!("{resource_type} {namespace}/{id}"),
            })
    }

    async fn resource_list(
        &self,
        opts: &CallOptions,
        namespace: &str,
        resource_type: &str,
        limit: usize,
    ) -> Result<Vec<Resource>> {
        let request = cosi::resource::ListRequest {
            namespace: namespace.to_owned(),
            r#type: resource_type.to_owned(),
            options: None,
        };
        let (mut stream, target) =
            stream!(self, opts, CallKind::Read, request, resources.list).await?;
        let idle = self.pipeline().idle_timeout(opts);
        self.collect(&mut stream, &target, idle, limit, |item| {
            Ok(item.resource.map(convert::resource))
        })
        .await
    }

    async fn watch(
        &self,
        opts: &CallOptions,
        namespace: &str,
        resource_type: &str,
        id: Option<String>,
        options: WatchOptions,
    ) -> Result<WatchStream> {
        // One watch message larger than this fails while decoding, before it is held in memory.
        let max = self.max_decoding().min(options.max_message_bytes.max(1));
        let request = cosi::resource::WatchRequest {
            namespace: namespace.to_owned(),
            r#type: resource_type.to_owned(),
            id,
            options: Some(cosi::resource::WatchOptions {
                bootstrap_contents: options.bootstrap,
                ..Default::default()
            }),
            api_version: 1,
        };
        let (stream, target) = self
            .open_stream(
                Rpc::new("cosi.resource.State", "watch"),
                opts,
                CallKind::Read,
                request,
                move |c, req| async move { c.max_decoding(max).resources().watch(req).await },
            )
            .await?;
        Ok(watch_stream(stream, target, &options))
    }

    async fn resource_watch(
        &self,
        opts: &CallOptions,
        namespace: &str,
        resource_type: &str,
        id: Option<String>,
        max_events: usize,
        idle: Duration,
    ) -> Result<Vec<ResourceEvent>> {
        use futures_util::StreamExt as _;
        let options = WatchOptions {
            bootstrap: true,
            max_events,
            max_message_bytes: self.max_decoding(),
            idle: Some(idle),
        };
        let mut stream = self
            .watch(opts, namespace, resource_type, id, options)
            .await?;
        let mut out = Vec::new();
        while let Some(event) = stream.next().await {
            out.push(event?);
        }
        Ok(out)
    }
}

/// What a watch stream carries between polls.
struct WatchState {
    stream: tonic::Streaming<cosi::resource::WatchResponse>,
    target: Target,
    /// Events of the last message not handed out yet (a message may carry several).
    pending: std::collections::VecDeque<Result<ResourceEvent>>,
    delivered: usize,
    max_events: usize,
    idle: Option<Duration>,
    done: bool,
}

/// Turns a watch's message stream into a bounded stream of events: it ends cleanly after
/// `max_events` events or `idle` without a message, and after the first error.
fn watch_stream(
    stream: tonic::Streaming<cosi::resource::WatchResponse>,
    target: Target,
    options: &WatchOptions,
) -> WatchStream {
    let state = WatchState {
        stream,
        target,
        pending: std::collections::VecDeque::new(),
        delivered: 0,
        max_events: options.max_events.max(1),
        idle: options.idle,
        done: false,
    };
    Box::pin(futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if s.done || s.delivered >= s.max_events {
                return None;
            }
            if let Some(item) = s.pending.pop_front() {
                s.delivered += 1;
                s.done = item.is_err();
                return Some((item, s));
            }
            let message = match s.idle {
                Some(idle) => match tokio::time::timeout(idle, s.stream.message()).await {
                    Ok(m) => m,
                    Err(_) => return None, // quiet for as long as asked
                },
                None => s.stream.message().await,
            };
            match message {
                Ok(Some(batch)) => {
                    for event in batch.event {
                        if let Some(error) = event.error.filter(|e| !e.is_empty()) {
                            s.pending.push_back(Err(TalosError::Api {
                                target: s.target.clone(),
                                code: crate::Code::Unknown,
                                message: error,
                            }));
                            break;
                        }
                        s.pending.push_back(Ok(ResourceEvent {
                            kind: convert::resource_event_kind(event.event_type),
                            resource: event.resource.map(convert::resource),
                            old: event.old.map(convert::resource),
                        }));
                    }
                }
                Ok(None) => return None,
                Err(status) => {
                    s.done = true;
                    let after = s.idle.unwrap_or_default();
                    let error = TalosError::from_status(&status, s.target.clone(), after);
                    return Some((Err(error), s));
                }
            }
        }
    }))
}
