//! HTTP/1.1 reverse proxy: one downstream connection, request after request.
//!
//! The life of a request, in order:
//! 1. `read_head`: wait for bytes without holding a buffer, then read and parse
//!    the head under the request-head timeout and size limits (408/431/400).
//! 2. Route on the epoch current at this moment; the request keeps that epoch.
//! 3. A direct response, or: pick the cluster (weighted) and the endpoint (LB,
//!    passing over endpoints ejected after a connect failure), take a pooled
//!    connection or connect; a failed connect fails over to another endpoint
//!    once (nothing was sent), then 503.
//! 4. Send the rewritten head and stream the request body (100-continue
//!    answered here; chunked framing validated).
//! 5. Read the response head under the route timeout (504), 502 on a reset or
//!    a bad head. One retry on a fresh connection when a pooled one turned out
//!    stale before any response byte and the request had no body; the route's
//!    retry policy (connect-failure, reset, 5xx, gateway-error, retriable-4xx,
//!    per-try timeout) when the whole request is still in hand, on another
//!    endpoint where there is one.
//! 6. Send the response head, stream the body, pool the upstream connection if
//!    it is reusable, count and log the request, and loop if keep-alive.

mod body;
pub mod codec;
pub mod head;
mod local;
mod to_h2;

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::io::{AsyncWriteRent, AsyncWriteRentExt};

use self::body::BodyError;
use self::codec::{BodyFraming, HeadError, Method, RequestHead, ResponseHead};
pub use self::head::canonical_length;
pub use self::local::reason_phrase;
use self::local::LocalError;
pub use self::to_h2::to_request;
use crate::access_log::Entry;
use crate::config::ListenerKind;
use crate::conn::Conn as Stream;
use crate::io::read_append;
use crate::router::{Action, Forward, Retry, Route};
use crate::upstream::{ClusterState, Endpoint};
use crate::worker::{EpochLocal, ListenerStats, Worker, BUF_SIZE};

/// How long a lingering close keeps reading what the client still sends after
/// an error answer, so the answer is not destroyed by a TCP reset.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 256 * 1024;
/// A pooled connection idle for less than this is used without a liveness
/// peek when the request can be retried (see `Endpoint::checkout`).
const TRUST_POOLED_FOR: Duration = Duration::from_secs(1);
/// An upgraded (WebSocket) connection with no traffic either way is closed.
const UPGRADE_IDLE: Duration = Duration::from_secs(3600);
/// Upstream response heads may be larger than request heads (cookies).
const RESPONSE_HEAD_LIMITS: codec::Limits = codec::Limits {
    max_head_bytes: 64 * 1024,
    max_headers: 200,
};

struct Conn {
    worker: Rc<Worker>,
    stream: Stream,
    /// mTLS listeners: the x-forwarded-client-cert value for this
    /// connection's peer (empty for a plaintext PERMISSIVE peer: the header
    /// is only removed). None on other listeners.
    xfcc: Option<Box<[u8]>>,
    peer: SocketAddr,
    /// The listener's address: its index may differ from epoch to epoch.
    listener_addr: SocketAddr,
    /// Index of the listener in the epoch of the request being served.
    listener: usize,
    stats: Rc<ListenerStats>,
    /// `peer`'s IP as text for x-forwarded-for, rendered once.
    client_ip: Box<[u8]>,
    /// Bytes read from the client and not yet consumed. Empty (capacity 0)
    /// while the connection is idle.
    buf: Vec<u8>,
    /// The connection's first request has not been read yet.
    first: bool,
    /// Reused header arrays for request and response heads.
    req_headers: Vec<codec::Header>,
    resp_headers: Vec<codec::Header>,
    /// The current request's head has been removed from `buf`.
    head_consumed: bool,
    /// Bytes of the current request read from the client (head and body).
    req_bytes: u64,
    /// `limits.downstream_send_timeout` of the current request's epoch.
    send_timeout: Duration,
    /// When the connection reached HTTP: its first request head is due
    /// within the request-head timeout of this.
    opened: Instant,
}

enum HeadRead {
    Head(RequestHead),
    /// The client's first bytes are the HTTP/2 preface (h2c with prior
    /// knowledge): the connection moves to the HTTP/2 server.
    Http2,
    /// Closed, idle timeout, or drain: nothing to answer.
    Gone,
    Refuse(LocalError),
}

/// What became of the downstream connection after a request.
enum Next {
    KeepAlive,
    /// h2c prior knowledge: serve the connection as HTTP/2.
    Http2,
    Close,
    /// Close after reading what the client still sends (error answers).
    LingerClose,
    /// The upstream answered 101: tunnel to it (with its buffered bytes).
    Upgrade(Stream, Vec<u8>),
}

