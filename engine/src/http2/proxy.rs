//! One downstream HTTP/2 stream: route, authorize, forward to an HTTP/2 or
//! HTTP/1.1 upstream, relay the response with its trailers.
//!
//! Flow control is end to end: a DATA frame's window is given back to the
//! sender only once its bytes have been handed to the other side, so a slow
//! reader slows the writer instead of filling the proxy's memory. A reset on
//! either side is passed to the other.

use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::{HeaderMap, Request, Response};
use monoio::io::AsyncWriteRentExt;

use super::{is_grpc, Downstream, Proto, ORIG_PROTO};
use crate::access_log::Entry;
use crate::config::ListenerKind;
use crate::conn::Conn;
use crate::http1::codec::{self, BodyFraming, ChunkedState, HeaderKind};
use crate::router::{Action, Forward, Retry, Route};
use crate::upstream::{ClusterState, ConnectError, Endpoint};
use crate::worker::EpochLocal;

/// Response heads from HTTP/1.1 upstreams (as in http1).
const RESPONSE_HEAD_LIMITS: codec::Limits = codec::Limits {
    max_head_bytes: 64 * 1024,
    max_headers: 200,
};
/// A body that stops moving for this long (either way) ends the stream.
const BODY_IDLE: Duration = Duration::from_secs(300);
/// Chunked trailer sections read from HTTP/1.1 upstreams.
const MAX_TRAILER_BYTES: usize = 16 * 1024;

pub(super) async fn stream(
    d: Rc<Downstream>,
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    // The request's state machine is several KB: it is built in place in a
    // box, so the task spawned per stream (moved a few times on its way into
    // monoio's task cell) stays small.
    Box::pin(handle(&d, req, &mut respond)).await;
    let n = d.active.get() - 1;
    d.active.set(n);
    if n == 0 {
        d.idle_since.set(Instant::now());
    }
}

/// What the proxy answers itself.
struct Local<'a> {
    status: u16,
    /// `ringmesh-error` code.
    error: Option<&'a str>,
    body: &'a [u8],
    content_type: &'a str,
    extra: &'a [crate::router::HeaderEdit],
}

struct Req<'a> {
    d: &'a Downstream,
    epoch: &'a Rc<EpochLocal>,
    listener: usize,
    start: Instant,
    grpc: bool,
    head_only: bool,
    request_id: HeaderValue,
    method: http::Method,
    authority: String,
    path: String,
    bytes_in: u64,
}

impl Req<'_> {
    /// Sends a proxy-made answer. A gRPC call gets HTTP 200 with the status
    /// in a trailers-only response, which every gRPC client reads.
    /// `at`: the route and cluster the answer is counted under.
    fn local(
        &self,
        respond: &mut SendResponse<Bytes>,
        l: &Local<'_>,
        at: (Option<&Route>, Option<usize>),
    ) -> u64 {
        let mut b = Response::builder();
        let h = b.headers_mut().expect("fresh builder");
        h.insert("x-request-id", self.request_id.clone());
        if let Some(e) = l.error {
            h.insert("ringmesh-error", HeaderValue::from_static(static_str(e)));
        }
        for (n, v) in l.extra {
            if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n), HeaderValue::from_bytes(v)) {
                h.append(n, v);
            }
        }
        if self.grpc {
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            let code = if l.status == 200 {
                0
            } else {
                super::grpc_status_for(l.status)
            };
            h.insert("grpc-status", HeaderValue::from(code));
            let msg = String::from_utf8_lossy(l.body);
            let msg = grpc_message(msg.trim_end());
            if let Ok(v) = HeaderValue::from_str(&msg) {
                h.insert("grpc-message", v);
            }
            let resp = b.status(200).body(()).expect("valid response");
            let _ = respond.send_response(resp, true);
            self.epoch.count_grpc(self.listener, at.0, at.1, code);
            return 0;
        }
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_str(l.content_type).unwrap_or(HeaderValue::from_static("text/plain")),
        );
        h.insert(CONTENT_LENGTH, HeaderValue::from(l.body.len()));
        let resp = b.status(l.status).body(()).expect("valid response");
        let empty = l.body.is_empty() || self.head_only;
        if let Ok(mut tx) = respond.send_response(resp, empty) {
            if !empty {
                let _ = tx.send_data(Bytes::copy_from_slice(l.body), true);
            }
        }
        l.body.len() as u64
    }

    fn local_error(
        &self,
        respond: &mut SendResponse<Bytes>,
        status: u16,
        code: &str,
        at: (Option<&Route>, Option<usize>),
    ) -> u64 {
        let body = format!(
            "{} {}: {}\n",
            status,
            crate::http1::reason_phrase(status),
            code
        );
        self.local(
            respond,
            &Local {
                status,
                error: Some(code),
                body: body.as_bytes(),
                content_type: "text/plain",
                extra: &[],
            },
            at,
        )
    }

    fn count_grpc(&self, route: Option<(&Route, usize)>, status: u32) {
        self.epoch.count_grpc(
            self.listener,
            route.map(|r| r.0),
            route.map(|r| r.1),
            status,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn log(
        &self,
        status: u16,
        bytes_out: u64,
        upstream: Option<std::net::SocketAddr>,
        route: &str,
    ) {
        if self.epoch.config.access_log.is_none() {
            return;
        }
        let e = Entry {
            method: self.method.as_str().as_bytes(),
            authority: self.authority.as_bytes(),
            path: self.path.as_bytes(),
            status,
            bytes_in: self.bytes_in,
            bytes_out,
            duration_us: self.start.elapsed().as_micros() as u64,
            upstream,
            route,
            request_id: self.request_id.as_bytes(),
            downstream: self.d.peer,
        };
        self.d.worker.access_log.send(e.to_json());
    }
}

/// `ringmesh-error` codes are a fixed set (http1::LocalError codes).
fn static_str(s: &str) -> &'static str {
    const CODES: &[&str] = &[
        "bad_request",
        "no_route",
        "method_not_allowed",
        "no_healthy_upstream",
        "upstream_connect_failed",
        "upstream_tls_handshake_failed",
        "rbac_access_denied",
        "upstream_reset",
        "bad_upstream_response",
        "upstream_timeout",
    ];
    CODES.iter().find(|c| **c == s).copied().unwrap_or("error")
}

