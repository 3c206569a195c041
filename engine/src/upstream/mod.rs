//! Per-worker upstream state for one cluster: its endpoints, their idle
//! connection pools and in-flight counts, and the load balancer. Lives in the
//! worker across config epochs (keyed by cluster name), so pools survive reloads.

pub mod lb;
pub mod pool;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use crate::config::model::LbPolicy;
use crate::config::Cluster;
use crate::conn::Conn;
use crate::metrics::{label, Counter, Histogram, Registry};
use crate::tls::TlsStats;
pub use pool::Endpoint;

/// Counters of one cluster in one worker.
#[derive(Debug)]
pub struct ClusterStats {
    pub connect_failures: Arc<Counter>,
    pub connect_timeouts: Arc<Counter>,
    pub pool_hits: Arc<Counter>,
    pub pool_misses: Arc<Counter>,
    pub duration: Arc<Histogram>,
    /// Response bodies the upstream cut short, mis-framed or stalled after
    /// the head had gone to the client (who then sees a closed connection or
    /// a reset stream).
    pub body_errors: Arc<Counter>,
    /// Present for clusters reached over mTLS.
    pub tls: Option<TlsStats>,
}

impl ClusterStats {
    pub fn new(reg: &Registry, cluster: &str, tls: bool) -> Self {
        let l = format!("cluster=\"{}\"", label(cluster));
        ClusterStats {
            connect_failures: reg.counter("ringmesh_upstream_connect_failures_total", l.clone()),
            connect_timeouts: reg.counter("ringmesh_upstream_connect_timeouts_total", l.clone()),
            pool_hits: reg.counter("ringmesh_upstream_pool_hits_total", l.clone()),
            pool_misses: reg.counter("ringmesh_upstream_pool_misses_total", l.clone()),
            duration: reg.histogram("ringmesh_upstream_request_duration_seconds", l.clone()),
            body_errors: reg.counter("ringmesh_upstream_response_body_errors_total", l.clone()),
            tls: tls.then(|| TlsStats {
                handshakes: reg.counter("ringmesh_tls_handshakes_total", l.clone()),
                failures: reg.counter("ringmesh_upstream_tls_failures_total", l),
            }),
        }
    }
}

#[derive(Debug)]
pub struct ClusterState {
    pub config: Arc<Cluster>,
    pub endpoints: Vec<Rc<Endpoint>>,
    rr: Cell<usize>,
    pub stats: Rc<ClusterStats>,
}

impl ClusterState {
    /// State for `config`, keeping the endpoints (and their pooled
    /// connections) that `old` already had for the same addresses.
    pub fn new(config: Arc<Cluster>, old: Option<&ClusterState>, stats: Rc<ClusterStats>) -> Self {
        let endpoints = config
            .endpoints
            .iter()
            .map(|addr| {
                old.and_then(|o| o.endpoints.iter().find(|e| e.addr == *addr).cloned())
                    .unwrap_or_else(|| Rc::new(Endpoint::new(*addr)))
            })
            .collect();
        ClusterState {
            config,
            endpoints,
            rr: Cell::new(fastrand::usize(..usize::MAX / 2)),
            stats,
        }
    }

    /// Chooses the endpoint for the next request; None when there is none.
    /// Endpoints ejected after a connect failure are passed over while any
    /// other is up; when all are down the balancer's choice stands (a request
    /// that may succeed beats a certain 503).
    pub fn pick(&self) -> Option<&Rc<Endpoint>> {
        let n = self.endpoints.len();
        let i = match self.config.lb {
            LbPolicy::RoundRobin => lb::round_robin(&self.rr, n),
            LbPolicy::Random => lb::random(n),
            LbPolicy::LeastRequest => lb::p2c(n, |i| self.endpoints[i].active()),
        }?;
        let chosen = &self.endpoints[i];
        if !chosen.is_down() {
            return Some(chosen);
        }
        Some(self.next_up(i, None).unwrap_or(chosen))
    }

    /// Another endpoint than `not` for a retry or a failover, skipping
    /// ejected ones; None when there is no other live one.
    pub fn pick_other(&self, not: &Endpoint) -> Option<&Rc<Endpoint>> {
        let n = self.endpoints.len();
        if n < 2 {
            return None;
        }
        let start = lb::round_robin(&self.rr, n)?;
        self.next_up(start, Some(not.addr))
    }