pub async fn serve(
    worker: Rc<Worker>,
    epoch: Rc<EpochLocal>,
    listener: usize,
    stream: Stream,
    peer: SocketAddr,
) {
    let _ = stream.set_nodelay(true);
    let xfcc = match &epoch.config.listeners[listener].tls {
        Some(crate::tls::DownstreamTls::Mesh { own_id, .. }) => {
            Some(match stream.peer_identity() {
                Some(p) => format!("By={own_id};URI={p}").into_bytes().into(),
                None => Box::default(),
            })
        }
        _ => None,
    };
    let mut c = Conn {
        worker,
        xfcc,
        stream,
        client_ip: peer.ip().to_string().into_bytes().into(),
        peer,
        listener_addr: epoch.config.listeners[listener].addr,
        listener,
        stats: epoch.listeners[listener].clone(),
        buf: Vec::new(),
        first: true,
        req_headers: Vec::new(),
        resp_headers: Vec::new(),
        head_consumed: false,
        req_bytes: 0,
        send_timeout: epoch.config.limits.downstream_send_timeout,
        opened: Instant::now(),
    };
    drop(epoch);
    loop {
        // Idle between requests: hold no buffer, wait for readiness. Only this
        // small state lives in the connection's task while it is idle.
        if c.buf.is_empty() {
            match c.wait_readable().await {
                Idle::Ready => {}
                Idle::Gone => break,
                Idle::TimedOut => {
                    Box::pin(c.refuse(LocalError::RequestTimeout)).await;
                    return;
                }
            }
        }
        // One request, head to last body byte. Its state machine is large
        // (several KB), so it lives in a box only while the request does.
        match Box::pin(c.one_request()).await {
            Next::KeepAlive if !c.worker.drain.is_fired() => continue,
            Next::KeepAlive | Next::Close => break,
            Next::LingerClose => {
                Box::pin(c.linger_close()).await;
                return;
            }
            Next::Upgrade(up, ubuf) => {
                Box::pin(c.tunnel(up, ubuf)).await;
                return;
            }
            Next::Http2 => {
                let epoch = c.worker.current();
                let Some(l) = epoch.listener_at(c.listener_addr) else {
                    return;
                };
                let Conn {
                    worker,
                    stream,
                    buf,
                    peer,
                    ..
                } = c;
                Box::pin(crate::http2::serve(worker, epoch, l, stream, peer, buf)).await;
                return;
            }
        }
    }
    let buf = std::mem::take(&mut c.buf);
    c.worker.bufs.put(buf);
}

enum Idle {
    Ready,
    /// Closed, drained, or idle too long on a kept-alive connection.
    Gone,
    /// A new connection sent nothing within the request-head timeout.
    TimedOut,
}

impl Conn {
    /// Gives the buffer back and waits until the client sends something.
    async fn wait_readable(&mut self) -> Idle {
        let spare = std::mem::take(&mut self.buf);
        self.worker.bufs.put(spare);
        self.stream.release_buffers();
        let wait = {
            let epoch = self.worker.current();
            if self.first {
                epoch.config.limits.request_head_timeout
            } else {
                epoch.config.limits.downstream_idle_timeout
            }
        };
        let ready = monoio::select! {
            // On epoll, relaxed readiness may be stale: the read that follows
            // would then park holding a buffer. io_uring always polls.
            r = monoio::time::timeout(wait, self.stream.readable(self.worker.uring)) => r,
            _ = self.worker.drain.fired() => return Idle::Gone,
        };
        match ready {
            Ok(Ok(())) => Idle::Ready,
            Ok(Err(_)) => Idle::Gone,
            Err(_) if self.first => Idle::TimedOut,
            Err(_) => Idle::Gone,
        }
    }

    /// Answers an unreadable request (400/408/431) and closes.
    async fn refuse(mut self, e: LocalError) {
        let epoch = self.worker.current();
        if let Some(l) = epoch.listener_at(self.listener_addr) {
            epoch.count_request(l, None, None, e.status());
        }
        self.answer_error(e, true, None).await;
        self.linger_close().await;
    }

    /// Reads one request head and serves the request.
    async fn one_request(&mut self) -> Next {
        let epoch = self.worker.current();
        let Some(listener) = epoch.listener_at(self.listener_addr) else {
            return Next::Close;
        };
        self.listener = listener;
        self.send_timeout = epoch.config.limits.downstream_send_timeout;
        let head = match self.read_head(&epoch.config.limits).await {
            HeadRead::Head(h) => h,
            HeadRead::Http2 => return Next::Http2,
            HeadRead::Gone => return Next::Close,
            HeadRead::Refuse(e) => {
                epoch.count_request(self.listener, None, None, e.status());
                self.answer_error(e, true, None).await;
                return Next::LingerClose;
            }
        };
        self.first = false;
        self.head_consumed = false;
        self.req_bytes = head.head_len as u64;
        let next = self.request(&epoch, &head).await;
        self.consume_head(&head);
        self.req_headers = head.headers;
        next
    }