/// grpc-message is percent-encoded (gRPC over HTTP/2 spec).
fn grpc_message(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

struct Lookup<'a>(&'a HeaderMap);

impl crate::router::HeaderLookup for Lookup<'_> {
    fn header(&self, lower_name: &[u8]) -> Option<&[u8]> {
        let n = HeaderName::from_bytes(lower_name).ok()?;
        self.0.get(n).map(|v| v.as_bytes())
    }
}

async fn handle(d: &Downstream, req: Request<RecvStream>, respond: &mut SendResponse<Bytes>) {
    let epoch = d.worker.current();
    let Some(listener) = epoch.listener_at(d.listener_addr) else {
        respond.send_reset(Reason::REFUSED_STREAM);
        return;
    };
    let (mut parts, body) = req.into_parts();
    // The mesh hop tells what the original client spoke; only a mesh peer
    // may say so.
    let orig = parts.headers.remove(ORIG_PROTO);
    let down = match orig {
        Some(v) if d.identity.is_some() && v.as_bytes() == b"HTTP/1.1" => Proto::Http1,
        _ => Proto::Http2,
    };
    let grpc = is_grpc(parts.headers.get(CONTENT_TYPE).map(|v| v.as_bytes()));
    let authority = match parts.uri.authority() {
        Some(a) => a.as_str().to_owned(),
        None => parts
            .headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_owned(),
    };
    let path = parts.uri.path().to_owned();
    let request_id = match parts.headers.get("x-request-id") {
        Some(v) if !v.is_empty() && v.len() <= 128 => v.clone(),
        _ => {
            let mut id = [0u8; 32];
            HeaderValue::from_bytes(crate::http1::generate_request_id(&mut id)).expect("hex id")
        }
    };
    let r = Req {
        d,
        epoch: &epoch,
        listener,
        start: Instant::now(),
        grpc,
        head_only: parts.method == http::Method::HEAD,
        request_id,
        method: parts.method.clone(),
        authority,
        path,
        bytes_in: 0,
    };
    let l = &epoch.config.listeners[listener];
    let ListenerKind::Http(table) = &l.kind else {
        respond.send_reset(Reason::REFUSED_STREAM);
        return;
    };

    if !l.authz.is_empty() {
        let dec = epoch.authorize(
            listener,
            &crate::authz::Subject {
                identity: d.identity.as_deref(),
                http: Some(crate::authz::HttpSubject {
                    method: parts.method.as_str().as_bytes(),
                    path: r.path.as_bytes(),
                }),
                port: d.listener_addr.port(),
            },
        );
        if !dec.allowed() {
            let body = l.authz.denial_body(dec);
            let n = r.local(
                respond,
                &Local {
                    status: 403,
                    error: Some("rbac_access_denied"),
                    body: body.as_bytes(),
                    content_type: "text/plain",
                    extra: &[],
                },
                (None, None),
            );
            epoch.count_request(listener, None, None, 403);
            r.log(403, n, None, "");
            return;
        }
    }

    let route = table.select(
        r.authority.as_bytes(),
        parts.method.as_str().as_bytes(),
        r.path.as_bytes(),
        &Lookup(&parts.headers),
    );
    let Some(route) = route else {
        let n = r.local_error(respond, 404, "no_route", (None, None));
        epoch.count_request(listener, None, None, 404);
        r.log(404, n, None, "");
        return;
    };
    if parts.method == http::Method::CONNECT {
        let n = r.local_error(respond, 405, "method_not_allowed", (Some(route), None));
        epoch.count_request(listener, Some(route), None, 405);
        r.log(405, n, None, &route.name);
        return;
    }
    let fwd = match &route.action {
        Action::Direct(dr) => {
            let n = r.local(
                respond,
                &Local {
                    status: dr.status,
                    error: None,
                    body: &dr.body,
                    content_type: &dr.content_type,
                    extra: &route.response_headers_to_add,
                },
                (Some(route), None),
            );
            epoch.count_request(listener, Some(route), None, dr.status);
            r.log(dr.status, n, None, &route.name);
            return;
        }
        Action::Forward(f) => f,
    };

    // The upstream request's head: the client's, with the proxy's edits.
    edit_request(&mut parts, d, route, fwd, &r);
    let timeout = grpc_timeout(&parts.headers).map_or(fwd.timeout, |t| t.min(fwd.timeout));
    forward(&r, parts, body, respond, route, fwd, timeout, down).await;
}

/// Header edits on the way up: hop-by-hop fields out, x-forwarded-*,
/// x-request-id, XFCC, the route's additions and removals, prefix rewrite.
fn edit_request(
    parts: &mut http::request::Parts,
    d: &Downstream,
    route: &Route,
    fwd: &Forward,
    r: &Req<'_>,
) {
    let h = &mut parts.headers;
    strip_hop_by_hop(h);
    let xff = match h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {}", d.client_ip),
        None => d.client_ip.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        h.insert("x-forwarded-for", v);
    }
    h.insert(
        "x-forwarded-proto",
        HeaderValue::from_static(if d.https { "https" } else { "http" }),
    );
    h.insert("x-request-id", r.request_id.clone());
    if let Some(x) = &d.xfcc {
        h.remove("x-forwarded-client-cert");
        if !x.is_empty() {
            if let Ok(v) = HeaderValue::from_bytes(x) {
                h.insert("x-forwarded-client-cert", v);
            }
        }
    }
    for n in &route.request_headers_to_remove {
        if let Ok(n) = HeaderName::from_bytes(n) {
            h.remove(n);
        }
    }
    for (n, v) in &route.request_headers_to_add {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n), HeaderValue::from_bytes(v)) {
            h.append(n, v);
        }
    }
    if let (crate::router::PathMatcher::Prefix(p), Some(new)) = (&route.path, &fwd.prefix_rewrite) {
        let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        if let Some(rest) = pq.as_bytes().get(p.len()..) {
            let mut np = new.to_vec();
            np.extend_from_slice(rest);
            if let Ok(uri) = http::Uri::try_from(np) {
                let mut up = http::uri::Parts::from(uri);
                up.scheme = parts.uri.scheme().cloned();
                up.authority = parts.uri.authority().cloned();
                if let Ok(u) = http::Uri::from_parts(up) {
                    parts.uri = u;
                }
            }
        }
    }
}

