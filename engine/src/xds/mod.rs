//! The control client (`--control`): one thread ("ringmesh-xds") running a
//! tokio current-thread runtime with one ADS stream to `ringmesh-control`.
//! Each response updates that type's state of the world; the whole state plus
//! the bootstrap file is compiled into the next `Config`, its listeners bound
//! and the epoch published exactly like a SIGHUP reload, and only then is the
//! response ACKed. A refused response is NACKed with the reason and the last
//! good epoch keeps serving. When the stream breaks, the proxy keeps its epoch
//! and reconnects with jittered exponential backoff, announcing the versions
//! it runs. Workers never wait on any of this.
//!
//! Identity: SECRET is subscribed first. Once the trust bundle is known the
//! proxy sends a CSR (a fresh key, kept in memory by request id) on every
//! new stream and again at half the certificate's lifetime; the issued
//! certificate is checked against the key and our SPIFFE ID, then goes into
//! the next epoch like any other resource (`identity.rs`).

pub mod backoff;
pub mod identity;
pub mod node;
pub mod state;
pub mod status;
pub mod translate;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_identity;

use std::error::Error as _;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ringmesh_proto::v1 as pb;
use ringmesh_proto::v1::aggregated_discovery_client::AggregatedDiscoveryClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

pub use backoff::Backoff;
pub use node::{check_url, NodeSpec};
pub use state::{Kind, State};
pub use status::Status;

use crate::config::{self, compile::Config, model};
use crate::shared::Shared;

/// Time to set up TCP + HTTP/2 with the control plane.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for the control plane to answer the stream's opening.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings on an idle stream: a control plane that vanished without a
/// FIN (host down, partition) is noticed within interval + timeout.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// A stream that lived this long counts as healthy: backoff starts over.
const HEALTHY_STREAM: Duration = Duration::from_secs(30);
/// "Still cannot reach" is repeated at most this often.
const RETRY_LOG_EVERY: Duration = Duration::from_secs(30);
/// Responses already queued that are applied together as one epoch.
const MAX_BATCH: usize = 16;
/// Large meshes send large snapshots; tonic's default is 4 MiB.
const MAX_MESSAGE: usize = 64 << 20;
/// google.rpc.Code INVALID_ARGUMENT.
const INVALID_ARGUMENT: i32 = 3;

/// Everything the control client needs besides the shared state.
#[derive(Debug, Clone)]
pub struct Options {
    /// `http://host:port`, checked by `check_url`.
    pub server: String,
    pub node: pb::Node,
    /// `--config` in control mode: admin, limits, access log and static
    /// listeners/clusters; re-read on SIGHUP.
    pub bootstrap: Option<PathBuf>,
    pub overrides: config::Overrides,
}

enum Command {
    Reload,
    Stop,
}

/// The control thread's way to talk to the control client.
pub struct Handle {
    tx: mpsc::UnboundedSender<Command>,
    thread: JoinHandle<()>,
}

impl Handle {
    /// SIGHUP: re-read the bootstrap file and recompile with the current
    /// dynamic state.
    pub fn reload(&self) {
        let _ = self.tx.send(Command::Reload);
    }

    /// Ends the stream and the thread (on drain).
    pub fn stop(self) {
        let _ = self.tx.send(Command::Stop);
        let _ = self.thread.join();
    }
}

/// Starts the control client. The config `shared` holds now is the bootstrap
/// (already compiled, with overrides); `shared.ready` is set once every type
/// has been applied.
pub fn spawn(shared: Arc<Shared>, opts: Options) -> Result<Handle, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("control client runtime: {e}"))?;
    let boot = shared.config();
    shared.xds.enable(&opts.server, &opts.node.id);
    let (tx, cmds) = mpsc::unbounded_channel();
    let client = Client {
        bootstrap: boot.model.clone(),
        bootstrap_version: boot.version.clone(),
        shared,
        opts,
        state: State::default(),
        cmds,
        failures: 0,
        last_failure_log: None,
        pending: identity::Pending::default(),
        stream_csr_sent: false,
        next_csr: None,
        last_secret_nonce: String::new(),
        expiry_logged: None,
    };
    let thread = std::thread::Builder::new()
        .name("ringmesh-xds".into())
        .spawn(move || rt.block_on(client.run()))
        .map_err(|e| format!("control client thread: {e}"))?;
    Ok(Handle { tx, thread })
}