    async fn read_head(&mut self, limits: &crate::config::Limits) -> HeadRead {
        if self.buf.is_empty() {
            self.buf = self.worker.bufs.get();
        }
        // A head trickling in is cut at the deadline, not re-armed per byte;
        // a new connection's first head counts from the connection's start.
        let since = if self.first {
            self.opened
        } else {
            Instant::now()
        };
        let deadline = since + limits.request_head_timeout;
        let codec_limits = codec::Limits {
            max_head_bytes: limits.max_request_head_bytes,
            max_headers: limits.max_headers,
        };
        loop {
            if self.first && crate::http2::preface_prefix(&self.buf) {
                if self.buf.len() >= crate::http2::PREFACE.len() {
                    return HeadRead::Http2;
                }
            } else if !self.buf.is_empty() {
                match codec::parse_request_head(&self.buf, &codec_limits, &mut self.req_headers) {
                    Ok(Some(h)) => return HeadRead::Head(h),
                    Ok(None) => {}
                    Err(HeadError::TooLarge(_)) => {
                        return HeadRead::Refuse(LocalError::HeadTooLarge)
                    }
                    Err(HeadError::Malformed(_)) => {
                        return HeadRead::Refuse(LocalError::BadRequest)
                    }
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return HeadRead::Refuse(LocalError::RequestTimeout);
            }
            let buf = std::mem::take(&mut self.buf);
            let read = monoio::time::timeout(left, read_append(&mut self.stream, buf, 4096)).await;
            match read {
                Err(_) => return HeadRead::Refuse(LocalError::RequestTimeout),
                Ok((res, buf)) => {
                    self.buf = buf;
                    match res {
                        Ok(0) | Err(_) => return HeadRead::Gone,
                        Ok(n) => self.stats_rx(n as u64),
                    }
                }
            }
        }
    }

    /// Removes the current request's head from the buffer (once); what
    /// follows it is body or the next pipelined request.
    fn consume_head(&mut self, head: &RequestHead) {
        if !self.head_consumed {
            self.head_consumed = true;
            self.buf.drain(..head.head_len.min(self.buf.len()));
        }
    }

    fn stats_rx(&self, n: u64) {
        self.stats.rx.add(n);
    }

    /// Writes to the client; false if it failed or made no progress for
    /// the send timeout (the caller closes the connection).
    async fn send(&mut self, out: Vec<u8>) -> (bool, Vec<u8>) {
        let n = out.len() as u64;
        let (res, out) =
            crate::io::write_all_within(&mut self.stream, out, self.send_timeout).await;
        match &res {
            Ok(()) => self.stats.tx.add(n),
            Err(e) => self.write_failed(e),
        }
        (res.is_ok(), out)
    }

    /// Counts a write to the client that timed out.
    fn write_failed(&self, e: &std::io::Error) {
        if e.kind() == std::io::ErrorKind::TimedOut {
            self.stats.send_timeouts.inc();
        }
    }

    async fn answer_error(&mut self, e: LocalError, close: bool, request_id: Option<&[u8]>) {
        let mut out = Vec::with_capacity(256);
        local::error(&mut out, e, close, request_id);
        let _ = self.send(out).await;
    }

    /// Half-close and read (and discard) what the client still sends for a
    /// short while, so the error answer reaches it before the socket closes.
    async fn linger_close(mut self) {
        let _ = self.stream.shutdown().await;
        let mut buf = std::mem::take(&mut self.buf);
        let deadline = Instant::now() + LINGER;
        let mut seen = 0;
        while seen < LINGER_BYTES {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            buf.clear();
            if buf.capacity() == 0 {
                buf = self.worker.bufs.get();
            }
            match monoio::time::timeout(left, read_append(&mut self.stream, buf, 1)).await {
                Ok((Ok(n), b)) if n > 0 => {
                    seen += n;
                    buf = b;
                }
                Ok((_, b)) => {
                    buf = b;
                    break;
                }
                Err(_) => {
                    buf = Vec::new();
                    break;
                }
            }
        }
        self.worker.bufs.put(buf);
    }

    /// Phases 2-6 for one request whose head is at the start of `self.buf`.
    async fn request(&mut self, epoch: &Rc<EpochLocal>, head: &RequestHead) -> Next {
        let start = Instant::now();
        let ListenerKind::Http(table) = &epoch.config.listeners[self.listener].kind else {
            return Next::Close;
        };
        let lookup = head::Lookup {
            buf: &self.buf,
            headers: &head.headers,
        };
        let host = head
            .authority
            .or(head.host)
            .map_or(&b""[..], |h| h.get(&self.buf));
        let route = table.select(
            host,
            head.method_span.get(&self.buf),
            head.path.get(&self.buf),
            &lookup,
        );

        let mut id_buf = [0u8; 32];
        let request_id: Vec<u8> = match head
            .headers
            .iter()
            .find(|h| h.kind == codec::HeaderKind::XRequestId)
        {
            Some(h) if !h.value.is_empty() && h.value.len() <= 128 => {
                h.value.get(&self.buf).to_vec()
            }
            _ => generate_request_id(&mut id_buf).to_vec(),
        };
        let info = epoch.config.access_log.is_some().then(|| ReqInfo {
            method: head.method_span.get(&self.buf).to_vec(),
            authority: head.host.map_or(Vec::new(), |h| h.get(&self.buf).to_vec()),
            target: head.target.get(&self.buf).to_vec(),
        });
        // A body we do not read would be parsed as the next request: close.
        let has_body = head.framing != BodyFraming::None;

        let listener = &epoch.config.listeners[self.listener];
        if !listener.authz.is_empty() {
            let d = epoch.authorize(
                self.listener,
                &crate::authz::Subject {
                    identity: self.stream.peer_identity().map(|id| &**id),
                    http: Some(crate::authz::HttpSubject {
                        method: head.method_span.get(&self.buf),
                        path: head.path.get(&self.buf),
                    }),
                    port: self.listener_addr.port(),
                },
            );
            if !d.allowed() {
                let body = listener.authz.denial_body(d);
                let close = has_body || !head.keep_alive || self.worker.drain.is_fired();
                let mut out = Vec::with_capacity(160 + body.len());
                local::write(
                    &mut out,
                    &local::Local {
                        status: 403,
                        error: Some(LocalError::Forbidden),
                        content_type: "text/plain",
                        body: body.as_bytes(),
                        close,
                        request_id: Some(&request_id),
                        extra: &[],
                        head_only: head.method == Method::Head,
                    },
                );
                let n = out.len() as u64;
                let (ok, _) = self.send(out).await;
                epoch.count_request(self.listener, None, None, 403);
                self.log(&info, 403, n, start, None, "", &request_id);
                return match (ok, has_body) {
                    (false, _) => Next::Close,
                    (true, true) => Next::LingerClose,
                    (true, false) => self.after(head, true),
                };
            }
        }

        let Some(route) = route else {
            // A refused CONNECT closes too: a client may already be sending what it
            // meant for the tunnel, which must not be read as requests.
            let linger = has_body || head.method == Method::Connect;
            self.answer_error(
                LocalError::NoRoute,
                linger || !head.keep_alive,
                Some(&request_id),
            )
            .await;
            epoch.count_request(self.listener, None, None, 404);
            self.log(&info, 404, 0, start, None, "", &request_id);
            return if linger {
                Next::LingerClose
            } else {
                self.after(head, true)
            };
        };
        if head.method == Method::Connect {
            self.answer_error(LocalError::MethodNotAllowed, true, Some(&request_id))
                .await;
            epoch.count_request(self.listener, Some(route), None, 405);
            self.log(&info, 405, 0, start, None, &route.name, &request_id);
            return Next::LingerClose;
        }
        let fwd = match &route.action {
            Action::Direct(d) => {
                let close = has_body || !head.keep_alive || self.worker.drain.is_fired();
                let mut out = Vec::with_capacity(128 + d.body.len());
                local::write(
                    &mut out,
                    &local::Local {
                        status: d.status,
                        error: None,
                        content_type: &d.content_type,
                        body: &d.body,
                        close,
                        request_id: Some(&request_id),
                        extra: &route.response_headers_to_add,
                        head_only: head.method == Method::Head,
                    },
                );
                let n = out.len() as u64;
                let (ok, _) = self.send(out).await;
                epoch.count_request(self.listener, Some(route), None, d.status);
                self.log(&info, d.status, n, start, None, &route.name, &request_id);
                return match (ok, has_body) {
                    (false, _) => Next::Close,
                    (true, true) => Next::LingerClose,
                    (true, false) => self.after(head, true),
                };
            }
            Action::Forward(f) => f,
        };
        self.forward(epoch, head, route, fwd, start, request_id, &info)
            .await
    }

    /// Keep-alive decision after a complete exchange.
    fn after(&self, head: &RequestHead, response_delimited: bool) -> Next {
        // A kTLS connection near its key's usage limit is retired: the
        // kernel cannot re-key it.
        if head.keep_alive
            && response_delimited
            && !self.worker.drain.is_fired()
            && self.stream.reusable()
        {
            Next::KeepAlive
        } else {
            Next::Close
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn log(
        &self,
        info: &Option<ReqInfo>,
        status: u16,
        bytes_out: u64,
        start: Instant,
        upstream: Option<SocketAddr>,
        route: &str,
        request_id: &[u8],
    ) {
        let Some(info) = info else {
            return;
        };
        let e = Entry {
            method: &info.method,
            authority: &info.authority,
            path: &info.target,
            status,
            bytes_in: self.req_bytes,
            bytes_out,
            duration_us: start.elapsed().as_micros() as u64,
            upstream,
            route,
            request_id,
            downstream: self.peer,
        };
        self.worker.access_log.send(e.to_json());
    }

    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &mut self,
        epoch: &Rc<EpochLocal>,
        head: &RequestHead,
        route: &Route,
        fwd: &Forward,
        start: Instant,
        request_id: Vec<u8>,
        info: &Option<ReqInfo>,
    ) -> Next {
        // A chunked body is validated as it streams, after the head went upstream.
        // What came with the head is checked first, so a framing error already in
        // hand is a 400 of which the upstream sees nothing, not even a cut-off head.
        if head.framing == BodyFraming::Chunked {
            let mut check = codec::ChunkedState::new(body::MAX_TRAILER_BYTES);
            if check
                .feed(self.buf.get(head.head_len..).unwrap_or_default())
                .is_err()
            {
                let f = Failure {
                    error: LocalError::BadRequest,
                    cluster: None,
                };
                return self
                    .fail(epoch, head, route, f, start, &request_id, info)
                    .await;
            }
        }
        let cluster_idx = fwd.pick(fastrand::u32(..fwd.total_weight.max(1)));
        let cs = epoch.clusters[cluster_idx].clone();
        let fail = |e: LocalError| Failure {
            error: e,
            cluster: Some(cluster_idx),
        };
        let Some(ep) = cs.pick().cloned() else {
            return self
                .fail(
                    epoch,
                    head,
                    route,
                    fail(LocalError::NoHealthyUpstream),
                    start,
                    &request_id,
                    info,
                )
                .await;
        };
        if head.upgrade.is_none()
            && crate::http2::upstream_h2(&cs, ep.addr, crate::http2::Proto::Http1)
        {
            let r = to_h2::H1Req {
                epoch,
                head,
                route,
                fwd,
                cs: &cs,
                cluster_idx,
                start,
                request_id: &request_id,
                info,
            };
            return Box::pin(self.forward_h2(r, ep)).await;
        }
        let next = self
            .exchange(
                epoch,
                head,
                route,
                fwd,
                &cs,
                InFlight::new(ep),
                cluster_idx,
                start,
                &request_id,
                info,
            )
            .await;
        match next {
            Ok(n) => n,
            Err(f) => {
                self.fail(epoch, head, route, f, start, &request_id, info)
                    .await
            }
        }
    }

    /// Answers a failed forward with its error status and decides the
    /// connection's fate: close unless the request was fully consumed.
    #[allow(clippy::too_many_arguments)]
    async fn fail(
        &mut self,
        epoch: &EpochLocal,
        head: &RequestHead,
        route: &Route,
        f: Failure,
        start: Instant,
        request_id: &[u8],
        info: &Option<ReqInfo>,
    ) -> Next {
        let status = f.error.status();
        epoch.count_request(self.listener, Some(route), f.cluster, status);
        self.log(info, status, 0, start, None, &route.name, request_id);
        if f.error == LocalError::BadRequest || head.framing != BodyFraming::None {
            self.answer_error(f.error, true, Some(request_id)).await;
            return Next::LingerClose;
        }
        let close = !head.keep_alive || self.worker.drain.is_fired();
        self.answer_error(f.error, close, Some(request_id)).await;
        if close {
            Next::Close
        } else {
            Next::KeepAlive
        }
    }

    /// The request head as it goes upstream in HTTP/1.1, with every edit:
    /// x-forwarded-*, x-request-id, XFCC, the route's header rules and
    /// prefix rewrite.
    fn upstream_head(
        &self,
        head: &RequestHead,
        route: &Route,
        fwd: &Forward,
        request_id: &[u8],
    ) -> Vec<u8> {
        let rewrite = match (&route.path, &fwd.prefix_rewrite) {
            (crate::router::PathMatcher::Prefix(p), Some(new)) => Some((p.len(), &**new)),
            _ => None,
        };
        let mut up_head = Vec::with_capacity(head.head_len + 256);
        head::upstream_request(
            &mut up_head,
            &self.buf,
            head,
            &head::RequestEdits {
                route,
                rewrite,
                client_ip: &self.client_ip,
                request_id,
                strip_expect: head.expect_continue,
                xfcc: self.xfcc.as_deref(),
                https: self.stream.is_tls() && self.xfcc.is_none(),
            },
        );
        up_head
    }

    #[allow(clippy::too_many_arguments)]
    async fn exchange(
        &mut self,
        epoch: &Rc<EpochLocal>,
        head: &RequestHead,
        route: &Route,
        fwd: &Forward,
        cs: &Rc<ClusterState>,
        mut ep: InFlight,
        cluster_idx: usize,
        start: Instant,
        request_id: &[u8],
        info: &Option<ReqInfo>,
    ) -> Result<Next, Failure> {
        let fail = |e: LocalError| Failure {
            error: e,
            cluster: Some(cluster_idx),
        };
        let limits = &epoch.config.limits;
        let body_in_buf = self.buf.len() - head.head_len;
        let expect_continue = head.expect_continue
            && head.version_minor == 1
            && body_in_buf == 0
            && head.framing != BodyFraming::None;
        let mut up_head = self.upstream_head(head, route, fwd, request_id);
        self.consume_head(head);
        // A body that arrived with the head goes out in the same write.
        let mut req_framing = head.framing;
        if let (BodyFraming::ContentLength(n), false) = (req_framing, expect_continue) {
            let take = n.min(self.buf.len() as u64) as usize;
            up_head.extend_from_slice(&self.buf[..take]);
            self.buf.drain(..take);
            self.req_bytes += take as u64;
            req_framing = match n - take as u64 {
                0 => BodyFraming::None,
                rest => BodyFraming::ContentLength(rest),
            };
        }
        // The whole request is in `up_head` and repeating it is harmless: it
        // may be sent again when a pooled connection proves stale.
        let whole = req_framing == BodyFraming::None;
        let retry_safe = whole && head.method.is_idempotent();
        let trust_pooled_for = if retry_safe {
            TRUST_POOLED_FOR
        } else {
            Duration::ZERO
        };
        // The route's retry policy applies only to a request still fully in
        // hand; a streamed body cannot be sent twice.
        let policy = if whole {
            fwd.retry
        } else {
            crate::router::Retry::default()
        };
        let mut retries_left = policy.attempts;
        // Nothing reached an endpoint we could not connect to, so one
        // failover to another endpoint is always safe, policy or not.
        let mut failover_left = 1u8;
        let deadline = Instant::now() + fwd.timeout;

        // Phase 3-5: connect (pooled or new), send, await the response head.
        let mut fresh_only = false;
        // The upstream stopped taking the request body (it may have answered
        // early): what the client still sends of the body must never be read
        // as a next request, so the connection closes after the answer.
        let mut body_unsent = false;
        let (mut up, resp, mut ubuf) = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(fail(LocalError::UpstreamTimeout));
            }
            let try_timeout = policy.per_try_timeout.map_or(left, |t| t.min(left));
            let pooled = if fresh_only {
                None
            } else {
                ep.checkout(cs.config.idle_timeout, trust_pooled_for)
            };
            fresh_only = false;
            let reused = pooled.is_some();
            let mut up = match pooled {
                Some(c) => {
                    cs.stats.pool_hits.inc();
                    c
                }
                None => {
                    cs.stats.pool_misses.inc();
                    match crate::upstream::connect(cs, &ep).await {
                        Ok(c) => c,
                        Err(e) => {
                            let by_policy = retries_left > 0 && policy.on(Retry::CONNECT_FAILURE);
                            if by_policy || failover_left > 0 {
                                if let Some(other) = cs.pick_other(&ep) {
                                    if by_policy {
                                        retries_left -= 1;
                                    } else {
                                        failover_left -= 1;
                                    }
                                    ep.switch(other.clone());
                                    continue;
                                }
                            }
                            return Err(fail(match e {
                                crate::upstream::ConnectError::Tls(_) => LocalError::UpstreamTls,
                                _ => LocalError::ConnectFailed,
                            }));
                        }
                    }
                }
            };
            let (res, h) = up.write_all(std::mem::take(&mut up_head)).await;
            up_head = h;
            if res.is_err() {
                if reused && retry_safe {
                    fresh_only = true;
                    continue;
                }
                if retries_left > 0 && policy.on(Retry::RESET) {
                    retries_left -= 1;
                    ep.switch_if_other(cs);
                    continue;
                }
                return Err(fail(LocalError::UpstreamReset));
            }
            if req_framing != BodyFraming::None {
                if expect_continue {
                    let (ok, _) = self.send(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec()).await;
                    if !ok {
                        return Ok(Next::Close);
                    }
                }
                let buf = std::mem::take(&mut self.buf);
                let (res, buf) = body::forward(
                    &mut self.stream,
                    &mut up,
                    buf,
                    req_framing,
                    limits.downstream_idle_timeout,
                    // An upstream that stops reading the body: within the
                    // route timeout the request fails (504 below).
                    fwd.timeout,
                    false,
                )
                .await;
                self.buf = buf;
                match res {
                    Ok(t) => {
                        self.stats_rx(t.read);
                        self.req_bytes += t.written;
                    }
                    Err(BodyError::Framing) => {
                        return Err(Failure {
                            error: LocalError::BadRequest,
                            cluster: Some(cluster_idx),
                        })
                    }
                    Err(BodyError::DstError | BodyError::DstTimeout) => {
                        // The upstream may have answered early (413, 401):
                        // fall through and try to read its response.
                        body_unsent = true;
                    }
                    // The client went away or stalled mid-body: nothing to answer.
                    Err(BodyError::SrcClosed | BodyError::SrcError) => return Ok(Next::Close),
                    Err(BodyError::SrcTimeout) => return Err(fail(LocalError::RequestTimeout)),
                }
            }
            match read_response_head(
                &mut up,
                self.worker.bufs.get(),
                head.method,
                try_timeout,
                &mut self.resp_headers,
            )
            .await
            {
                Ok((resp, ubuf))
                    if retries_left > 0
                        && resp.status != 101
                        && policy.status_retriable(resp.status) =>
                {
                    // Another attempt instead of this answer; the connection
                    // still carries its body, so it is closed, not pooled.
                    self.resp_headers = resp.headers;
                    self.worker.bufs.put(ubuf);
                    retries_left -= 1;
                    ep.switch_if_other(cs);
                }
                Ok((resp, ubuf)) => break (up, resp, ubuf),
                Err((RespError::Closed { any_byte: false }, ubuf)) if reused && retry_safe => {
                    self.worker.bufs.put(ubuf);
                    fresh_only = true;
                }
                // A pooled connection used without the liveness peek may hold stray
                // bytes the upstream sent after its previous response (a body on a
                // HEAD answer, a late write): they are not this request's answer.
                Err((RespError::Bad, ubuf)) if reused && retry_safe => {
                    self.worker.bufs.put(ubuf);
                    fresh_only = true;
                }
                Err((RespError::Closed { .. }, ubuf))
                    if retries_left > 0 && policy.on(Retry::RESET) =>
                {
                    self.worker.bufs.put(ubuf);
                    retries_left -= 1;
                    ep.switch_if_other(cs);
                }
                Err((RespError::Timeout, ubuf))
                    if retries_left > 0
                        && policy.on(Retry::STATUS_5XX | Retry::GATEWAY_ERROR)
                        && deadline > Instant::now() =>
                {
                    // A per-try timeout is a gateway error to retry on.
                    self.worker.bufs.put(ubuf);
                    retries_left -= 1;
                    ep.switch_if_other(cs);
                }
                Err((e, ubuf)) => {
                    self.worker.bufs.put(ubuf);
                    return Err(fail(match e {
                        RespError::Timeout => LocalError::UpstreamTimeout,
                        RespError::Bad => LocalError::BadUpstreamResponse,
                        RespError::Closed { .. } => LocalError::UpstreamReset,
                    }));
                }
            }
        };

        // Phase 6: the response.
        let upgraded = resp.status == 101 && head.upgrade.is_some();
        if resp.status == 101 && !upgraded {
            self.worker.bufs.put(ubuf);
            return Err(fail(LocalError::BadUpstreamResponse));
        }
        let delimited = resp.framing != BodyFraming::UntilClose;
        // An HTTP/1.0 client cannot read chunked: de-chunk and close after.
        let dechunk = head.version_minor == 0 && resp.framing == BodyFraming::Chunked;
        let close = !head.keep_alive
            || !delimited
            || dechunk
            || body_unsent
            || self.worker.drain.is_fired();
        let mut out = Vec::with_capacity(resp.head_len + 128);
        head::downstream_response(
            &mut out,
            &ubuf,
            &resp,
            &head::ResponseEdits {
                route,
                request_id,
                close,
                http10_keep_alive: head.version_minor == 0 && head.keep_alive && !close,
                upgrade: upgraded,
                dechunk,
            },
        );
        ubuf.drain(..resp.head_len);
        let (resp_status, mut resp_framing, resp_keep_alive) =
            (resp.status, resp.framing, resp.keep_alive);
        // Body bytes already read go out in the same write as the head: a
        // small response costs one write, not two.
        if let (BodyFraming::ContentLength(n), false) = (resp_framing, upgraded) {
            let take = n.min(ubuf.len() as u64) as usize;
            out.extend_from_slice(&ubuf[..take]);
            ubuf.drain(..take);
            resp_framing = match n - take as u64 {
                0 => BodyFraming::None,
                rest => BodyFraming::ContentLength(rest),
            };
        }
        self.resp_headers = resp.headers;
        let head_out = out.len() as u64;
        let (ok, _) = self.send(out).await;
        epoch.count_request(self.listener, Some(route), Some(cluster_idx), resp_status);
        if !ok {
            self.worker.bufs.put(ubuf);
            return Ok(Next::Close);
        }

        if upgraded {
            self.log(
                info,
                resp_status,
                head_out,
                start,
                Some(ep.addr),
                &route.name,
                request_id,
            );
            cs.stats.duration.observe(start.elapsed());
            return Ok(Next::Upgrade(up, ubuf));
        }

        let mut down = &mut self.stream;
        let (res, ubuf) = body::forward(
            &mut up,
            &mut down,
            ubuf,
            resp_framing,
            fwd.timeout,
            self.send_timeout,
            dechunk,
        )
        .await;
        if matches!(res, Err(BodyError::DstTimeout)) {
            self.stats.send_timeouts.inc();
        }
        let body_ok = res.is_ok();
        if matches!(
            res,
            Err(BodyError::SrcClosed
                | BodyError::SrcError
                | BodyError::SrcTimeout
                | BodyError::Framing)
        ) {
            cs.stats.body_errors.inc();
        }
        let sent = res.map_or(0, |t| t.written);
        self.stats.tx.add(sent);
        cs.stats.duration.observe(start.elapsed());
        self.log(
            info,
            resp_status,
            head_out + sent,
            start,
            Some(ep.addr),
            &route.name,
            request_id,
        );
        let reusable = body_ok && resp_keep_alive && delimited && ubuf.is_empty() && !body_unsent;
        self.worker.bufs.put(ubuf);
        if !body_ok {
            // Headers are out: the only honest signal left is to close.
            return Ok(Next::Close);
        }
        if reusable {
            ep.checkin(up, cs.config.max_idle_per_endpoint);
        }
        Ok(if body_unsent {
            // Let the answer reach a client still sending its body.
            Next::LingerClose
        } else if close {
            Next::Close
        } else {
            self.after(head, delimited)
        })
    }