/// Removes connection-specific fields (RFC 9110 §7.6.1), including the ones
/// a `Connection` header names. `te: trailers` stays (gRPC needs it).
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
    ] {
        h.remove(n);
    }
    if h.get(http::header::TE)
        .is_some_and(|v| v.as_bytes() != b"trailers")
    {
        h.remove(http::header::TE);
    }
}

/// `grpc-timeout: 1S` / `250m` / `100u` ... (gRPC over HTTP/2). Public as a
/// fuzzing entry point (fuzz target `http2_request`).
pub fn grpc_timeout(h: &HeaderMap) -> Option<Duration> {
    let v = h.get("grpc-timeout")?.as_bytes();
    let (num, unit) = v.split_at(v.len().checked_sub(1)?);
    if num.is_empty() || num.len() > 8 {
        return None;
    }
    let n: u64 = std::str::from_utf8(num).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(n.saturating_mul(3600)),
        b"M" => Duration::from_secs(n.saturating_mul(60)),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// What went wrong before a response came.
enum Fail {
    Connect(ConnectError),
    Reset,
    /// The upstream certainly did not take the request (a stale pooled
    /// HTTP/1.1 connection, a refused stream, a stream above a GOAWAY): it
    /// may be sent again whatever the route's retry policy says.
    Unprocessed,
    Timeout,
    BadResponse,
    /// The client went away: nothing to answer.
    ClientGone,
}

impl Fail {
    fn status_code(&self) -> (u16, &'static str) {
        match self {
            Fail::Connect(ConnectError::Tls(_)) => (503, "upstream_tls_handshake_failed"),
            Fail::Connect(_) => (503, "upstream_connect_failed"),
            Fail::Reset | Fail::Unprocessed => (502, "upstream_reset"),
            Fail::Timeout => (504, "upstream_timeout"),
            Fail::BadResponse => (502, "bad_upstream_response"),
            Fail::ClientGone => (499, ""),
        }
    }
}

/// A response head from either kind of upstream, with its body source.
enum UpResponse {
    H2(Response<RecvStream>, super::client::Slot),
    H1 {
        parts: http::response::Parts,
        conn: Conn,
        buf: Vec<u8>,
        framing: BodyFraming,
        keep_alive: bool,
    },
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    r: &Req<'_>,
    mut parts: http::request::Parts,
    body: RecvStream,
    respond: &mut SendResponse<Bytes>,
    route: &Route,
    fwd: &Forward,
    timeout: Duration,
    down: Proto,
) {
    let epoch = r.epoch;
    let cluster_idx = fwd.pick(fastrand::u32(..fwd.total_weight.max(1)));
    let cs = epoch.clusters[cluster_idx].clone();
    let answer_fail = |respond: &mut SendResponse<Bytes>, f: &Fail| {
        let (status, code) = f.status_code();
        if status == 499 {
            epoch.count_request(r.listener, Some(route), Some(cluster_idx), status);
            return;
        }
        let n = r.local_error(respond, status, code, (Some(route), Some(cluster_idx)));
        epoch.count_request(r.listener, Some(route), Some(cluster_idx), status);
        r.log(status, n, None, &route.name);
    };
    let Some(mut ep) = cs.pick().cloned() else {
        let n = r.local_error(
            respond,
            503,
            "no_healthy_upstream",
            (Some(route), Some(cluster_idx)),
        );
        epoch.count_request(r.listener, Some(route), Some(cluster_idx), 503);
        r.log(503, n, None, &route.name);
        return;
    };
    // The request body can be sent once; a request without one may be
    // retried by the route's policy.
    let whole = body.is_end_stream();
    let policy = if whole { fwd.retry } else { Retry::default() };
    let mut retries_left = policy.attempts;
    let mut failover_left = 1u8;
    // Sends again of a request the upstream never took (bounded: every
    // connection of a pool may be going away at once).
    let mut unprocessed_left = 2u8;
    let idempotent = codec::Method::from_token(parts.method.as_str().as_bytes()).is_idempotent();
    let deadline = Instant::now() + timeout;
    let mut body_slot = Some(body);
    let limits = &epoch.config.limits.http2;

    let resp = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            answer_fail(respond, &Fail::Timeout);
            return;
        }
        let try_timeout = policy.per_try_timeout.map_or(left, |t| t.min(left));
        ep.begin();
        let attempt = if super::upstream_h2(&cs, ep.addr, down) {
            send_h2(
                &cs,
                &ep,
                limits,
                &mut parts,
                retries_left == 0 && unprocessed_left == 0,
                &mut body_slot,
                (down, idempotent),
                try_timeout,
                respond,
            )
            .await
        } else {
            // Boxed: the HTTP/1.1 branch's state stays out of the HTTP/2
            // path's future.
            Box::pin(send_h1(
                &cs,
                &ep,
                &parts,
                &mut body_slot,
                idempotent,
                try_timeout,
                respond,
            ))
            .await
        };
        ep.end();
        match attempt {
            Ok(resp) => {
                let status = match &resp {
                    UpResponse::H2(x, _) => x.status().as_u16(),
                    UpResponse::H1 { parts, .. } => parts.status.as_u16(),
                };
                if retries_left > 0 && policy.status_retriable(status) {
                    retries_left -= 1;
                    if let Some(o) = cs.pick_other(&ep).cloned() {
                        ep = o;
                    }
                    continue;
                }
                break resp;
            }
            Err(Fail::ClientGone) => {
                answer_fail(respond, &Fail::ClientGone);
                return;
            }
            Err(Fail::Unprocessed) if unprocessed_left > 0 && body_slot.is_some() => {
                unprocessed_left -= 1;
                if let Some(o) = cs.pick_other(&ep).cloned() {
                    ep = o;
                }
                continue;
            }
            Err(Fail::Connect(e)) => {
                let other = cs.pick_other(&ep).cloned();
                if let (true, Some(o)) = (failover_left > 0, &other) {
                    failover_left -= 1;
                    ep = o.clone();
                    continue;
                }
                if retries_left > 0 && policy.on(Retry::CONNECT_FAILURE) {
                    retries_left -= 1;
                    if let Some(o) = other {
                        ep = o;
                    }
                    continue;
                }
                answer_fail(respond, &Fail::Connect(e));
                return;
            }
            Err(f) => {
                let flag = match f {
                    Fail::Timeout => Retry::GATEWAY_ERROR,
                    _ => Retry::RESET | Retry::GATEWAY_ERROR,
                };
                let per_try_expired =
                    matches!(f, Fail::Timeout) && policy.per_try_timeout.is_some();
                if retries_left > 0
                    && body_slot.is_some()
                    && (policy.on & flag != 0 || per_try_expired)
                    && !deadline.saturating_duration_since(Instant::now()).is_zero()
                {
                    retries_left -= 1;
                    if let Some(o) = cs.pick_other(&ep).cloned() {
                        ep = o;
                    }
                    continue;
                }
                answer_fail(respond, &f);
                return;
            }
        }
    };
    let upstream = Some(ep.addr);
    let (status, grpc_status, bytes_out) = relay_response(r, resp, respond, route, &cs, &ep).await;
    cs.stats.duration.observe(r.start.elapsed());
    epoch.count_request(r.listener, Some(route), Some(cluster_idx), status);
    if r.grpc {
        if let Some(g) = grpc_status {
            r.count_grpc(Some((route, cluster_idx)), g);
        }
    }
    r.log(status, bytes_out, upstream, &route.name);
}

