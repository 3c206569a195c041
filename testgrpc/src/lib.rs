//! The Echo service (`ringmesh.testing.v1`) on a real tonic server, plus the
//! gRPC health service, for tests and benchmarks. Every call shape is here:
//! unary (with an optional delay or chosen failure), server streaming,
//! client streaming and bidirectional streaming.

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use ringmesh_proto::testing::echo_server::{Echo, EchoServer};
use ringmesh_proto::testing::{EchoReply, EchoRequest, StreamSummary};
use tokio_stream::{Stream, StreamExt};
use tonic::{Code, Request, Response, Status, Streaming};

pub use ringmesh_proto::testing::echo_client::EchoClient;
pub use ringmesh_proto::testing::{
    EchoReply as Reply, EchoRequest as Req, StreamSummary as Summary,
};

#[derive(Debug, Default, Clone)]
pub struct EchoService {
    /// Prefixed to every unary reply's payload, so tests can tell servers
    /// apart (e.g. "v1:" / "v2:").
    pub tag: Vec<u8>,
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;

fn failure(r: &EchoRequest) -> Option<Status> {
    (r.fail_code != 0).then(|| Status::new(Code::from(r.fail_code), r.fail_message.clone()))
}

#[tonic::async_trait]
impl Echo for EchoService {
    async fn unary(&self, req: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        let r = req.into_inner();
        if r.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(r.delay_ms.into())).await;
        }
        if let Some(s) = failure(&r) {
            return Err(s);
        }
        let mut payload = self.tag.clone();
        payload.extend_from_slice(&r.payload);
        Ok(Response::new(EchoReply { payload, seq: 0 }))
    }

    type ServerStreamStream = ReplyStream;

    async fn server_stream(
        &self,
        req: Request<EchoRequest>,
    ) -> Result<Response<ReplyStream>, Status> {
        let r = req.into_inner();
        if let Some(s) = failure(&r) {
            return Err(s);
        }
        let size = r.size as usize;
        let out = tokio_stream::iter(0..u64::from(r.count)).map(move |seq| {
            Ok(EchoReply {
                payload: vec![b'x'; size],
                seq,
            })
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn client_stream(
        &self,
        req: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<StreamSummary>, Status> {
        let mut s = req.into_inner();
        let mut sum = StreamSummary::default();
        while let Some(m) = s.next().await {
            let m = m?;
            sum.messages += 1;
            sum.bytes += m.payload.len() as u64;
        }
        Ok(Response::new(sum))
    }

    type BidiStream = ReplyStream;

    async fn bidi(
        &self,
        req: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<ReplyStream>, Status> {
        let mut input = req.into_inner();
        let mut seq = 0u64;
        let out = async_stream_like(move |tx| async move {
            while let Some(m) = input.next().await {
                let reply = m.map(|m| {
                    seq += 1;
                    EchoReply {
                        payload: m.payload,
                        seq,
                    }
                });
                if tx.send(reply).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(out))
    }
}

/// A stream fed by a task (bidi echo replies as requests arrive).
fn async_stream_like<F, Fut>(f: F) -> ReplyStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<EchoReply, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Serves Echo and grpc.health.v1 (status SERVING for "" and
/// "ringmesh.testing.v1.Echo") on `listener` until the future is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    svc: EchoService,
) -> Result<(), tonic::transport::Error> {
    // TCP_NODELAY on every accepted connection, as grpc-go, grpc-java and
    // Envoy do: with Nagle on, a reply written as HEADERS, DATA and trailers
    // in separate writes waits for the peer's delayed ACK (~40 ms) whenever a
    // connection carries one stream at a time (nginx's grpc_pass does).
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|s| {
        if let Ok(s) = &s {
            let _ = s.set_nodelay(true);
        }
        s
    });
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<EchoServer<EchoService>>().await;
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(EchoServer::new(svc).max_decoding_message_size(64 << 20))
        .serve_with_incoming(incoming)
        .await
}

/// A server on its own thread and tokio runtime (for tests whose own code is
/// synchronous). Stops when dropped.
pub struct Background {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    /// Binds `addr` (use port 0 for any) and serves with `threads` workers.
    pub fn start(addr: SocketAddr, threads: usize, svc: EchoService) -> std::io::Result<Self> {
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads.max(1))
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
                tokio::select! {
                    r = serve(listener, svc) => { if let Err(e) = r { eprintln!("testgrpc: {e}"); } }
                    _ = stopped => {}
                }
            });
        });
        Ok(Background {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
