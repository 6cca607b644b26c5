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

    async fn etcd_snapshot(&self, opts: &CallOptions, dest: &Path) -> Result<SnapshotInfo> {
        let local = |what: &str, e: std::io::Error| TalosError::Local {
            message: format!("{what} {}: {e}", dest.display()),
        };
        let mut options = tokio::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        options.mode(0o600);
        let mut file = options
            .open(dest)
            .await
            .map_err(|e| local("cannot create", e))?;

        let result = async {
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
                digest.update(&data.bytes);
                size += data.bytes.len() as u64;
                file.write_all(&data.bytes)
                    .await
                    .map_err(|e| local("cannot write", e))?;
            }
            file.flush().await.map_err(|e| local("cannot write", e))?;
            file.sync_all().await.map_err(|e| local("cannot sync", e))?;
            let sha256 = digest
                .finish()
                .as_ref()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            Ok(SnapshotInfo {
                path: dest.to_path_buf(),
                size,
                sha256,
            })
        }
        .await;
        if result.is_err() {
            // Never leave a partial snapshot behind.
            let _ = tokio::fs::remove_file(dest).await;
        }
        result
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