/// Waits for `fut` unless the client resets the stream or `timeout` ends.
async fn race<T>(
    respond: &mut SendResponse<Bytes>,
    timeout: Duration,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, Fail> {
    let reset = poll_fn(|cx| match respond.poll_reset(cx) {
        Poll::Ready(_) => Poll::Ready(()),
        Poll::Pending => Poll::Pending,
    });
    monoio::select! {
        x = monoio::time::timeout(timeout, fut) => x.map_err(|_| Fail::Timeout),
        _ = reset => Err(Fail::ClientGone),
    }
}

#[allow(clippy::too_many_arguments)]
async fn send_h2(
    cs: &ClusterState,
    ep: &Endpoint,
    limits: &crate::config::Http2Limits,
    parts: &mut http::request::Parts,
    last: bool,
    body: &mut Option<RecvStream>,
    (down, idempotent): (Proto, bool),
    timeout: Duration,
    respond: &mut SendResponse<Bytes>,
) -> Result<UpResponse, Fail> {
    let (mut send, slot) =
        match race(respond, timeout, super::client::acquire(cs, ep, limits)).await? {
            Ok(x) => x,
            Err(e) => return Err(Fail::Connect(e)),
        };
    let mesh_hop = cs
        .config
        .tls
        .as_ref()
        .is_some_and(|t| t.applies_to(ep.addr));
    let scheme = if mesh_hop {
        http::uri::Scheme::HTTPS
    } else {
        http::uri::Scheme::HTTP
    };
    // An HTTP/2 client's URI already has scheme and authority: reuse it.
    let uri = match (parts.uri.scheme(), parts.uri.authority()) {
        (Some(s), Some(_)) if *s == scheme => parts.uri.clone(),
        _ => {
            let authority = parts
                .uri
                .authority()
                .map(|a| a.as_str())
                .or_else(|| parts.headers.get(HOST).and_then(|h| h.to_str().ok()))
                .unwrap_or("localhost");
            let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            http::Uri::builder()
                .scheme(scheme)
                .authority(authority)
                .path_and_query(pq)
                .build()
                .map_err(|_| Fail::BadResponse)?
        }
    };
    // The last attempt takes the headers; one that may be retried copies.
    let mut headers = if last {
        std::mem::take(&mut parts.headers)
    } else {
        parts.headers.clone()
    };
    headers.remove(HOST);
    if mesh_hop && down == Proto::Http1 {
        headers.insert(ORIG_PROTO, HeaderValue::from_static("HTTP/1.1"));
    }
    let mut req = Request::new(());
    *req.method_mut() = parts.method.clone();
    *req.version_mut() = http::Version::HTTP_2;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    let eos = body.as_ref().is_none_or(|b| b.is_end_stream());
    let (resp, tx) = match send.send_request(req, eos) {
        Ok(x) => x,
        Err(_) => {
            // Nothing was sent.
            slot.broken();
            return Err(Fail::Unprocessed);
        }
    };
    if !eos {
        if let Some(src) = body.take() {
            monoio::spawn(async move {
                let _ = pump_h2(src, tx).await;
            });
        }
    }
    match race(respond, timeout, resp).await? {
        Ok(resp) => Ok(UpResponse::H2(resp, slot)),
        Err(e) => {
            if e.is_io() || e.is_go_away() {
                slot.broken();
            }
            if super::client::unprocessed(&e, idempotent && eos) {
                return Err(Fail::Unprocessed);
            }
            Err(Fail::Reset)
        }
    }
}

/// Moves an HTTP/2 body from `src` to `tx` with its trailers, giving window
/// back to the sender only for bytes handed on; a reset either way is
/// passed to the other side.
pub async fn pump_h2(mut src: RecvStream, mut tx: SendStream<Bytes>) -> Result<u64, ()> {
    let mut moved = 0u64;
    loop {
        let ev = poll_fn(|cx| {
            if let Poll::Ready(r) = tx.poll_reset(cx) {
                return Poll::Ready(Err(r.unwrap_or(Reason::CANCEL)));
            }
            src.poll_data(cx).map(Ok)
        });
        match monoio::time::timeout(BODY_IDLE, ev).await {
            Err(_) => {
                tx.send_reset(Reason::CANCEL);
                return Err(());
            }
            Ok(Err(reason)) => {
                // The receiver reset: tell the sender.
                drop(src);
                let _ = reason;
                return Err(());
            }
            Ok(Ok(Some(Ok(chunk)))) => {
                let n = chunk.len();
                if send_all(&mut tx, chunk).await.is_err() {
                    return Err(());
                }
                let _ = src.flow_control().release_capacity(n);
                moved += n as u64;
            }
            Ok(Ok(Some(Err(e)))) => {
                tx.send_reset(e.reason().unwrap_or(Reason::CANCEL));
                return Err(());
            }
            Ok(Ok(None)) => break,
        }
    }
    match poll_fn(|cx| src.poll_trailers(cx)).await {
        Ok(Some(t)) => tx.send_trailers(t).map_err(|_| ())?,
        Ok(None) => tx.send_data(Bytes::new(), true).map_err(|_| ())?,
        Err(e) => {
            tx.send_reset(e.reason().unwrap_or(Reason::CANCEL));
            return Err(());
        }
    }
    Ok(moved)
}

/// Sends `data` as the window allows (never more than the peer granted, so
/// h2 buffers at most one chunk).
pub async fn send_all(tx: &mut SendStream<Bytes>, mut data: Bytes) -> Result<(), ()> {
    while !data.is_empty() {
        tx.reserve_capacity(data.len());
        let cap = poll_fn(|cx| {
            if tx.poll_reset(cx).is_ready() {
                return Poll::Ready(None);
            }
            tx.poll_capacity(cx)
        });
        match monoio::time::timeout(BODY_IDLE, cap).await {
            Ok(Some(Ok(0))) => continue,
            Ok(Some(Ok(n))) => {
                let part = data.split_to(n.min(data.len()));
                tx.send_data(part, false).map_err(|_| ())?;
            }
            _ => {
                tx.send_reset(Reason::CANCEL);
                return Err(());
            }
        }
    }
    Ok(())
}

async fn send_h1(
    cs: &ClusterState,
    ep: &Endpoint,
    parts: &http::request::Parts,
    body: &mut Option<RecvStream>,
    idempotent: bool,
    timeout: Duration,
    respond: &mut SendResponse<Bytes>,
) -> Result<UpResponse, Fail> {
    let eos = body.as_ref().is_none_or(|b| b.is_end_stream());
    let pooled = ep.checkout(cs.config.idle_timeout, Duration::ZERO);
    // A pooled connection the upstream closed while it sat idle fails
    // before any response byte; a request safe to repeat is sent again.
    let stale_ok = pooled.is_some() && eos && idempotent;
    let stale = || {
        if stale_ok {
            Fail::Unprocessed
        } else {
            Fail::Reset
        }
    };
    let mut conn = match pooled {
        Some(c) => {
            cs.stats.pool_hits.inc();
            c
        }
        None => {
            cs.stats.pool_misses.inc();
            match race(respond, timeout, crate::upstream::connect(cs, ep)).await? {
                Ok(c) => c,
                Err(e) => return Err(Fail::Connect(e)),
            }
        }
    };
    let (head, chunked) = h1_request_head(parts, eos);
    let (res, _) = conn.write_all(head).await;
    if res.is_err() {
        return Err(stale());
    }
    if !eos {
        if let Some(mut src) = body.take() {
            // An upstream that stops reading the body fails the request
            // within the route timeout.
            match h2_body_to_h1(&mut src, &mut conn, chunked, timeout).await {
                Ok(_) => {}
                Err(H2ToH1Error::H2) => return Err(Fail::ClientGone),
                Err(H2ToH1Error::H1 | H2ToH1Error::H1Stalled) => return Err(Fail::Reset),
            }
        }
    }
    // The response head (1xx skipped), under the timeout.
    let method = codec::Method::from_token(parts.method.as_str().as_bytes());
    let read = async {
        let mut buf = Vec::with_capacity(crate::worker::BUF_SIZE);
        let mut headers = Vec::new();
        loop {
            if !buf.is_empty() {
                match codec::parse_response_head(&buf, &RESPONSE_HEAD_LIMITS, method, &mut headers)
                {
                    Ok(Some(h)) if (100..200).contains(&h.status) && h.status != 101 => {
                        buf.drain(..h.head_len);
                        continue;
                    }
                    Ok(Some(h)) => return Ok((h, buf)),
                    Ok(None) => {}
                    Err(_) => return Err(Fail::BadResponse),
                }
            }
            let first = buf.is_empty();
            let (res, b) = crate::io::read_append(&mut conn, buf, 4096).await;
            buf = b;
            match res {
                Ok(0) | Err(_) if first => return Err(stale()),
                Ok(0) | Err(_) => return Err(Fail::Reset),
                Ok(_) => {}
            }
        }
    };
    let (h, mut buf) = race(respond, timeout, read).await??;
    let mut rb = Response::builder().status(h.status);
    let hm = rb.headers_mut().expect("fresh builder");
    for hd in &h.headers {
        if hd.hop_by_hop {
            continue;
        }
        let name = hd.name.get(&buf);
        let mut value = hd.value.get(&buf);
        if hd.kind == HeaderKind::ContentLength {
            // Once and canonical ("02", "2, 2" and repeats are accepted by the codec;
            // an HTTP/2 client must see a single number).
            if hm.contains_key(CONTENT_LENGTH) {
                continue;
            }
            value = crate::http1::canonical_length(value);
        }
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            hm.append(n, v);
        }
    }
    strip_hop_by_hop(hm);
    let parts = rb.body(()).map_err(|_| Fail::BadResponse)?.into_parts().0;
    buf.drain(..h.head_len);
    let framing = if parts.status == 204 || parts.status == 304 {
        BodyFraming::None
    } else {
        h.framing
    };
    Ok(UpResponse::H1 {
        parts,
        conn,
        buf,
        framing,
        keep_alive: h.keep_alive,
    })
}

