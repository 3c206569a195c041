//! Kernel TLS offload: after a rustls handshake, hand the traffic secrets to
//! the kernel (TCP ULP "tls", TLS_TX/TLS_RX) so the worker moves plaintext
//! through the socket. Owns the `--ktls` mode, the start-up probe, the hand-off
//! (`handoff`), the offloaded stream (`stream`) and their metrics.

mod crypto;
mod handoff;
mod record;
mod stream;
#[doc(hidden)]
pub mod testing;

use std::fmt;
use std::net::{TcpListener, TcpStream};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crypto::dummy_tx;
pub use crypto::{crypto_info, CryptoInfo, Suite};
pub use handoff::{offload, Declined, OffloadError};
pub use stream::{KeyUsage, KtlsStream, ReadHalf, WriteHalf};

/// `--ktls`: whether mesh connections move to kernel TLS after the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Probe at start; use kTLS when the kernel has it, else user-space rustls.
    Auto,
    /// kTLS or refuse to start.
    On,
    /// Always user-space rustls.
    Off,
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Mode::Auto),
            "on" => Ok(Mode::On),
            "off" => Ok(Mode::Off),
            other => Err(format!("--ktls {other:?}: expected auto, on or off")),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Auto => "auto",
            Mode::On => "on",
            Mode::Off => "off",
        })
    }
}

/// The TLS 1.3 cipher suites the running kernel accepted at the probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Support {
    pub aes_128_gcm: bool,
    pub aes_256_gcm: bool,
    pub chacha20_poly1305: bool,
}

impl Support {
    pub fn has(&self, suite: Suite) -> bool {
        match suite {
            Suite::Aes128Gcm => self.aes_128_gcm,
            Suite::Aes256Gcm => self.aes_256_gcm,
            Suite::Chacha20Poly1305 => self.chacha20_poly1305,
        }
    }

    pub fn any(&self) -> bool {
        self.aes_128_gcm || self.aes_256_gcm || self.chacha20_poly1305
    }
}

impl fmt::Display for Support {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Suite::ALL
            .iter()
            .filter(|s| self.has(**s))
            .map(|s| s.name())
            .collect();
        f.write_str(&names.join(", "))
    }
}

/// Checks once that this kernel can run kTLS: sets the TLS ULP on an
/// established loopback connection, then TLS_TX with a dummy key for each
/// TLS 1.3 suite we negotiate (a fresh connection each, since TLS_TX can be
/// set once). Setting TLS_TX is what makes the kernel load `gcm(aes)` etc.,
/// so a kernel with `tls.ko` but no crypto modules is caught here.
pub fn probe() -> Result<Support, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("probe listener: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("probe listener: {e}"))?;
    let mut support = Support::default();
    let mut refused = Vec::new();
    for suite in Suite::ALL {
        let client = TcpStream::connect(addr).map_err(|e| format!("probe connect: {e}"))?;
        let _server = listener
            .accept()
            .map_err(|e| format!("probe accept: {e}"))?;
        if let Err(e) = ktls_core::setup_ulp(&client) {
            return Err(if e.is_ktls_unsupported() {
                format!("the kernel has no TLS ULP (CONFIG_TLS / module tls not loaded): {e}")
            } else {
                format!("setting the TLS ULP failed: {e}")
            });
        }
        match dummy_tx(suite).and_then(|info| info.set(&client)) {
            Ok(()) => match suite {
                Suite::Aes128Gcm => support.aes_128_gcm = true,
                Suite::Aes256Gcm => support.aes_256_gcm = true,
                Suite::Chacha20Poly1305 => support.chacha20_poly1305 = true,
            },
            Err(e) => refused.push(format!("{}: {e}", suite.name())),
        }
    }
    if support.any() {
        Ok(support)
    } else {
        Err(format!(
            "the kernel refused every TLS 1.3 cipher ({})",
            refused.join("; ")
        ))
    }
}

static SUPPORT: OnceLock<Option<Support>> = OnceLock::new();
static OFFLOADS: AtomicU64 = AtomicU64::new(0);
static OFFLOAD_FAILURES: AtomicU64 = AtomicU64::new(0);

/// Decides at start whether kTLS runs, from `mode` and (unless off) the probe.
/// `Ok(None)`: user-space rustls only. `Err`: `--ktls on` on a kernel without
/// kTLS; the caller exits. The result is kept process-wide (`enabled()`).
pub fn init(mode: Mode) -> Result<Option<Support>, String> {
    let got = decide(mode, probe)?;
    let _ = SUPPORT.set(got);
    Ok(got)
}

fn decide(
    mode: Mode,
    probe: impl FnOnce() -> Result<Support, String>,
) -> Result<Option<Support>, String> {
    match mode {
        Mode::Off => Ok(None),
        Mode::Auto => match probe() {
            Ok(s) => {
                crate::log::info(&format!("kTLS enabled ({s})"));
                Ok(Some(s))
            }
            Err(e) => {
                crate::log::info(&format!("kTLS unavailable ({e}); using user-space rustls"));
                Ok(None)
            }
        },
        Mode::On => match probe() {
            Ok(s) => {
                crate::log::info(&format!("kTLS enabled ({s})"));
                Ok(Some(s))
            }
            Err(e) => Err(format!(
                "--ktls on: kernel TLS is not available on this host: {e} \
                 (load it with `modprobe tls`, or run with --ktls auto|off)"
            )),
        },
    }
}

/// What `init` decided; `None` before `init` or when kTLS is off/unavailable.
pub fn enabled() -> Option<Support> {
    SUPPORT.get().copied().flatten()
}

pub(crate) fn count_offload(ok: bool) {
    let c = if ok { &OFFLOADS } else { &OFFLOAD_FAILURES };
    // Once per connection, at the end of its handshake: a shared atomic is
    // cheap enough and keeps the counter process-wide.
    c.fetch_add(1, Ordering::Relaxed);
}

/// NewSessionTickets that reached a kTLS socket and were skipped (the peer
/// had tickets on; mesh configs turn them off).
pub fn tickets_skipped() -> u64 {
    record::TICKETS_SKIPPED.load(Ordering::Relaxed)
}

/// The process-wide kTLS series for the admin `/metrics` page.
pub fn metrics(extra: &mut Vec<(&'static str, String, f64)>) {
    extra.push((
        "ringmesh_ktls_enabled",
        String::new(),
        if enabled().is_some() { 1.0 } else { 0.0 },
    ));
    extra.push((
        "ringmesh_ktls_offloads_total",
        String::new(),
        OFFLOADS.load(Ordering::Relaxed) as f64,
    ));
    extra.push((
        "ringmesh_ktls_offload_failures_total",
        String::new(),
        OFFLOAD_FAILURES.load(Ordering::Relaxed) as f64,
    ));
}

#[cfg(test)]
mod tests;
