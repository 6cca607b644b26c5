//! Logs, dmesg and events: [`Logs`] over gRPC.

use super::*;

#[async_trait]
impl Logs for GrpcTalosClient {
    async fn log_sources(&self, opts: &CallOptions) -> Result<Vec<String>> {
        let (resp, target) =
            unary!(self, opts, CallKind::Read, (), machine.logs_containers).await?;
        Ok(single(resp.messages, &target)?.ids)
    }

    async fn logs(
        &self,
        opts: &CallOptions,
        source: &LogSource,
        limits: &StreamLimits,
    ) -> Result<LogLines> {
        let (driver, _) = convert::containerd_namespace(source.namespace);
        let request = machine::LogsRequest {
            namespace: source.namespace.as_str().to_owned(),
            id: source.id.clone(),
            driver: driver as i32,
            follow: limits.follow_for.is_some(),
            tail_lines: limits
                .tail
                .map_or(-1, |t| i32::try_from(t).unwrap_or(i32::MAX)),
        };
        let (stream, target) = stream!(self, opts, CallKind::Read, request, machine.logs).await?;
        self.read_lines(stream, &target, opts, limits, limits.max_lines)
            .await
    }

    async fn dmesg(&self, opts: &CallOptions, limits: &StreamLimits) -> Result<LogLines> {
        let request = machine::DmesgRequest {
            follow: limits.follow_for.is_some(),
            tail: false,
        };
        let (stream, target) = stream!(self, opts, CallKind::Read, request, machine.dmesg).await?;
        // Dmesg has no server-side tail: apply it to what is kept.
        let max_lines = limits
            .tail
            .map_or(limits.max_lines, |t| limits.max_lines.min(t as usize));
        self.read_lines(stream, &target, opts, limits, max_lines)
            .await
    }

    async fn events(
        &self,
        opts: &CallOptions,
        request: &EventsRequest,
    ) -> Result<Vec<MachineEvent>> {
        let proto = machine::EventsRequest {
            tail_events: request.tail_events.unwrap_or(0),
            tail_id: String::new(),
            tail_seconds: request.tail_seconds.unwrap_or(0),
            with_actor_id: request.actor_id.clone().unwrap_or_default(),
        };
        let (mut stream, target) =
            stream!(self, opts, CallKind::Read, proto, machine.events).await?;
        // The stream never ends by itself: stop at the count, or when it goes quiet (so unlike
        // `collect`, the idle timeout ends the read instead of failing it).
        let idle = request
            .idle
            .unwrap_or_else(|| self.pipeline().idle_timeout(opts));
        let mut out = Vec::new();
        while out.len() < request.max_events.max(1) {
            match self.pipeline().next(&mut stream, &target, idle).await {
                Ok(Some(event)) => {
                    check_metadata(event.metadata.as_ref(), &target)?;
                    out.push(convert::event(event));
                }
                Ok(None) | Err(TalosError::Timeout { .. }) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}
