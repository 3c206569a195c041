//! An HTTP/1.1 request forwarded to an HTTP/2 upstream: the mesh hop to
//! another ringmesh proxy, or a cluster with `protocol: http2`.
//!
//! The upstream head is built by the same code as for HTTP/1.1 upstreams
//! (so every edit — x-forwarded-*, x-request-id, XFCC, the route's header
//! changes, prefix rewrite — is identical) and then read back into an HTTP/2
//! request. The body is de-chunked into DATA frames; the response goes back
//! as HTTP/1.1, chunked when its length is unknown, with its trailers in the
//! chunked trailer section.

use std::rc::Rc;
use std::time::Instant;

use http::header::{HeaderName, HeaderValue};
use monoio::io::AsyncWriteRent;

use super::codec::{BodyFraming, Method, RequestHead};
use super::local::LocalError;
use super::{Conn, InFlight, Next, ReqInfo};
use crate::router::{Forward, Route};
use crate::upstream::{ClusterState, Endpoint};
use crate::worker::EpochLocal;

#[derive(Clone, Copy)]
pub(super) struct H1Req<'a> {
    pub epoch: &'a Rc<EpochLocal>,
    pub head: &'a RequestHead,
    pub route: &'a Route,
    pub fwd: &'a Forward,
    pub cs: &'a Rc<ClusterState>,
    pub cluster_idx: usize,
    pub start: Instant,
    pub request_id: &'a [u8],
    pub info: &'a Option<ReqInfo>,
}

/// The request head as an HTTP/2 request, from the HTTP/1.1 bytes we would
/// have sent upstream. Public as a fuzzing entry point (fuzz target
/// `http1_request`).
pub fn to_request(h1: &[u8], scheme: &str, mesh_hop: bool) -> Option<http::Request<()>> {
    let mut slots = [httparse::EMPTY_HEADER; 256];
    let mut req = httparse::Request::new(&mut slots);
    let httparse::Status::Complete(_) = req.parse(h1).ok()? else {
        return None;
    };
    let mut authority = "localhost";
    let mut b = http::Request::builder()
        .method(req.method?)
        .version(http::Version::HTTP_2);
    let h = b.headers_mut()?;
    for f in req.headers.iter() {
        let name = f.name.as_bytes();
        if name.eq_ignore_ascii_case(b"host") {
            authority = std::str::from_utf8(f.value).ok()?;
            continue;
        }
        if name.eq_ignore_ascii_case(b"transfer-encoding") || name.eq_ignore_ascii_case(b"te") {
            continue;
        }
        h.append(
            HeaderName::from_bytes(name).ok()?,
            HeaderValue::from_bytes(f.value).ok()?,
        );
    }
    crate::http2::strip_hop_by_hop(h);
    if mesh_hop {
        h.insert(
            crate::http2::ORIG_PROTO,
            HeaderValue::from_static("HTTP/1.1"),
        );
    }
    if authority.is_empty() {
        authority = "localhost";
    }
    let uri = match req.path? {
        // Asterisk-form (OPTIONS *) keeps `*` as its path, which h2 sends as
        // `:path: *` (RFC 9113 §8.3.1); "http://host*" would name a host "host*".
        "*" => http::Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query("*")
            .build()
            .ok()?,
        path => format!("{scheme}://{authority}{path}").parse().ok()?,
    };
    b.uri(uri).body(()).ok()
}

impl Conn {
    /// Forwards the request to an HTTP/2 upstream and answers in HTTP/1.1.
    pub(super) async fn forward_h2(&mut self, r: H1Req<'_>, first: Rc<Endpoint>) -> Next {
        let mut ep = InFlight::new(first);
        match self.exchange_h2(&r, &mut ep).await {
            Ok(next) => next,
            Err(e) => {
                let f = super::Failure {
                    error: e,
                    cluster: Some(r.cluster_idx),
                };
                self.fail(r.epoch, r.head, r.route, f, r.start, r.request_id, r.info)
                    .await
            }
        }
    }

