//! The gRPC service of `ringmesh.v1.AggregatedDiscovery`, written out instead
//! of the generated `AggregatedDiscoveryServer` for one reason: its codec.
//! tonic's default codec buffers start at 8 KiB per direction per stream,
//! a third of the memory a connected proxy costs; these start at 1 KiB and
//! grow for large pushes.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use ringmesh_proto::v1::aggregated_discovery_server::AggregatedDiscovery;
use ringmesh_proto::v1::{DiscoveryRequest, DiscoveryResponse};
use tonic::codec::{BufferSettings, Codec};
use tonic::codegen::{http, Body, BoxFuture, Service, StdError};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic_prost::{ProstDecoder, ProstEncoder};

use crate::ads::{Ads, MAX_REQUEST_BYTES};

const PATH: &str = "/ringmesh.v1.AggregatedDiscovery/StreamResources";
const BUFFER: usize = 1024;
const YIELD_THRESHOLD: usize = 32 * 1024;

#[derive(Debug, Clone, Copy, Default)]
struct SmallCodec;

impl Codec for SmallCodec {
    type Encode = DiscoveryResponse;
    type Decode = DiscoveryRequest;
    type Encoder = ProstEncoder<DiscoveryResponse>;
    type Decoder = ProstDecoder<DiscoveryRequest>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::new(BUFFER, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::new(BUFFER, YIELD_THRESHOLD))
    }
}

#[derive(Clone)]
pub struct AdsServer {
    inner: Arc<Ads>,
}

impl AdsServer {
    pub fn new(ads: Ads) -> Self {
        Self {
            inner: Arc::new(ads),
        }
    }
}

impl NamedService for AdsServer {
    const NAME: &'static str = "ringmesh.v1.AggregatedDiscovery";
}

struct Method(Arc<Ads>);

impl StreamingService<DiscoveryRequest> for Method {
    type Response = DiscoveryResponse;
    type ResponseStream = <Ads as AggregatedDiscovery>::StreamResourcesStream;
    type Future = BoxFuture<tonic::Response<Self::ResponseStream>, tonic::Status>;

    fn call(
        &mut self,
        request: tonic::Request<tonic::Streaming<DiscoveryRequest>>,
    ) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move { inner.stream_resources(request).await })
    }
}

impl<B> Service<http::Request<B>> for AdsServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != PATH {
            return Box::pin(async move {
                let mut response = http::Response::new(tonic::body::Body::default());
                let headers = response.headers_mut();
                headers.insert(
                    tonic::Status::GRPC_STATUS,
                    (tonic::Code::Unimplemented as i32).into(),
                );
                headers.insert(
                    http::header::CONTENT_TYPE,
                    tonic::metadata::GRPC_CONTENT_TYPE,
                );
                Ok(response)
            });
        }
        let inner = self.inner.clone();
        Box::pin(async move {
            let mut grpc =
                Grpc::new(SmallCodec).apply_max_message_size_config(Some(MAX_REQUEST_BYTES), None);
            Ok(grpc.streaming(Method(inner), req).await)
        })
    }
}