    /// After a 101: bytes already buffered on either side go first, then the
    /// connection is a byte tunnel until both sides close.
    async fn tunnel(mut self, mut up: Stream, ubuf: Vec<u8>) {
        let pending = std::mem::take(&mut self.buf);
        let t = self.send_timeout;
        let (r1, pending) = crate::io::write_all_within(&mut up, pending, t).await;
        let (r2, ubuf) = crate::io::write_all_within(&mut self.stream, ubuf, t).await;
        if let Err(e) = &r2 {
            self.write_failed(e);
        }
        if r1.is_err() || r2.is_err() {
            return;
        }
        // limits.downstream_send_timeout bounds a stalled write either way.
        let (end, moved, (b1, b2)) = crate::io::tunnel(
            self.stream,
            up,
            UPGRADE_IDLE,
            t,
            (reuse(pending), reuse(ubuf)),
        )
        .await;
        if end == (crate::io::TunnelEnd::SendTimeout { to_a: true }) {
            self.stats.send_timeouts.inc();
        }
        self.stats.rx.add(moved.a_to_b);
        self.stats.tx.add(moved.b_to_a);
        self.worker.bufs.put(b1);
        self.worker.bufs.put(b2);
    }
}

fn reuse(mut b: Vec<u8>) -> Vec<u8> {
    b.clear();
    if b.capacity() < BUF_SIZE {
        b.reserve(BUF_SIZE);
    }
    b
}