    /// Sends the request and relays the response; an error before any
    /// response byte went to the client is answered by the caller.
    async fn exchange_h2(&mut self, r: &H1Req<'_>, ep: &mut InFlight) -> Result<Next, LocalError> {
        let H1Req {
            epoch,
            head,
            route,
            fwd,
            cs,
            cluster_idx,
            start,
            request_id,
            info,
        } = *r;
        let up_head = self.upstream_head(head, route, fwd, request_id);
        self.consume_head(head);
        let limits = epoch.config.limits.http2.clone();
        let deadline = Instant::now() + fwd.timeout;

        let eos = head.framing == BodyFraming::None;
        // A request the upstream never took (a refused stream, a stream
        // above a GOAWAY, a connection going away) is sent again, twice at
        // most; only a bodiless one, since a body is read from the client
        // once.
        let idempotent = head.method.is_idempotent();
        let mut unprocessed_left = 2u8;
        let mut failover_left = 1u8;
        let resp = loop {
            // Connect (one failover: nothing was sent) and send the head.
            let (mut send, slot) = loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let acquired =
                    monoio::time::timeout(left, crate::http2::client::acquire(cs, ep, &limits))
                        .await;
                match acquired {
                    Ok(Ok(x)) => break x,
                    Ok(Err(e)) => {
                        if failover_left > 0 {
                            if let Some(o) = cs.pick_other(ep) {
                                failover_left -= 1;
                                ep.switch(o.clone());
                                continue;
                            }
                        }
                        return Err(match e {
                            crate::upstream::ConnectError::Tls(_) => LocalError::UpstreamTls,
                            _ => LocalError::ConnectFailed,
                        });
                    }
                    Err(_) => return Err(LocalError::UpstreamTimeout),
                }
            };
            let mesh_hop = cs
                .config
                .tls
                .as_ref()
                .is_some_and(|t| t.applies_to(ep.addr));
            let scheme = if mesh_hop { "https" } else { "http" };
            let req = to_request(&up_head, scheme, mesh_hop).ok_or(LocalError::BadRequest)?;
            let again = |ep: &mut InFlight, left: &mut u8| {
                if *left == 0 || !eos {
                    return false;
                }
                *left -= 1;
                if let Some(o) = cs.pick_other(ep) {
                    ep.switch(o.clone());
                }
                true
            };
            let (resp_fut, mut tx) = match send.send_request(req, eos) {
                Ok(x) => x,
                Err(_) => {
                    // Nothing was sent.
                    slot.broken();
                    if again(ep, &mut unprocessed_left) {
                        continue;
                    }
                    return Err(LocalError::UpstreamReset);
                }
            };
            if !eos {
                if head.expect_continue && self.buf.is_empty() {
                    let (ok, _) = self.send(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec()).await;
                    if !ok {
                        return Ok(Next::Close);
                    }
                }
                let buf = std::mem::take(&mut self.buf);
                let (res, rest) = crate::http2::proxy::h1_body_to_h2(
                    &mut self.stream,
                    buf,
                    head.framing,
                    &mut tx,
                )
                .await;
                self.buf = rest;
                if res.is_err() {
                    tx.send_reset(h2::Reason::CANCEL);
                    epoch.count_request(self.listener, Some(route), Some(cluster_idx), 400);
                    self.log(info, 400, 0, start, None, &route.name, request_id);
                    return Ok(Next::Close);
                }
            }
            drop(tx);
            let left = deadline.saturating_duration_since(Instant::now());
            match monoio::time::timeout(left, resp_fut).await {
                Ok(Ok(r)) => break (r, slot),
                Ok(Err(e)) => {
                    if e.is_io() || e.is_go_away() {
                        slot.broken();
                    }
                    if crate::http2::client::unprocessed(&e, idempotent)
                        && again(ep, &mut unprocessed_left)
                    {
                        continue;
                    }
                    return Err(LocalError::UpstreamReset);
                }
                Err(_) => return Err(LocalError::UpstreamTimeout),
            }
        };
        let (resp, slot) = resp;
        let (parts, mut body) = resp.into_parts();
        let status = parts.status.as_u16();
        let no_body = head.method == Method::Head
            || status == 204
            || status == 304
            || (100..200).contains(&status);
        let has_length = parts.headers.contains_key(http::header::CONTENT_LENGTH);
        let eos = body.is_end_stream();
        let chunked = !no_body && !eos && !has_length && head.version_minor == 1;
        let until_close = !no_body && !eos && !has_length && !chunked;
        let close = !head.keep_alive || until_close || self.worker.drain.is_fired();

        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(super::reason_phrase(status).as_bytes());
        out.extend_from_slice(b"\r\n");
        let mut headers = parts.headers;
        crate::http2::strip_hop_by_hop(&mut headers);
        headers.remove(http::header::TE);
        for n in &route.response_headers_to_remove {
            if let Ok(n) = HeaderName::from_bytes(n) {
                headers.remove(n);
            }
        }
        for (n, v) in &headers {
            super::head::put_header(&mut out, n.as_str().as_bytes(), v.as_bytes());
        }
        for (n, v) in &route.response_headers_to_add {
            super::head::put_header(&mut out, n, v);
        }
        if chunked {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        } else if eos && !has_length && !no_body {
            out.extend_from_slice(b"content-length: 0\r\n");
        }
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        let head_bytes = out.len() as u64;
        let (ok, _) = self.send(out).await;
        if !ok {
            epoch.count_request(self.listener, Some(route), Some(cluster_idx), status);
            return Ok(Next::Close);
        }
        let mut sent = head_bytes;
        if !no_body && !eos {
            let t = self.send_timeout;
            match crate::http2::proxy::h2_body_to_h1(&mut body, &mut self.stream, chunked, t).await
            {
                Ok(n) => {
                    self.stats.tx.add(n);
                    sent += n;
                }
                Err(e) => {
                    use crate::http2::proxy::H2ToH1Error;
                    if e == H2ToH1Error::H2 {
                        cs.stats.body_errors.inc();
                    }
                    if e == H2ToH1Error::H1Stalled {
                        self.stats.send_timeouts.inc();
                    }
                    epoch.count_request(self.listener, Some(route), Some(cluster_idx), status);
                    self.log(
                        info,
                        status,
                        sent,
                        start,
                        Some(ep.addr),
                        &route.name,
                        request_id,
                    );
                    return Ok(Next::Close);
                }
            }
        } else if !eos {
            // HEAD / 204 / 304 with a body from the upstream: drop it.
            drop(body);
        }
        drop(slot);
        cs.stats.duration.observe(start.elapsed());
        epoch.count_request(self.listener, Some(route), Some(cluster_idx), status);
        self.log(
            info,
            status,
            sent,
            start,
            Some(ep.addr),
            &route.name,
            request_id,
        );
        if close {
            let _ = self.stream.shutdown().await;
            return Ok(Next::Close);
        }
        Ok(self.after(head, true))
    }
}

#[cfg(test)]
mod tests {
    use super::to_request;

    #[test]
    fn options_asterisk_keeps_its_authority_and_no_path() {
        // Found by the fuzz target http1_request (fuzz/seeds/http1_request/options-star).
        let req = to_request(b"OPTIONS * HTTP/1.1\r\nhost: a.test\r\n\r\n", "http", false).unwrap();
        assert_eq!(req.method(), http::Method::OPTIONS);
        assert_eq!(req.uri().authority().unwrap().as_str(), "a.test");
        assert_eq!(req.uri().path_and_query().unwrap().as_str(), "*");
        let req = to_request(b"GET /p?q HTTP/1.1\r\nhost: a.test\r\n\r\n", "https", false).unwrap();
        assert_eq!(req.uri().to_string(), "https://a.test/p?q");
    }
}
