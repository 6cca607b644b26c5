//! Node information: [`NodeInfo`] over gRPC.

use super::*;

#[async_trait]
impl NodeInfo for GrpcTalosClient {
    async fn version(&self, opts: &CallOptions) -> Result<VersionInfo> {
        let (resp, target) = unary!(self, opts, CallKind::Read, (), machine.version).await?;
        Ok(convert::version(single(resp.messages, &target)?))
    }

    async fn hostname(&self, opts: &CallOptions) -> Result<String> {
        let (resp, target) = unary!(self, opts, CallKind::Read, (), machine.hostname).await?;
        Ok(single(resp.messages, &target)?.hostname)
    }

    async fn system_stat(&self, opts: &CallOptions) -> Result<SystemStat> {
        let (resp, target) = unary!(self, opts, CallKind::Read, (), machine.system_stat).await?;
        Ok(convert::system_stat(single(resp.messages, &target)?))
    }

    async fn cpu_info(&self, opts: &CallOptions) -> Result<Vec<CpuInfo>> {
        let (resp, target) = unary!(self, opts, CallKind::Read, (), machine.cpu_info).await?;
        Ok(single(resp.messages, &target)?
            .cpu_info
            .into_iter()
            .map(convert::cpu_info)
            .collect())
    }

    async fn memory(&self, opts: &CallOptions) -> Result<MemoryInfo> {
        let (resp, target) = unary!(self, opts, CallKind::Read, (), machine.memory).await?;
        Ok(convert::memory(
            single(resp.messages, &target)?.meminfo.unwrap_or_default(),
        ))
    }

    async fn load_avg(&self, opts: &CallOptions) -> Result<LoadAvg> {
        let (resp, target) = unary!(self, opts, CallKind::Read, (), machine.load_avg).await?;
        Ok(convert::load_avg(single(resp.messages, &target)?))
    }

    async fn disk_stats(&self, opts: &CallOptions) -> Result<Vec<DiskStat>> {
        let (resp, target) = unary!(self, opts, CallKind::Read, (), machine.disk_stats).await?;
        Ok(single(resp.messages, &target)?
            .devices
            .into_iter()
            .map(convert::disk_stat)
            .collect())
    }

    async fn mounts(&self, opts: &CallOptions) -> Result<Vec<MountInfo>> {
        let (resp, target) = unary!(self, opts, CallKind::Read, (), machine.mounts).await?;
        Ok(single(resp.messages, &target)?
            .stats
            .into_iter()
            .map(convert::mount)
            .collect())
    }

    async fn disks(&self, opts: &CallOptions) -> Result<Vec<DiskInfo>> {
        let (resp, target) = unary!(self, opts, CallKind::Read, (), storage.disks).await?;
        Ok(single(resp.messages, &target)?
            .disks
            .into_iter()
            .map(convert::disk)
            .collect())
    }

    async fn network_devices(&self, opts: &CallOptions) -> Result<Vec<NetDevice>> {
        let (resp, target) =
            unary!(self, opts, CallKind::Read, (), machine.network_device_stats).await?;
        Ok(single(resp.messages, &target)?
            .devices
            .into_iter()
            .map(convert::net_device)
            .collect())
    }

    async fn netstat(&self, opts: &CallOptions, filter: NetstatFilter) -> Result<Vec<SocketInfo>> {
        use machine::netstat_request::{Feature, Filter, L4proto, NetNs};
        let request = machine::NetstatRequest {
            filter: match filter {
                NetstatFilter::All => Filter::All,
                NetstatFilter::Connected => Filter::Connected,
                NetstatFilter::Listening => Filter::Listening,
            } as i32,
            feature: Some(Feature { pid: true }),
            l4proto: Some(L4proto {
                tcp: true,
                tcp6: true,
                udp: true,
                udp6: true,
                ..Default::default()
            }),
            netns: Some(NetNs {
                hostnetwork: true,
                ..Default::default()
            }),
        };
        let (resp, target) = unary!(self, opts, CallKind::Read, request, machine.netstat).await?;
        Ok(single(resp.messages, &target)?
            .connectrecord
            .into_iter()
            .map(convert::socket)
            .collect())
    }

    async fn processes(&self, opts: &CallOptions) -> Result<Vec<ProcessInfo>> {
        let (resp, target) = unary!(self, opts, CallKind::Read, (), machine.processes).await?;
        Ok(single(resp.messages, &target)?
            .processes
            .into_iter()
            .map(convert::process)
            .collect())
    }

    async fn time(&self, opts: &CallOptions) -> Result<TimeInfo> {
        let (resp, target) = unary!(self, opts, CallKind::Read, (), time.time).await?;
        Ok(convert::time_info(single(resp.messages, &target)?))
    }
}