/// What the access log needs of a request, copied before its head bytes are
/// consumed; only made when an access log is configured.
struct ReqInfo {
    method: Vec<u8>,
    authority: Vec<u8>,
    target: Vec<u8>,
}

/// Why forwarding failed, for the status and the metrics.
/// The endpoint a request is being sent to, counted as in flight (for the
/// least-request balancer) until dropped or switched for a retry.
struct InFlight(Rc<Endpoint>);

impl InFlight {
    fn new(ep: Rc<Endpoint>) -> Self {
        ep.begin();
        InFlight(ep)
    }

    fn switch(&mut self, to: Rc<Endpoint>) {
        self.0.end();
        to.begin();
        self.0 = to;
    }

    /// For a retry: another endpoint when the cluster has a live one, else
    /// this one again.
    fn switch_if_other(&mut self, cs: &ClusterState) {
        if let Some(o) = cs.pick_other(&self.0) {
            self.switch(o.clone());
        }
    }
}

impl std::ops::Deref for InFlight {
    type Target = Rc<Endpoint>;
    fn deref(&self) -> &Rc<Endpoint> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end();
    }
}

struct Failure {
    error: LocalError,
    cluster: Option<usize>,
}

enum RespError {
    Timeout,
    Bad,
    Closed { any_byte: bool },
}