    /// The first endpoint from index `from` on (wrapping) that is up and not
    /// at `not`.
    fn next_up(&self, from: usize, not: Option<std::net::SocketAddr>) -> Option<&Rc<Endpoint>> {
        let n = self.endpoints.len();
        (0..n)
            .map(|k| &self.endpoints[(from + k) % n])
            .find(|e| Some(e.addr) != not && !e.is_down())
    }

    /// Closes pooled connections idle longer than the cluster allows.
    pub fn sweep(&self) {
        for e in &self.endpoints {
            e.sweep(self.config.idle_timeout);
        }
    }
}

#[derive(Debug)]
pub enum ConnectError {
    Timeout,
    Refused(std::io::Error),
    /// The TLS handshake failed (peer identity, chain, protocol); the text
    /// says why.
    Tls(String),
}

/// Opens a new connection to `ep`, bounded by the cluster's connect timeout,
/// and counts the failure kinds. Endpoints of an mTLS cluster (other than its
/// plaintext ones) get the TLS handshake too, under the same timeout again.
pub async fn connect(cs: &ClusterState, ep: &Endpoint) -> Result<Conn, ConnectError> {
    connect_for(cs, ep, false).await
}

/// [`connect`], offering ALPN `h2` (true) or `http/1.1` in a TLS handshake.
pub async fn connect_for(cs: &ClusterState, ep: &Endpoint, h2: bool) -> Result<Conn, ConnectError> {
    let attempt = monoio::net::TcpStream::connect_addr(ep.addr);
    match monoio::time::timeout(cs.config.connect_timeout, attempt).await {
        Ok(Ok(s)) => {
            // Small heads and responses must not wait for Nagle.
            let _ = s.set_nodelay(true);
            match &cs.config.tls {
                Some(t) if t.applies_to(ep.addr) => handshake(cs, ep, t, s, h2).await,
                _ => {
                    ep.connect_ok();
                    Ok(Conn::Plain(s))
                }
            }
        }
        Ok(Err(e)) => {
            cs.stats.connect_failures.inc();
            // Out of descriptors, ports or memory here says nothing about
            // the endpoint: ejecting it (and closing its pooled connections,
            // which still work) would turn a local shortage into 503s that
            // outlast it.
            if !local_shortage(&e) {
                ep.connect_failed();
            }
            Err(ConnectError::Refused(e))
        }
        Err(_) => {
            cs.stats.connect_failures.inc();
            cs.stats.connect_timeouts.inc();
            ep.connect_failed();
            Err(ConnectError::Timeout)
        }
    }
}

/// A connect error caused by this process or host running short (file
/// descriptors, ephemeral ports, buffers), not by the endpoint.
pub fn local_shortage(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL)
    )
}

async fn handshake(
    cs: &ClusterState,
    ep: &Endpoint,
    t: &crate::tls::UpstreamTls,
    s: monoio::net::TcpStream,
    h2: bool,
) -> Result<Conn, ConnectError> {
    let stats = cs.stats.tls.as_ref();
    let ktls = crate::ktls::wanted();
    let Some(config) = (if h2 { &t.config_h2 } else { &t.config }) else {
        return Err(ConnectError::Tls(
            "this proxy has no mesh certificate yet".into(),
        ));
    };
    let res = match rustls::ClientConnection::new(config.clone(), t.server_name.clone()) {
        Ok(c) => {
            let opts = crate::tls::stream::Handshake {
                timeout: cs.config.connect_timeout,
                record_bounded: ktls,
            };
            crate::tls::TlsStream::handshake(s, c.into(), opts)
                .await
                .map_err(|e| crate::tls::describe(&e))
                .and_then(|tls| crate::tls::hand_off(tls, ktls))
        }
        Err(e) => Err(e.to_string()),
    };
    match res {
        Ok(conn) => {
            if let Some(st) = stats {
                st.handshakes.inc();
            }
            ep.connect_ok();
            Ok(conn)
        }
        Err(why) => {
            if let Some(st) = stats {
                st.failures.inc();
            }
            ep.connect_failed();
            crate::log::warn_limited(&format!(
                "cluster {}: TLS to {} failed: {why}",
                cs.config.name, ep.addr
            ));
            Err(ConnectError::Tls(why))
        }
    }
}
