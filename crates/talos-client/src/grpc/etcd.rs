//! etcd: [`Etcd`] over gRPC.

use super::*;

#[async_trait]
impl Etcd for GrpcTalosClient {
    async fn etcd_members(&self, opts: &CallOptions) -> Result<Vec<EtcdMember>> {
        let request = machine::EtcdMemberListRequest { query_local: false };
        let (resp, target) = unary!(
            self,
            opts,
            CallKind::Read,
            request,
            machine.etcd_member_list
        )
        .await?;
        Ok(single(resp.messages, &target)?
            .members
            .into_iter()
            .map(convert::etcd_member)
            .collect())
    }

    async fn etcd_status(&self, opts: &CallOptions) -> Result<EtcdMemberStatus> {
        let (resp, target) = unary!(self, opts, CallKind::Read, (), machine.etcd_status).await?;
        Ok(convert::etcd_status(
            single(resp.messages, &target)?
                .member_status
                .unwrap_or_default(),
        ))
    }

    async fn etcd_alarms(&self, opts: &CallOptions) -> Result<Vec<EtcdAlarm>> {
        let (resp, target) =
            unary!(self, opts, CallKind::Read, (), machine.etcd_alarm_list).await?;
        Ok(single(resp.messages, &target)?
            .member_alarms
            .into_iter()
            .map(convert::etcd_alarm)
            .collect())
    }

    async fn etcd_alarm_disarm(&self, opts: &CallOptions) -> Result<Vec<EtcdAlarm>> {
        let (resp, target) =
            unary!(self, opts, CallKind::Write, (), machine.etcd_alarm_disarm).await?;
        Ok(single(resp.messages, &target)?
            .member_alarms
            .into_iter()
            .map(convert::etcd_alarm)
            .collect())
    }

    async fn etcd_defragment(&self, opts: &CallOptions) -> Result<()> {
        let (resp, target) =
            unary!(self, opts, CallKind::Write, (), machine.etcd_defragment).await?;
        single(resp.messages, &target)?;
        Ok(())
    }

    async fn etcd_snapshot(
        &self,
        opts: &CallOptions,
        mut out: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
        max_bytes: u64,
    ) -> Result<SnapshotInfo> {
        let local = |what: &str, e: std::io::Error| TalosError::Local {
            message: format!("{what} the snapshot: {e}"),
        };
        let (mut stream, target) = stream!(
            self,
            opts,
            CallKind::Read,
            machine::EtcdSnapshotRequest {},
            machine.etcd_snapshot
        )
        .await?;
        let idle = self.pipeline().idle_timeout(opts);
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        let mut size = 0u64;
        while let Some(data) = self.pipeline().next(&mut stream, &target, idle).await? {
            check_metadata(data.metadata.as_ref(), &target)?;
            size += data.bytes.len() as u64;
            if size > max_bytes {
                return Err(TalosError::Local {
                    message: format!(
                        "the snapshot from {} exceeds the limit of {max_bytes} bytes; nothing more was read",
                        target.node.as_deref().unwrap_or("the endpoint")
                    ),
                });
            }
            digest.update(&data.bytes);
            out.write_all(&data.bytes)
                .await
                .map_err(|e| local("cannot write", e))?;
        }
        out.flush().await.map_err(|e| local("cannot write", e))?;
        Ok(SnapshotInfo {
            size,
            sha256: hex(digest.finish().as_ref()),
        })
    }

    async fn etcd_recover(
        &self,
        opts: &CallOptions,
        source: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    ) -> Result<SnapshotInfo> {
        let upload = Upload::new(source);
        let progress = upload.progress.clone();
        let (failed_tx, failed_rx) = tokio::sync::oneshot::channel();
        upload
            .failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .replace(failed_tx);
        let call = self.unary(
            Rpc::new(service!(machine), "etcd_recover"),
            opts,
            CallKind::Write,
            upload,
            |c, req| {
                let mut c = c.machine();
                let (metadata, extensions, upload) = req.into_parts();
                let chunks = upload.start();
                async move {
                    let Some(chunks) = chunks else {
                        return Err(tonic::Status::aborted(
                            "the snapshot upload had already begun through another endpoint; run the recovery again",
                        ));
                    };
                    c.etcd_recover(tonic::Request::from_parts(metadata, extensions, chunks))
                        .await
                }
            },
        );
        // A read error ends the call at once (dropping it resets the stream), so the node never
        // takes a cut-off upload for a whole one.
        let (resp, target) = tokio::select! {
            result = call => result?,
            Ok(e) = failed_rx => {
                return Err(TalosError::Local { message: format!("cannot read the snapshot to upload: {e}") });
            }
        };
        single(resp.messages, &target)?;
        let (size, digest) = std::mem::replace(
            &mut *progress
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            (0, ring::digest::Context::new(&ring::digest::SHA256)),
        );
        Ok(SnapshotInfo {
            size,
            sha256: hex(digest.finish().as_ref()),
        })
    }