enum End {
    Stop,
    Broken(String),
}

struct Client {
    shared: Arc<Shared>,
    opts: Options,
    bootstrap: model::File,
    bootstrap_version: String,
    state: State,
    cmds: mpsc::UnboundedReceiver<Command>,
    /// Failed attempts since the last stream that opened.
    failures: u32,
    last_failure_log: Option<Instant>,
    /// Keys of the CSRs sent on this stream and not answered yet.
    pending: identity::Pending,
    /// A CSR went out on this stream (one always does once the bundle is known).
    stream_csr_sent: bool,
    /// When the next CSR is due: renewal, or a retry of an unanswered one.
    next_csr: Option<Instant>,
    /// The nonce of the last SECRET response of this stream, for CSRs sent
    /// on their own.
    last_secret_nonce: String,
    /// The serial of an expired certificate already logged.
    expiry_logged: Option<String>,
}

/// The outcome of one response of a batch.
struct Answer {
    r#type: i32,
    kind: Option<Kind>,
    nonce: String,
    version: String,
    /// Err: the NACK reason and the version still in force.
    result: Result<(), (String, String)>,
}

impl Client {
    async fn run(mut self) {
        let mut backoff = Backoff::default();
        loop {
            let started = Instant::now();
            let (mut opened, mut got_response) = (false, false);
            let end = self.session(&mut opened, &mut got_response).await;
            self.shared.xds.set_connected(false);
            let reason = match end {
                End::Stop => return,
                End::Broken(r) => r,
            };
            if got_response || started.elapsed() >= HEALTHY_STREAM {
                backoff.reset();
            }
            self.log_failure(&reason, opened);
            let delay = tokio::time::sleep(backoff.next_delay());
            if let Err(End::Stop) = self.with_commands(delay).await {
                return;
            }
            self.check_expiry();
        }
    }

