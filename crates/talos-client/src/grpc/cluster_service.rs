//! The health check and the kubeconfig: [`Cluster`] over gRPC.

use super::*;

#[async_trait]
impl Cluster for GrpcTalosClient {
    async fn health_check(
        &self,
        opts: &CallOptions,
        request: &HealthCheckRequest,
    ) -> Result<Vec<HealthProgress>> {
        let proto = cluster::HealthCheckRequest {
            wait_timeout: prost_types::Duration::try_from(request.wait_timeout).ok(),
            cluster_info: Some(cluster::ClusterInfo {
                control_plane_nodes: request.control_plane_nodes.clone(),
                worker_nodes: request.worker_nodes.clone(),
                force_endpoint: request.force_endpoint.clone().unwrap_or_default(),
            }),
        };
        let (mut stream, target) =
            stream!(self, opts, CallKind::Read, proto, cluster.health_check).await?;
        // The check may legitimately take up to wait_timeout between messages.
        let idle = self
            .pipeline()
            .idle_timeout(opts)
            .max(request.wait_timeout + Duration::from_secs(5));
        self.collect(&mut stream, &target, idle, usize::MAX, |progress| {
            Ok(Some(HealthProgress {
                message: progress.message,
                error: progress.metadata.map(|m| m.error).filter(|e| !e.is_empty()),
            }))
        })
        .await
    }

    async fn kubeconfig(&self, opts: &CallOptions) -> Result<Kubeconfig> {
        let (stream, target) = stream!(self, opts, CallKind::Read, (), machine.kubeconfig).await?;
        let (archive, truncated) = self
            .read_bytes(stream, &target, opts, MAX_KUBECONFIG_ARCHIVE)
            .await?;
        if truncated {
            return Err(TalosError::Protocol {
                target,
                message: "kubeconfig archive is larger than 8 MiB".into(),
            });
        }
        kubeconfig::unpack(&archive).map_err(|message| TalosError::Protocol { target, message })
    }
}