/// The HTTP/1.1 head for an HTTP/2 request (headers already edited):
/// origin-form target, Host from :authority, chunked when a body of unknown
/// length follows (`eos`: the request has no body). Returns the head and
/// whether the body goes chunked. Public as a fuzzing entry point (fuzz
/// target `http2_request`).
pub fn h1_request_head(parts: &http::request::Parts, eos: bool) -> (Vec<u8>, bool) {
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(parts.method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(
        parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .as_bytes(),
    );
    head.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    match parts.uri.authority() {
        Some(a) => head.extend_from_slice(a.as_str().as_bytes()),
        None => head.extend_from_slice(parts.headers.get(HOST).map_or(&b""[..], |h| h.as_bytes())),
    }
    head.extend_from_slice(b"\r\n");
    let mut has_length = false;
    for (n, v) in &parts.headers {
        if n == HOST || n == http::header::TE {
            continue;
        }
        has_length |= n == CONTENT_LENGTH;
        head.extend_from_slice(n.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(v.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    let chunked = !eos && !has_length;
    if chunked {
        head.extend_from_slice(b"transfer-encoding: chunked\r\n");
    } else if eos
        && !has_length
        && parts.method != http::Method::GET
        && parts.method != http::Method::HEAD
    {
        head.extend_from_slice(b"content-length: 0\r\n");
    }
    head.extend_from_slice(b"\r\n");
    (head, chunked)
}

/// The end of a chunked body: the last chunk, the trailer fields, the final
/// CRLF. Public as a fuzzing entry point (fuzz target `http2_request`).
pub fn last_chunk(out: &mut Vec<u8>, trailers: Option<&HeaderMap>) {
    out.extend_from_slice(b"0\r\n");
    for (n, v) in trailers.into_iter().flatten() {
        out.extend_from_slice(n.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Why [`h2_body_to_h1`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum H2ToH1Error {
    /// The HTTP/2 side failed (reset, idle).
    H2,
    /// A write to the HTTP/1.1 side failed.
    H1,
    /// A write to the HTTP/1.1 side made no progress for the send timeout.
    H1Stalled,
}

/// Writes an HTTP/2 body to an HTTP/1.1 peer (chunked, with trailers, or
/// as-is under a content-length); each write must make progress within
/// `send_timeout`.
pub async fn h2_body_to_h1(
    src: &mut RecvStream,
    dst: &mut Conn,
    chunked: bool,
    send_timeout: Duration,
) -> Result<u64, H2ToH1Error> {
    let h1_error = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::TimedOut {
            H2ToH1Error::H1Stalled
        } else {
            H2ToH1Error::H1
        }
    };
    let mut moved = 0u64;
    let mut out = Vec::new();
    loop {
        match monoio::time::timeout(BODY_IDLE, poll_fn(|cx| src.poll_data(cx))).await {
            Err(_) => return Err(H2ToH1Error::H2),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(H2ToH1Error::H2),
            Ok(Some(Ok(chunk))) => {
                let n = chunk.len();
                if n == 0 {
                    continue;
                }
                out.clear();
                if chunked {
                    out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                    out.extend_from_slice(&chunk);
                    out.extend_from_slice(b"\r\n");
                } else {
                    out.extend_from_slice(&chunk);
                }
                let (res, o) =
                    crate::io::write_all_within(dst, std::mem::take(&mut out), send_timeout).await;
                out = o;
                res.map_err(h1_error)?;
                let _ = src.flow_control().release_capacity(n);
                moved += n as u64;
            }
        }
    }
    if chunked {
        out.clear();
        let trailers = poll_fn(|cx| src.poll_trailers(cx)).await.ok().flatten();
        last_chunk(&mut out, trailers.as_ref());
        let (res, _) = crate::io::write_all_within(dst, out, send_timeout).await;
        res.map_err(h1_error)?;
    }
    Ok(moved)
}

/// Relays the response head and body to the client. Returns (status,
/// grpc-status if one was seen, body bytes sent).
async fn relay_response(
    r: &Req<'_>,
    resp: UpResponse,
    respond: &mut SendResponse<Bytes>,
    route: &Route,
    cs: &ClusterState,
    ep: &Endpoint,
) -> (u16, Option<u32>, u64) {
    let edit = |h: &mut HeaderMap| {
        for n in &route.response_headers_to_remove {
            if let Ok(n) = HeaderName::from_bytes(n) {
                h.remove(n);
            }
        }
        for (n, v) in &route.response_headers_to_add {
            if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n), HeaderValue::from_bytes(v)) {
                h.append(n, v);
            }
        }
    };
    match resp {
        UpResponse::H2(resp, slot) => {
            let (mut parts, body) = resp.into_parts();
            let status = parts.status.as_u16();
            edit(&mut parts.headers);
            let grpc_head = grpc_status_of(&parts.headers);
            let eos = body.is_end_stream();
            let resp = Response::from_parts(parts, ());
            let Ok(tx) = respond.send_response(resp, eos) else {
                return (status, grpc_head, 0);
            };
            if eos {
                return (status, grpc_head, 0);
            }
            let (moved, trailers_status) =
                relay_h2_response_body(body, tx, &cs.stats.body_errors).await;
            drop(slot);
            (status, trailers_status.or(grpc_head), moved)
        }
        UpResponse::H1 {
            mut parts,
            mut conn,
            buf,
            framing,
            keep_alive,
        } => {
            let status = parts.status.as_u16();
            edit(&mut parts.headers);
            let eos = framing == BodyFraming::None || r.head_only;
            let resp = Response::from_parts(parts, ());
            let Ok(mut tx) = respond.send_response(resp, eos) else {
                return (status, None, 0);
            };
            if eos {
                if framing == BodyFraming::None && keep_alive && buf.is_empty() {
                    ep.checkin(conn, cs.config.max_idle_per_endpoint);
                }
                return (status, None, 0);
            }
            let (res, rest) = Box::pin(h1_body_to_h2(&mut conn, buf, framing, &mut tx)).await;
            match res {
                Ok(n) => {
                    if keep_alive && rest.is_empty() && framing != BodyFraming::UntilClose {
                        ep.checkin(conn, cs.config.max_idle_per_endpoint);
                    }
                    (status, None, n)
                }
                Err(upstream_failed) => {
                    if upstream_failed {
                        cs.stats.body_errors.inc();
                    }
                    tx.send_reset(Reason::INTERNAL_ERROR);
                    (status, None, 0)
                }
            }
        }
    }
}

/// Relays an upstream HTTP/2 response body and returns (bytes, the
/// grpc-status in its trailers).
async fn relay_h2_response_body(
    mut src: RecvStream,
    mut tx: SendStream<Bytes>,
    body_errors: &crate::metrics::Counter,
) -> (u64, Option<u32>) {
    let mut moved = 0u64;
    loop {
        let ev = poll_fn(|cx| {
            if tx.poll_reset(cx).is_ready() {
                return Poll::Ready(None);
            }
            src.poll_data(cx).map(Some)
        });
        match monoio::time::timeout(BODY_IDLE, ev).await {
            Err(_) => {
                body_errors.inc();
                return (moved, None);
            }
            Ok(None) => return (moved, None),
            Ok(Some(None)) => break,
            Ok(Some(Some(Ok(chunk)))) => {
                let n = chunk.len();
                if send_all(&mut tx, chunk).await.is_err() {
                    return (moved, None);
                }
                let _ = src.flow_control().release_capacity(n);
                moved += n as u64;
            }
            Ok(Some(Some(Err(e)))) => {
                body_errors.inc();
                tx.send_reset(e.reason().unwrap_or(Reason::INTERNAL_ERROR));
                return (moved, None);
            }
        }
    }
    match poll_fn(|cx| src.poll_trailers(cx)).await {
        Ok(Some(t)) => {
            let g = grpc_status_of(&t);
            let _ = tx.send_trailers(t);
            (moved, g)
        }
        Ok(None) => {
            let _ = tx.send_data(Bytes::new(), true);
            (moved, None)
        }
        Err(e) => {
            body_errors.inc();
            tx.send_reset(e.reason().unwrap_or(Reason::INTERNAL_ERROR));
            (moved, None)
        }
    }
}

fn grpc_status_of(h: &HeaderMap) -> Option<u32> {
    h.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// Moves an HTTP/1.1 body (`buf` holds bytes already read) into an HTTP/2
/// stream and ends it. Chunked bodies are de-chunked (their trailers are
/// passed on as HTTP/2 trailers when valid). Returns the bytes sent and
/// whatever followed the body in the buffer. Err(true): the HTTP/1.1 side
/// failed (closed early, bad framing, stalled); Err(false): the HTTP/2 side.
pub async fn h1_body_to_h2(
    src: &mut Conn,
    mut buf: Vec<u8>,
    framing: BodyFraming,
    tx: &mut SendStream<Bytes>,
) -> (Result<u64, bool>, Vec<u8>) {
    let mut moved = 0u64;
    let mut chunked = Dechunker::new(MAX_TRAILER_BYTES);
    let mut remaining = match framing {
        BodyFraming::None => 0,
        BodyFraming::ContentLength(n) => n,
        BodyFraming::Chunked | BodyFraming::UntilClose => u64::MAX,
    };
    loop {
        if !buf.is_empty() {
            let (data, consumed, done) = match framing {
                BodyFraming::ContentLength(_) => {
                    let take = remaining.min(buf.len() as u64) as usize;
                    remaining -= take as u64;
                    (Bytes::copy_from_slice(&buf[..take]), take, remaining == 0)
                }
                BodyFraming::Chunked => {
                    let mut plain = Vec::new();
                    let (consumed, done) = match chunked.feed(&buf, &mut plain) {
                        Ok(p) => p,
                        Err(_) => return (Err(true), buf),
                    };
                    (Bytes::from(plain), consumed, done)
                }
                _ => (Bytes::copy_from_slice(&buf), buf.len(), false),
            };
            buf.drain(..consumed);
            if !data.is_empty() {
                let n = data.len() as u64;
                if send_all(tx, data).await.is_err() {
                    return (Err(false), buf);
                }
                moved += n;
            }
            if done {
                break;
            }
        } else if remaining == 0 {
            break;
        }
        buf.clear();
        let r = monoio::time::timeout(
            BODY_IDLE,
            crate::io::read_append(src, buf, crate::worker::BUF_SIZE),
        )
        .await;
        match r {
            Err(_) => return (Err(true), Vec::new()),
            Ok((res, b)) => {
                buf = b;
                match res {
                    Ok(0) if framing == BodyFraming::UntilClose => break,
                    Ok(0) | Err(_) => return (Err(true), buf),
                    Ok(_) => {}
                }
            }
        }
    }
    let trailers = if chunked.is_done() {
        chunked.trailers()
    } else {
        None
    };
    let sent = match trailers {
        Some(t) if !t.is_empty() => tx.send_trailers(t),
        _ => tx.send_data(Bytes::new(), true),
    };
    (sent.map(|_| moved).map_err(|_| false), buf)
}

/// De-chunks an HTTP/1.1 chunked body read in pieces (for an HTTP/2 peer)
/// and keeps its trailer section, whichever pieces the body's end arrives
/// in. Public as a fuzzing entry point (fuzz targets `chunked`,
/// `http2_request`).
#[derive(Debug, Clone)]
pub struct Dechunker {
    state: ChunkedState,
    /// The body's bytes since the end of the last chunk data: once the body
    /// ended, the data's CRLF, the last-chunk line, the trailer fields and
    /// the final CRLF. The state machine's limits on chunk extensions and
    /// trailers bound it.
    tail: Vec<u8>,
}

impl Dechunker {
    pub fn new(max_trailer_bytes: usize) -> Self {
        Dechunker {
            state: ChunkedState::new(max_trailer_bytes),
            tail: Vec::new(),
        }
    }

    /// Feeds the next bytes of the body, appending their payload to `data`.
    /// Returns how many bytes of `buf` belong to the body and whether it
    /// ended (as [`ChunkedState::feed`]).
    pub fn feed(
        &mut self,
        buf: &[u8],
        data: &mut Vec<u8>,
    ) -> Result<(usize, bool), codec::ChunkError> {
        let base = buf.as_ptr() as usize;
        let mut data_end = None;
        let p = self.state.feed_with(buf, |d| {
            data.extend_from_slice(d);
            // `d` is a piece of `buf`: where the payload seen so far ends.
            data_end = Some(d.as_ptr() as usize - base + d.len());
        })?;
        let consumed = buf.get(..p.consumed).unwrap_or_default();
        match data_end {
            Some(end) => {
                self.tail.clear();
                self.tail
                    .extend_from_slice(consumed.get(end..).unwrap_or_default());
            }
            None => self.tail.extend_from_slice(consumed),
        }
        Ok((p.consumed, p.done))
    }

    pub fn is_done(&self) -> bool {
        self.state.is_done()
    }

    /// Once the body ended: its trailer fields as HTTP/2 trailers; `None`
    /// if there are none or one is not a valid HTTP/2 field.
    pub fn trailers(&self) -> Option<HeaderMap> {
        if !self.is_done() {
            return None;
        }
        parse_trailers(trailer_section(&self.tail)).filter(|t| !t.is_empty())
    }
}

/// The field lines of a finished body's `tail` (see [`Dechunker`]): after
/// the data's CRLF and the last-chunk line, before the final CRLF. The
/// state machine has checked the shape, so this only has to cut.
fn trailer_section(tail: &[u8]) -> &[u8] {
    let rest = tail.strip_prefix(b"\r\n").unwrap_or(tail);
    let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else {
        return &[];
    };
    let fields = rest.get(line_end + 2..).unwrap_or_default();
    fields.strip_suffix(b"\r\n").unwrap_or(fields)
}

/// Trailer field lines as HTTP/2 trailers; `None` if any line is not a
/// valid field.
fn parse_trailers(b: &[u8]) -> Option<HeaderMap> {
    let mut h = HeaderMap::new();
    for line in b.split(|&c| c == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let colon = line.iter().position(|&c| c == b':')?;
        let n = HeaderName::from_bytes(&line[..colon]).ok()?;
        let v = HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).ok()?;
        h.append(n, v);
    }
    Some(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        let mut h = HeaderMap::new();
        for (v, want) in [
            ("1S", Some(Duration::from_secs(1))),
            ("250m", Some(Duration::from_millis(250))),
            ("3M", Some(Duration::from_secs(180))),
            ("100u", Some(Duration::from_micros(100))),
            ("S", None),
            ("123456789S", None),
            ("1x", None),
        ] {
            h.insert("grpc-timeout", HeaderValue::from_static(v));
            assert_eq!(grpc_timeout(&h), want, "{v}");
        }
    }

    #[test]
    fn chunked_trailers_become_http2_trailers() {
        let body = b"5\r\nhello\r\n0\r\ngrpc-status: 0\r\nx-t: 1\r\n\r\nNEXT";
        // Whole, and cut at every point: the trailers are the same.
        let end = body.len() - 4;
        for cut in 0..end {
            let mut d = Dechunker::new(MAX_TRAILER_BYTES);
            let mut data = Vec::new();
            let (a, done) = d.feed(&body[..cut], &mut data).unwrap();
            assert_eq!((a, done), (cut, false), "cut {cut}");
            let (b, done) = d.feed(&body[cut..], &mut data).unwrap();
            assert!(done && a + b == end, "cut {cut}");
            assert_eq!(data, b"hello");
            let t = d.trailers().unwrap();
            assert_eq!(t.len(), 2, "cut {cut}: {t:?}");
            assert_eq!(t.get("grpc-status").unwrap(), "0");
            assert_eq!(t.get("x-t").unwrap(), "1");
        }
        let mut d = Dechunker::new(MAX_TRAILER_BYTES);
        d.feed(b"5\r\nhello\r\n0\r\n\r\n", &mut Vec::new()).unwrap();
        assert!(d.is_done() && d.trailers().is_none());
    }

    #[test]
    fn trailers_survive_the_end_of_a_body_spanning_reads() {
        // Found by reading h1_body_to_h2 for the fuzz target http2_request: the
        // trailer section was taken from the last read only, so a trailer split
        // across reads was lost or cut ("grpc-sta" + "tus: 0" gave "tus: 0"),
        // and a last-chunk extension holding ':' was taken for a field.
        let mut d = Dechunker::new(MAX_TRAILER_BYTES);
        let mut data = Vec::new();
        d.feed(b"3\r\nabc\r\n0\r\nx-grpc-sta", &mut data).unwrap();
        d.feed(b"tus: 5\r\n", &mut data).unwrap();
        let (_, done) = d.feed(b"\r\n", &mut data).unwrap();
        assert!(done);
        let t = d.trailers().unwrap();
        assert_eq!(t.len(), 1, "{t:?}");
        assert_eq!(t.get("x-grpc-status").unwrap(), "5");

        let mut d = Dechunker::new(MAX_TRAILER_BYTES);
        d.feed(b"0;a=\"b:c\"\r\ngrpc-status: 0\r\n\r\n", &mut data)
            .unwrap();
        assert_eq!(d.trailers().unwrap().get("grpc-status").unwrap(), "0");
    }

    #[test]
    fn hop_by_hop_fields_go_and_te_trailers_stays() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("x-secret, close"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("x-keep", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
        assert_eq!(h.get("te").unwrap(), "trailers");
        h.insert("te", HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut h);
        assert!(h.get("te").is_none());
    }

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(grpc_message("upstream timeout"), "upstream timeout");
        assert_eq!(grpc_message("50% naïve"), "50%25 na%C3%AFve");
    }
}
