//! Responses the proxy makes itself: direct responses from routes, and errors
//! that say why (`ringmesh-error`) with a short text body.

use std::io::Write as _;

/// Why the proxy answered instead of the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalError {
    BadRequest,
    HeadTooLarge,
    RequestTimeout,
    NoRoute,
    NoHealthyUpstream,
    ConnectFailed,
    /// The mTLS handshake with the upstream failed (identity, chain).
    UpstreamTls,
    UpstreamReset,
    BadUpstreamResponse,
    UpstreamTimeout,
    MethodNotAllowed,
}

impl LocalError {
    pub fn status(self) -> u16 {
        match self {
            LocalError::BadRequest => 400,
            LocalError::HeadTooLarge => 431,
            LocalError::RequestTimeout => 408,
            LocalError::NoRoute => 404,
            LocalError::MethodNotAllowed => 405,
            LocalError::NoHealthyUpstream | LocalError::ConnectFailed | LocalError::UpstreamTls => {
                503
            }
            LocalError::UpstreamReset | LocalError::BadUpstreamResponse => 502,
            LocalError::UpstreamTimeout => 504,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            LocalError::BadRequest => "bad_request",
            LocalError::HeadTooLarge => "request_header_fields_too_large",
            LocalError::RequestTimeout => "request_timeout",
            LocalError::NoRoute => "no_route",
            LocalError::MethodNotAllowed => "method_not_allowed",
            LocalError::NoHealthyUpstream => "no_healthy_upstream",
            LocalError::ConnectFailed => "upstream_connect_failed",
            LocalError::UpstreamTls => "upstream_tls_handshake_failed",
            LocalError::UpstreamReset => "upstream_reset",
            LocalError::BadUpstreamResponse => "bad_upstream_response",
            LocalError::UpstreamTimeout => "upstream_timeout",
        }
    }
}

pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

pub struct Local<'a> {
    pub status: u16,
    pub error: Option<LocalError>,
    pub content_type: &'a str,
    pub body: &'a [u8],
    pub close: bool,
    pub request_id: Option<&'a [u8]>,
    pub extra: &'a [crate::router::HeaderEdit],
    /// HEAD: headers as for GET, no body.
    pub head_only: bool,
}

pub fn write(out: &mut Vec<u8>, l: &Local<'_>) {
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\n",
        l.status,
        reason_phrase(l.status),
        l.content_type,
        l.body.len()
    );
    if let Some(e) = l.error {
        let _ = write!(out, "ringmesh-error: {}\r\n", e.code());
    }
    if let Some(id) = l.request_id {
        out.extend_from_slice(b"x-request-id: ");
        out.extend_from_slice(id);
        out.extend_from_slice(b"\r\n");
    }
    for (n, v) in l.extra {
        out.extend_from_slice(n);
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    if l.close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !l.head_only {
        out.extend_from_slice(l.body);
    }
}

/// An error answer: `<status> <reason>\n` as the body, plus the error code.
pub fn error(out: &mut Vec<u8>, e: LocalError, close: bool, request_id: Option<&[u8]>) {
    let body = format!(
        "{} {}: {}\n",
        e.status(),
        reason_phrase(e.status()),
        e.code()
    );
    write(
        out,
        &Local {
            status: e.status(),
            error: Some(e),
            content_type: "text/plain",
            body: body.as_bytes(),
            close,
            request_id,
            extra: &[],
            head_only: false,
        },
    );
}
