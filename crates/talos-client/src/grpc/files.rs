//! Files and disk usage: [`Files`] over gRPC.

use super::*;

#[async_trait]
impl Files for GrpcTalosClient {
    async fn disk_usage(
        &self,
        opts: &CallOptions,
        paths: Vec<String>,
        depth: i32,
        limit: usize,
    ) -> Result<Vec<DiskUsageEntry>> {
        let request = machine::DiskUsageRequest {
            recursion_depth: depth,
            all: false,
            threshold: 0,
            paths,
        };
        let (mut stream, target) =
            stream!(self, opts, CallKind::Read, request, machine.disk_usage).await?;
        let idle = self.pipeline().idle_timeout(opts);
        self.collect(&mut stream, &target, idle, limit, |item| {
            check_metadata(item.metadata.as_ref(), &target)?;
            Ok(Some(convert::disk_usage(item)))
        })
        .await
    }

    async fn list_files(
        &self,
        opts: &CallOptions,
        root: &str,
        depth: i32,
        limit: usize,
    ) -> Result<Vec<FileInfo>> {
        let request = machine::ListRequest {
            root: root.to_owned(),
            recurse: depth > 1,
            recursion_depth: depth,
            types: Vec::new(),
            report_xattrs: false,
        };
        let (mut stream, target) =
            stream!(self, opts, CallKind::Read, request, machine.list).await?;
        let idle = self.pipeline().idle_timeout(opts);
        self.collect(&mut stream, &target, idle, limit, |item| {
            check_metadata(item.metadata.as_ref(), &target)?;
            Ok(Some(convert::file_info(item)))
        })
        .await
    }

    async fn read_file(
        &self,
        opts: &CallOptions,
        path: &str,
        max_bytes: usize,
    ) -> Result<FileContent> {
        let request = machine::ReadRequest {
            path: path.to_owned(),
        };
        let (stream, target) = stream!(self, opts, CallKind::Read, request, machine.read).await?;
        let (data, truncated) = self.read_bytes(stream, &target, opts, max_bytes).await?;
        Ok(FileContent { data, truncated })
    }
}
