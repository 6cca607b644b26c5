//! Containers, images and services: [`Workloads`] over gRPC.

use super::*;

#[async_trait]
impl Workloads for GrpcTalosClient {
    async fn containers(
        &self,
        opts: &CallOptions,
        namespace: ContainerNamespace,
    ) -> Result<Vec<ContainerInfo>> {
        let (driver, _) = convert::containerd_namespace(namespace);
        let request = machine::ContainersRequest {
            namespace: namespace.as_str().to_owned(),
            driver: driver as i32,
        };
        let (resp, target) =
            unary!(self, opts, CallKind::Read, request, machine.containers).await?;
        Ok(single(resp.messages, &target)?
            .containers
            .into_iter()
            .map(convert::container)
            .collect())
    }

    async fn container_stats(
        &self,
        opts: &CallOptions,
        namespace: ContainerNamespace,
    ) -> Result<Vec<ContainerStats>> {
        let (driver, _) = convert::containerd_namespace(namespace);
        let request = machine::StatsRequest {
            namespace: namespace.as_str().to_owned(),
            driver: driver as i32,
        };
        let (resp, target) = unary!(self, opts, CallKind::Read, request, machine.stats).await?;
        Ok(single(resp.messages, &target)?
            .stats
            .into_iter()
            .map(convert::container_stats)
            .collect())
    }

    async fn services(&self, opts: &CallOptions) -> Result<Vec<ServiceInfo>> {
        let (resp, target) = unary!(self, opts, CallKind::Read, (), machine.service_list).await?;
        Ok(single(resp.messages, &target)?
            .services
            .into_iter()
            .map(convert::service)
            .collect())
    }

    async fn service_action(
        &self,
        opts: &CallOptions,
        id: &str,
        action: ServiceAction,
    ) -> Result<String> {
        let id = id.to_owned();
        Ok(match action {
            ServiceAction::Start => {
                let req = machine::ServiceStartRequest { id };
                let (resp, target) =
                    unary!(self, opts, CallKind::Write, req, machine.service_start).await?;
                single(resp.messages, &target)?.resp
            }
            ServiceAction::Stop => {
                let req = machine::ServiceStopRequest { id };
                let (resp, target) =
                    unary!(self, opts, CallKind::Write, req, machine.service_stop).await?;
                single(resp.messages, &target)?.resp
            }
            ServiceAction::Restart => {
                let req = machine::ServiceRestartRequest { id };
                let (resp, target) =
                    unary!(self, opts, CallKind::Write, req, machine.service_restart).await?;
                single(resp.messages, &target)?.resp
            }
        })
    }

    async fn images(
        &self,
        opts: &CallOptions,
        namespace: ContainerNamespace,
    ) -> Result<Vec<ImageInfo>> {
        let (driver, ns) = convert::containerd_namespace(namespace);
        let request = machine::ImageServiceListRequest {
            containerd: Some(common::ContainerdInstance {
                driver: driver as i32,
                namespace: ns as i32,
            }),
        };
        let opened = stream!(self, opts, CallKind::Read, request, image.list).await;
        let idle = self.pipeline().idle_timeout(opts);
        match opened {
            Ok((mut stream, target)) => {
                self.collect(&mut stream, &target, idle, usize::MAX, |img| {
                    Ok(Some(ImageInfo {
                        name: img.name,
                        digest: img.digest,
                        size: u64::try_from(img.size).unwrap_or(0),
                        created: convert::timestamp(img.created_at),
                    }))
                })
                .await
            }
            // Nodes before ImageService: the MachineService API.
            Err(TalosError::Api {
                code: crate::Code::Unimplemented,
                ..
            }) => {
                let request = machine::ImageListRequest {
                    namespace: ns as i32,
                };
                let (mut stream, target) =
                    stream!(self, opts, CallKind::Read, request, machine.image_list).await?;
                self.collect(&mut stream, &target, idle, usize::MAX, |img| {
                    check_metadata(img.metadata.as_ref(), &target)?;
                    Ok(Some(ImageInfo {
                        name: img.name,
                        digest: img.digest,
                        size: u64::try_from(img.size).unwrap_or(0),
                        created: convert::timestamp(img.created_at),
                    }))
                })
                .await
            }
            Err(e) => Err(e),
        }
    }

    async fn image_pull(
        &self,
        opts: &CallOptions,
        namespace: ContainerNamespace,
        reference: &str,
    ) -> Result<String> {
        let (driver, ns) = convert::containerd_namespace(namespace);
        let request = machine::ImageServicePullRequest {
            containerd: Some(common::ContainerdInstance {
                driver: driver as i32,
                namespace: ns as i32,
            }),
            image_ref: reference.to_owned(),
        };
        let opened = stream!(self, opts, CallKind::Write, request, image.pull).await;
        match opened {
            Ok((mut stream, target)) => {
                // Pulls report progress until the final name; give them the idle timeout per step.
                let idle = self.pipeline().idle_timeout(opts);
                let mut name = String::new();
                self.collect(&mut stream, &target, idle, usize::MAX, |msg| {
                    if let Some(machine::image_service_pull_response::Response::Name(n)) =
                        msg.response
                    {
                        name = n;
                    }
                    Ok(None::<()>)
                })
                .await?;
                Ok(if name.is_empty() {
                    reference.to_owned()
                } else {
                    name
                })
            }
            Err(TalosError::Api {
                code: crate::Code::Unimplemented,
                ..
            }) => {
                let request = machine::ImagePullRequest {
                    namespace: ns as i32,
                    reference: reference.to_owned(),
                };
                let (resp, target) =
                    unary!(self, opts, CallKind::Write, request, machine.image_pull).await?;
                single(resp.messages, &target)?;
                Ok(reference.to_owned())
            }
            Err(e) => Err(e),
        }
    }
}