    async fn bootstrap(&self, opts: &CallOptions, request: BootstrapRequest) -> Result<()> {
        let request = machine::BootstrapRequest {
            recover_etcd: request.recover_etcd,
            recover_skip_hash_check: request.recover_skip_hash_check,
        };
        let (resp, target) =
            unary!(self, opts, CallKind::Write, request, machine.bootstrap).await?;
        single(resp.messages, &target)?;
        Ok(())
    }

    async fn etcd_forfeit_leadership(&self, opts: &CallOptions) -> Result<String> {
        let (resp, target) = unary!(
            self,
            opts,
            CallKind::Write,
            machine::EtcdForfeitLeadershipRequest {},
            machine.etcd_forfeit_leadership
        )
        .await?;
        Ok(single(resp.messages, &target)?.member)
    }

    async fn etcd_leave_cluster(&self, opts: &CallOptions) -> Result<()> {
        let (resp, target) = unary!(
            self,
            opts,
            CallKind::Write,
            machine::EtcdLeaveClusterRequest {},
            machine.etcd_leave_cluster
        )
        .await?;
        single(resp.messages, &target)?;
        Ok(())
    }

    async fn etcd_remove_member(&self, opts: &CallOptions, member_id: u64) -> Result<()> {
        let request = machine::EtcdRemoveMemberByIdRequest { member_id };
        let (resp, target) = unary!(
            self,
            opts,
            CallKind::Write,
            request,
            machine.etcd_remove_member_by_id
        )
        .await?;
        single(resp.messages, &target)?;
        Ok(())
    }
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Size of the chunks a recovery upload sends.
const UPLOAD_CHUNK: usize = 64 * 1024;

/// The chunks of a recovery upload as the request stream: a concrete type over a bounded
/// channel that a reader task fills.
struct Chunks(tokio::sync::mpsc::Receiver<common::Data>);

impl futures_util::Stream for Chunks {
    type Item = common::Data;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<common::Data>> {
        self.0.poll_recv(cx)
    }
}

type Source = Box<dyn tokio::io::AsyncRead + Send + Unpin>;

/// A snapshot upload as the pipeline's request: the source can be taken once (a client stream
/// cannot be replayed on another endpoint); what was sent is counted and hashed on the way.
#[derive(Clone)]
struct Upload {
    source: Arc<std::sync::Mutex<Option<Source>>>,
    progress: Arc<std::sync::Mutex<(u64, ring::digest::Context)>>,
    failed: Arc<std::sync::Mutex<Option<tokio::sync::oneshot::Sender<std::io::Error>>>>,
}

impl Upload {
    fn new(source: Source) -> Self {
        Self {
            source: Arc::new(std::sync::Mutex::new(Some(source))),
            progress: Arc::new(std::sync::Mutex::new((
                0,
                ring::digest::Context::new(&ring::digest::SHA256),
            ))),
            failed: Arc::default(),
        }
    }

    /// Starts reading the source into a bounded channel (two chunks ahead at most) and returns
    /// the request stream; `None` when the source was already taken. A read error is reported
    /// through `failed` and the stream never ends cleanly (the caller drops the call).
    fn start(&self) -> Option<Chunks> {
        use tokio::io::AsyncReadExt as _;
        let mut source = self
            .source
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()?;
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let (progress, failed) = (self.progress.clone(), self.failed.clone());
        tokio::spawn(async move {
            loop {
                let mut buf = vec![0u8; UPLOAD_CHUNK];
                let mut filled = 0;
                // Whole chunks (short reads are normal for files and pipes).
                while filled < UPLOAD_CHUNK {
                    match source.read(&mut buf[filled..]).await {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) => {
                            let tx_failed = failed
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .take();
                            if let Some(report) = tx_failed {
                                let _ = report.send(e);
                            }
                            // Keep the stream open until the call is dropped.
                            tx.closed().await;
                            return;
                        }
                    }
                }
                if filled == 0 {
                    return;
                }
                buf.truncate(filled);
                {
                    let mut p = progress
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    p.0 += filled as u64;
                    p.1.update(&buf);
                }
                let chunk = common::Data {
                    metadata: None,
                    bytes: buf,
                };
                if tx.send(chunk).await.is_err() {
                    return;
                }
            }
        });
        Some(Chunks(rx))
    }
}