/// Reads until a complete final response head is buffered. Informational
/// (1xx other than 101) heads are skipped: we answered 100-continue ourselves
/// and HTTP/1.0 clients must not see them.
async fn read_response_head(
    up: &mut Stream,
    mut buf: Vec<u8>,
    method: Method,
    timeout: Duration,
    scratch: &mut Vec<codec::Header>,
) -> Result<(ResponseHead, Vec<u8>), (RespError, Vec<u8>)> {
    let deadline = Instant::now() + timeout;
    let mut any_byte = false;
    loop {
        if !buf.is_empty() {
            match codec::parse_response_head(&buf, &RESPONSE_HEAD_LIMITS, method, scratch) {
                Ok(Some(r)) if (100..200).contains(&r.status) && r.status != 101 => {
                    buf.drain(..r.head_len);
                    *scratch = r.headers;
                    continue;
                }
                Ok(Some(r)) => return Ok((r, buf)),
                Ok(None) => {}
                Err(_) => return Err((RespError::Bad, buf)),
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err((RespError::Timeout, buf));
        }
        match monoio::time::timeout(left, read_append(up, buf, 4096)).await {
            Err(_) => return Err((RespError::Timeout, Vec::new())),
            Ok((Ok(0), b)) | Ok((Err(_), b)) => return Err((RespError::Closed { any_byte }, b)),
            Ok((Ok(_), b)) => {
                any_byte = true;
                buf = b;
            }
        }
    }
}

/// 32 lower-case hex digits from the worker's RNG.
pub(crate) fn generate_request_id(out: &mut [u8; 32]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let v = fastrand::u128(..);
    for (i, b) in out.iter_mut().enumerate() {
        *b = HEX[((v >> (i * 4)) & 0xf) as usize];
    }
    &out[..]
}
