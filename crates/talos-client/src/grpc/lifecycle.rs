//! Configuration, reboot, shutdown, reset, upgrade and rollback: [`Lifecycle`] over gRPC.

use super::*;

#[async_trait]
impl Lifecycle for GrpcTalosClient {
    async fn apply_configuration(
        &self,
        opts: &CallOptions,
        request: &ApplyConfigRequest,
    ) -> Result<ApplyConfigResult> {
        let proto = machine::ApplyConfigurationRequest {
            data: request.config.clone(),
            // Always explicit: 0 on the wire is the deprecated REBOOT mode.
            mode: convert::apply_mode_to_proto(request.mode) as i32,
            dry_run: request.dry_run,
            try_mode_timeout: request
                .try_timeout
                .and_then(|d| prost_types::Duration::try_from(d).ok()),
        };
        // A dry run changes nothing, so it may be retried like a read.
        let kind = if request.dry_run {
            CallKind::Read
        } else {
            CallKind::Write
        };
        let (resp, target) = unary!(self, opts, kind, proto, machine.apply_configuration).await?;
        let item = single(resp.messages, &target)?;
        Ok(ApplyConfigResult {
            mode: convert::apply_mode_from_proto(item.mode),
            mode_details: item.mode_details,
            warnings: item.warnings,
        })
    }

    async fn reboot(&self, opts: &CallOptions, mode: RebootMode) -> Result<ActionAck> {
        let request = machine::RebootRequest {
            mode: match mode {
                RebootMode::Default => machine::reboot_request::Mode::Default,
                RebootMode::Powercycle => machine::reboot_request::Mode::Powercycle,
            } as i32,
        };
        let (resp, target) = unary!(self, opts, CallKind::Write, request, machine.reboot).await?;
        Ok(ActionAck {
            actor_id: single(resp.messages, &target)?.actor_id,
            ack: String::new(),
        })
    }

    async fn shutdown(&self, opts: &CallOptions, force: bool) -> Result<ActionAck> {
        let (resp, target) = unary!(
            self,
            opts,
            CallKind::Write,
            machine::ShutdownRequest { force },
            machine.shutdown
        )
        .await?;
        Ok(ActionAck {
            actor_id: single(resp.messages, &target)?.actor_id,
            ack: String::new(),
        })
    }

    async fn reset(&self, opts: &CallOptions, request: &ResetRequest) -> Result<ActionAck> {
        let proto = machine::ResetRequest {
            graceful: request.graceful,
            reboot: request.reboot,
            system_partitions_to_wipe: request
                .system_partitions_to_wipe
                .iter()
                .map(|label| machine::ResetPartitionSpec {
                    label: label.clone(),
                    wipe: true,
                })
                .collect(),
            user_disks_to_wipe: request.user_disks_to_wipe.clone(),
            mode: machine::reset_request::WipeMode::All as i32,
        };
        let (resp, target) = unary!(self, opts, CallKind::Write, proto, machine.reset).await?;
        Ok(ActionAck {
            actor_id: single(resp.messages, &target)?.actor_id,
            ack: String::new(),
        })
    }

    async fn upgrade(&self, opts: &CallOptions, request: &UpgradeRequest) -> Result<ActionAck> {
        let proto = machine::UpgradeRequest {
            image: request.image.clone(),
            preserve: request.preserve,
            stage: request.stage,
            force: request.force,
            reboot_mode: match request.reboot_mode {
                RebootMode::Default => machine::upgrade_request::RebootMode::Default,
                RebootMode::Powercycle => machine::upgrade_request::RebootMode::Powercycle,
            } as i32,
        };
        let (resp, target) = unary!(self, opts, CallKind::Write, proto, machine.upgrade).await?;
        let item = single(resp.messages, &target)?;
        Ok(ActionAck {
            actor_id: item.actor_id,
            ack: item.ack,
        })
    }

    async fn lifecycle_upgrade(
        &self,
        opts: &CallOptions,
        image: &str,
    ) -> Result<UpgradeProgressStream> {
        let proto = machine::LifecycleServiceUpgradeRequest {
            containerd: Some(common::ContainerdInstance {
                driver: common::ContainerDriver::Containerd as i32,
                namespace: common::ContainerdNamespace::NsSystem as i32,
            }),
            source: Some(machine::InstallArtifactsSource {
                image_name: image.to_owned(),
            }),
        };
        let (stream, target) =
            stream!(self, opts, CallKind::Write, proto, lifecycle.upgrade).await?;
        let idle = self.pipeline().idle_timeout(opts);
        Ok(upgrade_progress(self.clone(), stream, target, idle))
    }

    async fn rollback(&self, opts: &CallOptions) -> Result<ActionAck> {
        let (resp, target) = unary!(
            self,
            opts,
            CallKind::Write,
            machine::RollbackRequest {},
            machine.rollback
        )
        .await?;
        single(resp.messages, &target)?;
        Ok(ActionAck::default())
    }
}

/// Reads a lifecycle upgrade stream lazily: each message within the idle timeout, then
/// [`bounded_progress`].
fn upgrade_progress(
    client: GrpcTalosClient,
    stream: tonic::Streaming<machine::LifecycleServiceUpgradeResponse>,
    target: crate::error::Target,
    idle: std::time::Duration,
) -> UpgradeProgressStream {
    let raw_target = target.clone();
    let raw = futures_util::stream::unfold(
        (client, stream, raw_target, false),
        move |(client, mut stream, target, failed)| async move {
            if failed {
                return None;
            }
            match client.pipeline().next(&mut stream, &target, idle).await {
                Ok(Some(msg)) => Some((Ok(msg), (client, stream, target, false))),
                Ok(None) => None,
                Err(e) => Some((Err(e), (client, stream, target, true))),
            }
        },
    );
    bounded_progress(raw, target)
}