    /// Awaits `fut` while still answering SIGHUP reloads; `Err` on stop.
    async fn with_commands<F: Future>(&mut self, fut: F) -> Result<F::Output, End> {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                out = &mut fut => return Ok(out),
                cmd = self.cmds.recv() => match cmd {
                    Some(Command::Reload) => self.reload(),
                    Some(Command::Stop) | None => return Err(End::Stop),
                },
            }
        }
    }

    /// One stream: connect, subscribe, apply and answer until it breaks.
    async fn session(&mut self, opened: &mut bool, got_response: &mut bool) -> End {
        let endpoint = match tonic::transport::Endpoint::from_shared(self.opts.server.clone()) {
            Ok(e) => e,
            Err(e) => return End::Broken(format!("bad control plane URL: {e}")),
        }
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
        let channel = match self.with_commands(endpoint.connect()).await {
            Err(end) => return end,
            Ok(Err(e)) => return End::Broken(format!("connect: {}", error_chain(&e))),
            Ok(Ok(c)) => c,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        // A new stream: the control plane knows none of our CSRs.
        self.pending.clear();
        self.stream_csr_sent = false;
        self.last_secret_nonce.clear();
        for (i, kind) in Kind::ALL.into_iter().enumerate() {
            let _ = tx.send(pb::DiscoveryRequest {
                node: (i == 0).then(|| self.opts.node.clone()),
                r#type: kind.proto() as i32,
                version_info: self.state.version(kind).to_owned(),
                response_nonce: String::new(),
                error_detail: None,
                // After a reconnect the bundle is known: ask at once.
                csr: if kind == Kind::Secret {
                    self.take_csr()
                } else {
                    None
                },
            });
        }
        let mut client =
            AggregatedDiscoveryClient::new(channel).max_decoding_message_size(MAX_MESSAGE);
        let open = tokio::time::timeout(
            OPEN_TIMEOUT,
            client.stream_resources(UnboundedReceiverStream::new(rx)),
        );
        let mut stream = match self.with_commands(open).await {
            Err(end) => return end,
            Ok(Err(_)) => return End::Broken("the stream did not open in time".into()),
            Ok(Ok(Err(status))) => return End::Broken(status_text(&status)),
            Ok(Ok(Ok(response))) => response.into_inner(),
        };
        *opened = true;
        self.shared.xds.set_connected(true);
        if self.failures > 0 {
            crate::log::info(&format!(
                "reconnected to control plane {} after {} failed attempt(s); subscribed with versions {}",
                self.opts.server,
                self.failures,
                self.versions_text()
            ));
        } else {
            crate::log::info(&format!(
                "connected to control plane {} as node {:?}; subscribed with versions {}",
                self.opts.server,
                self.opts.node.id,
                self.versions_text()
            ));
        }
        self.failures = 0;
        self.last_failure_log = None;

        loop {
            let wake = self.next_wake();
            let next = self.with_commands(async {
                match wake {
                    None => Some(stream.message().await),
                    Some(at) => tokio::select! {
                        m = stream.message() => Some(m),
                        () = tokio::time::sleep_until(at.into()) => None,
                    },
                }
            });
            let first = match next.await {
                Err(end) => return end,
                Ok(None) => {
                    // A timer: renewal, a CSR to retry, or expiry.
                    self.check_expiry();
                    let mut out = Vec::new();
                    self.attach_csr(&mut out);
                    for req in out {
                        if tx.send(req).is_err() {
                            return End::Broken("the request stream closed".into());
                        }
                    }
                    continue;
                }
                Ok(Some(Ok(Some(r)))) => r,
                Ok(Some(Ok(None))) => {
                    return End::Broken("the control plane closed the stream".into())
                }
                Ok(Some(Err(status))) => return End::Broken(status_text(&status)),
            };
            *got_response = true;
            // Take whatever else already arrived and apply it as one epoch.
            let mut batch = vec![first];
            let mut ended = None;
            tokio::task::yield_now().await;
            while batch.len() < MAX_BATCH {
                match tokio::time::timeout(Duration::ZERO, stream.message()).await {
                    Ok(Ok(Some(r))) => batch.push(r),
                    Ok(Ok(None)) => {
                        ended = Some("the control plane closed the stream".to_owned());
                        break;
                    }
                    Ok(Err(status)) => {
                        ended = Some(status_text(&status));
                        break;
                    }
                    Err(_) => break,
                }
            }
            let mut answers = self.apply_batch(batch);
            self.attach_csr(&mut answers);
            for answer in answers {
                if tx.send(answer).is_err() {
                    return End::Broken("the request stream closed".into());
                }
            }
            if let Some(reason) = ended {
                return End::Broken(reason);
            }
        }
    }

    /// Applies responses in order onto a candidate state, compiling after
    /// each; publishes the last good candidate once; answers each.
    fn apply_batch(&mut self, batch: Vec<pb::DiscoveryResponse>) -> Vec<pb::DiscoveryRequest> {
        let source = self.source();
        let previous_identity = self.state.identity.clone();
        let mut candidate = self.state.clone();
        let mut built: Option<Config> = None;
        let mut answers = Vec::with_capacity(batch.len());
        for resp in &batch {
            let kind = Kind::from_proto(resp.r#type);
            let mut answer = Answer {
                r#type: resp.r#type,
                kind,
                nonce: resp.nonce.clone(),
                version: resp.version_info.clone(),
                result: Ok(()),
            };
            let Some(kind) = kind else {
                let name = pb::ResourceType::try_from(resp.r#type)
                    .map_or_else(|_| resp.r#type.to_string(), |t| t.as_str_name().to_owned());
                answer.result = Err((format!("type {name} is not subscribed"), String::new()));
                answers.push(answer);
                continue;
            };
            if kind == Kind::Secret {
                self.last_secret_nonce.clone_from(&resp.nonce);
            }
            let next = candidate.apply(kind, resp).and_then(|mut next| {
                if kind == Kind::Secret {
                    identity::resolve(&mut next, &self.pending, &self.opts.node)?;
                }
                let config = translate::build(&self.bootstrap, &source, &next)?;
                Ok((next, config))
            });
            match next {
                Ok((next, config)) => {
                    candidate = next;
                    built = Some(config);
                }
                Err(msg) => {
                    answer.result = Err((msg, candidate.version(kind).to_owned()));
                }
            }
            answers.push(answer);
        }

        if let Some(config) = built {
            // A response that changes nothing (a resend) needs no new epoch.
            let changed = candidate != self.state;
            let published = if changed {
                self.publish(config, &candidate, &self.bootstrap_version)
            } else {
                Ok(self.shared.epoch())
            };
            match published {
                Ok(epoch) => {
                    self.state = candidate;
                    for a in answers.iter().filter(|a| a.result.is_ok()) {
                        if let Some(k) = a.kind {
                            crate::log::info(&format!(
                                "applied {} version {:?} from the control plane: epoch {epoch}",
                                k.name(),
                                a.version
                            ));
                        }
                    }
                }
                Err(_) if batch.len() > 1 => {
                    // Binding failed for the batch as a whole: apply its
                    // responses one by one so only the one that brought the
                    // unbindable listener is refused.
                    return batch
                        .into_iter()
                        .flat_map(|r| self.apply_batch(vec![r]))
                        .collect();
                }
                Err(e) if answers.len() == 1 && answers[0].kind == Some(Kind::Listener) => {
                    // As Envoy does: the listeners that bind are put in
                    // force, the ones that cannot are left out and named in
                    // the NACK, so one unbindable outbound port does not keep
                    // the inbound listener (and readiness) away.
                    let prev = self.state.version(Kind::Listener).to_owned();
                    if let Some((state, epoch, dropped)) =
                        self.publish_without_unbindable(&source, candidate)
                    {
                        self.state = state;
                        self.state.versions[Kind::Listener.index()] = prev.clone();
                        crate::log::info(&format!(
                            "applied listener version {:?} without {dropped}: epoch {epoch}",
                            answers[0].version
                        ));
                    }
                    answers[0].result = Err((e, prev));
                }
                Err(e) => {
                    for a in answers.iter_mut().filter(|a| a.result.is_ok()) {
                        let prev = a.kind.map(|k| self.state.version(k).to_owned());
                        a.result = Err((e.clone(), prev.unwrap_or_default()));
                    }
                }
            }
        }

        self.identity_applied(previous_identity);
        let status = &self.shared.xds;
        status.set_versions(&self.state.versions);
        let mut out = Vec::with_capacity(answers.len());
        for a in answers {
            let (version_info, error_detail) = match a.result {
                Ok(()) => {
                    if let Some(k) = a.kind {
                        status.ack(k);
                    }
                    (a.version, None)
                }
                Err((message, prev)) => {
                    // It may quote a name or value of any size.
                    let message = ringmesh_yaml::clip(message);
                    let name = a.kind.map_or("unsubscribed type", Kind::name);
                    crate::log::warn(&format!(
                        "refused {name} version {:?} from the control plane, keeping epoch {}: {message}",
                        a.version,
                        self.shared.epoch()
                    ));
                    if let Some(k) = a.kind {
                        status.nack(k, &message);
                    }
                    (
                        prev,
                        Some(pb::Status {
                            code: INVALID_ARGUMENT,
                            message,
                        }),
                    )
                }
            };
            out.push(pb::DiscoveryRequest {
                node: None,
                r#type: a.r#type,
                version_info,
                response_nonce: a.nonce,
                error_detail,
                csr: None,
            });
        }
        if self.state.complete() && !self.shared.ready.load(Ordering::Acquire) {
            self.shared.ready.store(true, Ordering::Release);
            crate::log::info(&format!(
                "first complete config from the control plane in force (epoch {}); ready",
                self.shared.epoch()
            ));
        }
        out
    }

    /// After a batch: if the identity in force changed, forget its key's CSR,
    /// plan the renewal and tell the admin side.
    fn identity_applied(&mut self, previous: Option<identity::Active>) {
        let now = identity::unix_now();
        let bundle = identity::trust_bundle(&self.state);
        let info = self.state.identity.as_ref().map(|a| status::IdentityInfo {
            spiffe_id: a.spiffe_id.clone(),
            serial: a.serial.clone(),
            not_before: a.not_before,
            not_after: a.not_after,
            trust_domain: bundle.map(|b| b.trust_domain.clone()).unwrap_or_default(),
            trust_roots: bundle.map_or(0, |b| b.root_certificates_pem.len()),
        });
        if self.shared.xds.identity() != info {
            self.shared.xds.set_identity(info);
        }
        let Some(active) = &self.state.identity else {
            return;
        };
        if previous.as_ref().map(|p| &p.request_id) == Some(&active.request_id) {
            // Same certificate; a new trust domain needs a new one.
            if let Some(b) = bundle {
                let want = identity::spiffe_id(&b.trust_domain, &self.opts.node);
                if want != active.spiffe_id && self.pending.is_empty() {
                    self.next_csr = Some(Instant::now());
                }
            }
            return;
        }
        self.pending.remove(&active.request_id);
        if previous.is_some() {
            self.shared.xds.renewed();
        }
        let delay = identity::renewal_delay(active, std::time::SystemTime::now());
        self.next_csr = Some(Instant::now() + delay);
        self.expiry_logged = None;
        crate::log::info(&format!(
            "identity {} in force (serial {}, valid until unix {}, {} s left); renewal in {:.1} s",
            active.spiffe_id,
            active.serial,
            active.not_after,
            active.not_after - now,
            delay.as_secs_f64()
        ));
    }

    /// A CSR if one is due: on a new stream once the bundle is known, at
    /// renewal, or to retry one left unanswered. Its key is kept in
    /// `pending` under the request id.
    fn take_csr(&mut self) -> Option<pb::CertificateSigningRequest> {
        let bundle = identity::trust_bundle(&self.state)?;
        let due = !self.stream_csr_sent || self.next_csr.is_some_and(|t| Instant::now() >= t);
        if !due {
            return None;
        }
        let id = identity::spiffe_id(&bundle.trust_domain, &self.opts.node);
        let now = identity::unix_now();
        self.stream_csr_sent = true;
        self.next_csr =
            Some(Instant::now() + identity::retry_delay(self.state.identity.as_ref(), now));
        match self.pending.new_csr(&id) {
            Ok(csr) => {
                self.shared.xds.csr_sent();
                let why = match &self.state.identity {
                    None => "no certificate yet".to_owned(),
                    Some(a) if a.expired_at(now) => format!("certificate {} expired", a.serial),
                    Some(a) => format!("renewing certificate {}", a.serial),
                };
                crate::log::info(&format!("sent CSR {:?} for {id} ({why})", csr.request_id));
                Some(csr)
            }
            Err(e) => {
                crate::log::error(&format!("cannot make a CSR for {id}: {e}"));
                None
            }
        }
    }

    /// Puts a due CSR on the last SECRET answer of `out`, or on a SECRET
    /// request of its own.
    fn attach_csr(&mut self, out: &mut Vec<pb::DiscoveryRequest>) {
        let Some(csr) = self.take_csr() else { return };
        let secret = Kind::Secret.proto() as i32;
        if let Some(req) = out.iter_mut().rev().find(|r| r.r#type == secret) {
            req.csr = Some(csr);
            return;
        }
        out.push(pb::DiscoveryRequest {
            node: None,
            r#type: secret,
            version_info: self.state.version(Kind::Secret).to_owned(),
            response_nonce: self.last_secret_nonce.clone(),
            error_detail: None,
            csr: Some(csr),
        });
    }

    /// The next timer of the stream: a CSR due, or the certificate expiring.
    fn next_wake(&self) -> Option<Instant> {
        let csr = self
            .next_csr
            .filter(|_| identity::trust_bundle(&self.state).is_some());
        let expiry = self
            .state
            .identity
            .as_ref()
            .filter(|a| self.expiry_logged.as_deref() != Some(a.serial.as_str()))
            .map(|a| {
                let left = u64::try_from(a.not_after - identity::unix_now()).unwrap_or(0);
                Instant::now() + Duration::from_secs(left)
            });
        match (csr, expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// An expired certificate is logged once; the proxy keeps serving with it
    /// (it is not ready, see `admin::is_ready`) until a new one arrives.
    fn check_expiry(&mut self) {
        let Some(a) = &self.state.identity else {
            return;
        };
        if !a.expired_at(identity::unix_now())
            || self.expiry_logged.as_deref() == Some(a.serial.as_str())
        {
            return;
        }
        crate::log::error(&format!(
            "identity {} (serial {}) expired at unix {} without renewal; still serving it, not ready until a new certificate arrives",
            a.spiffe_id, a.serial, a.not_after
        ));
        self.expiry_logged = Some(a.serial.clone());
    }

    /// `candidate` minus the listeners whose address something else holds,
    /// compiled, bound and published. Returns the reduced state, the epoch and
    /// the names left out; None when nothing could be published.
    fn publish_without_unbindable(
        &self,
        source: &std::path::Path,
        mut candidate: State,
    ) -> Option<(State, u64, String)> {
        let config = translate::build(&self.bootstrap, source, &candidate).ok()?;
        let taken: Vec<String> = {
            let bound = self
                .shared
                .sockets
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            config
                .listeners
                .iter()
                .filter(|l| !bound.contains_key(&l.addr))
                .filter(|l| crate::listener::probe_free(l.addr).is_err())
                .map(|l| l.name.to_string())
                .collect()
        };
        let dynamic: Vec<&String> = taken
            .iter()
            .filter(|n| candidate.listeners.contains_key(*n))
            .collect();
        if dynamic.is_empty() {
            return None;
        }
        candidate.listeners.retain(|n, _| !taken.contains(n));
        let config = translate::build(&self.bootstrap, source, &candidate).ok()?;
        let epoch = self
            .publish(config, &candidate, &self.bootstrap_version)
            .ok()?;
        Some((candidate, epoch, taken.join(", ")))
    }

    /// Binds the new listeners and publishes: the same path as SIGHUP.
    fn publish(
        &self,
        mut config: Config,
        state: &State,
        bootstrap_version: &str,
    ) -> Result<u64, String> {
        let mut key = bootstrap_version.to_owned();
        for v in &state.versions {
            key.push('\0');
            key.push_str(v);
        }
        config.version = format!("{:016x}", config::fnv1a(key.as_bytes()));
        crate::listener::bind_for(&self.shared, &config)?;
        Ok(self.shared.publish(config))
    }

    /// SIGHUP in control mode: re-read the bootstrap file, recompile with the
    /// dynamic state, publish.
    fn reload(&mut self) {
        let Some(path) = self.opts.bootstrap.clone() else {
            crate::log::info("SIGHUP: no bootstrap file (--config) to re-read; nothing to do");
            return;
        };
        let result = config::load_with(&path, &self.opts.overrides)
            .map_err(|e| format!("config error: {e}"))
            .and_then(|boot| {
                if boot.admin != self.shared.config().admin {
                    crate::log::warn(
                        "admin.address changed; the admin listener moves only on restart",
                    );
                }
                let config = translate::build(&boot.model, &path, &self.state)?;
                let epoch = self.publish(config, &self.state, &boot.version)?;
                self.bootstrap = boot.model;
                self.bootstrap_version = boot.version;
                Ok(epoch)
            });
        match result {
            Ok(epoch) => {
                self.shared.reloads_ok.fetch_add(1, Ordering::Relaxed);
                crate::log::info(&format!(
                    "reloaded bootstrap {} with the control plane's resources: config epoch {epoch}",
                    path.display()
                ));
            }
            Err(e) => {
                self.shared.reloads_failed.fetch_add(1, Ordering::Relaxed);
                crate::log::error(&format!(
                    "reload rejected, keeping epoch {}: {e}",
                    self.shared.epoch()
                ));
            }
        }
    }

    /// What a compiled config names as its source.
    fn source(&self) -> PathBuf {
        self.opts
            .bootstrap
            .clone()
            .unwrap_or_else(|| PathBuf::from(&self.opts.server))
    }

    fn versions_text(&self) -> String {
        let parts: Vec<String> = Kind::ALL
            .iter()
            .map(|k| format!("{}={:?}", k.name(), self.state.version(*k)))
            .collect();
        parts.join(" ")
    }

    /// Logs a lost stream once, a failed first attempt once, and then at most
    /// every `RETRY_LOG_EVERY` while the control plane stays away.
    fn log_failure(&mut self, reason: &str, opened: bool) {
        let epoch = self.shared.epoch();
        if opened {
            crate::log::warn(&format!(
                "control plane stream ended ({reason}); serving epoch {epoch}, reconnecting"
            ));
            self.last_failure_log = Some(Instant::now());
            return;
        }
        self.failures += 1;
        let due = self
            .last_failure_log
            .is_none_or(|t| t.elapsed() >= RETRY_LOG_EVERY);
        if self.failures == 1 || due {
            crate::log::warn(&format!(
                "cannot reach control plane {} ({reason}); {} failed attempt(s), serving epoch {epoch}, retrying with backoff",
                self.opts.server, self.failures
            ));
            self.last_failure_log = Some(Instant::now());
        }
    }
}

fn status_text(s: &tonic::Status) -> String {
    if s.message().is_empty() {
        format!("stream error: {:?}", s.code())
    } else {
        format!("stream error: {:?}: {}", s.code(), s.message())
    }
}

/// An error and its sources: tonic's transport error alone says only
/// "transport error".
fn error_chain(e: &tonic::transport::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        // hyper and tonic repeat a cause's text in their own; say it once.
        let c = cause.to_string();
        if !s.ends_with(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        src = cause.source();
    }
    s
}