/// Turns raw lifecycle responses into progress: lines clipped to [`MAX_UPGRADE_MESSAGE_BYTES`],
/// at most [`MAX_UPGRADE_MESSAGES`] items (then one error and the end), ending after the exit
/// code or the first error.
fn bounded_progress(
    raw: impl futures_util::Stream<Item = Result<machine::LifecycleServiceUpgradeResponse>>
    + Send
    + 'static,
    target: crate::error::Target,
) -> UpgradeProgressStream {
    use futures_util::StreamExt as _;
    struct State<S> {
        raw: std::pin::Pin<Box<S>>,
        target: crate::error::Target,
        read: usize,
        done: bool,
    }
    let state = State {
        raw: Box::pin(raw),
        target,
        read: 0,
        done: false,
    };
    Box::pin(futures_util::stream::unfold(state, |mut st| async move {
        use machine::lifecycle_service_install_progress::Response;
        loop {
            if st.done {
                return None;
            }
            if st.read >= MAX_UPGRADE_MESSAGES {
                st.done = true;
                let err = TalosError::Protocol {
                    target: st.target.clone(),
                    message: format!(
                        "the upgrade stream sent more than {MAX_UPGRADE_MESSAGES} progress messages; stopped reading (the upgrade itself may still be running)"
                    ),
                };
                return Some((Err(err), st));
            }
            let msg = match st.raw.next().await {
                Some(Ok(msg)) => msg,
                None => return None,
                Some(Err(e)) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
            };
            st.read += 1;
            match msg.progress.and_then(|p| p.response) {
                Some(Response::Message(m)) => {
                    return Some((Ok(UpgradeProgress::Message(clip(m))), st));
                }
                Some(Response::ExitCode(code)) => {
                    st.done = true;
                    return Some((Ok(UpgradeProgress::ExitCode(code)), st));
                }
                None => {}
            }
        }
    }))
}

/// Clips a progress line to [`MAX_UPGRADE_MESSAGE_BYTES`] on a character boundary.
fn clip(mut line: String) -> String {
    if line.len() > MAX_UPGRADE_MESSAGE_BYTES {
        let mut end = MAX_UPGRADE_MESSAGE_BYTES;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push('…');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Upgrade progress lines are clipped on a character boundary; short ones are kept as sent.
    #[test]
    fn progress_lines_are_clipped_on_char_boundaries() {
        assert_eq!(clip("installing".into()), "installing");
        let long = "é".repeat(MAX_UPGRADE_MESSAGE_BYTES);
        let clipped = clip(long);
        assert!(clipped.len() <= MAX_UPGRADE_MESSAGE_BYTES + '…'.len_utf8());
        assert!(clipped.ends_with('…'));
        let exact = "a".repeat(MAX_UPGRADE_MESSAGE_BYTES);
        assert_eq!(clip(exact.clone()), exact);
    }

    fn line(
        r: machine::lifecycle_service_install_progress::Response,
    ) -> Result<machine::LifecycleServiceUpgradeResponse> {
        Ok(machine::LifecycleServiceUpgradeResponse {
            progress: Some(machine::LifecycleServiceInstallProgress { response: Some(r) }),
        })
    }

    async fn collect(
        raw: Vec<Result<machine::LifecycleServiceUpgradeResponse>>,
    ) -> Vec<Result<UpgradeProgress>> {
        use futures_util::StreamExt as _;
        bounded_progress(futures_util::stream::iter(raw), Target::default())
            .collect()
            .await
    }

    /// A node that never stops talking is cut off after the bound with one error.
    #[tokio::test]
    async fn progress_is_bounded_in_count_and_ends_after_the_exit_code() {
        use machine::lifecycle_service_install_progress::Response as R;
        let chatty: Vec<_> = (0..MAX_UPGRADE_MESSAGES + 500)
            .map(|i| line(R::Message(format!("line {i} {}", "x".repeat(4000)))))
            .collect();
        let items = collect(chatty).await;
        assert_eq!(items.len(), MAX_UPGRADE_MESSAGES + 1);
        assert!(items[..MAX_UPGRADE_MESSAGES].iter().all(|i| matches!(
            i,
            Ok(UpgradeProgress::Message(m)) if m.len() <= MAX_UPGRADE_MESSAGE_BYTES + 3
        )));
        let last = items.last().unwrap().as_ref().unwrap_err();
        assert_eq!(last.kind(), crate::ErrorKind::Protocol, "{last}");

        // Nothing is read after the exit code; empty items are skipped.
        let items = collect(vec![
            Ok(machine::LifecycleServiceUpgradeResponse { progress: None }),
            line(R::Message("installing".into())),
            line(R::ExitCode(0)),
            line(R::Message("after the end".into())),
        ])
        .await;
        let items: Vec<UpgradeProgress> = items.into_iter().map(|i| i.unwrap()).collect();
        assert_eq!(
            items,
            [
                UpgradeProgress::Message("installing".into()),
                UpgradeProgress::ExitCode(0)
            ]
        );
    }
}
