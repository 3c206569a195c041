//! The one rustls crypto provider of the process. Every config is built with
//! `builder_with_provider(provider())`: no process default is installed, and
//! `builder()` would panic. Switching to aws-lc-rs is a change to this file.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

///
/// Under `--ktls on` (`ktls::required()`), the TLS 1.3 suites are cut down to
/// the ones the kernel accepted at the probe, so every mesh session can move
/// to the kernel; TLS 1.2 suites (edge listeners only) stay and run in user
/// space. `ktls::init` runs before the first config is compiled.
pub fn provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| {
        let mut p = rustls::crypto::ring::default_provider();
        // AES-128-GCM first (ring lists AES-256 first). Both ends of a mesh
        // hop are ringmesh, so this decides every hop. The 16 KiB-body
        // profile (bench/RESULTS.md, issue 5) put about half of the mTLS
        // cost in AES-GCM itself; AES-128 runs 10 rounds instead of 14 at a
        // security level nobody disputes, and BoringSSL (Envoy) and Go order
        // their suites the same way. A stable sort keeps the rest in order.
        p.cipher_suites
            .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        if let Some(k) = crate::ktls::required() {
            p.cipher_suites.retain(|s| match s {
                rustls::SupportedCipherSuite::Tls13(_) => {
                    crate::ktls::Suite::of(*s).is_some_and(|x| k.has(x))
                }
                _ => true,
            });
        }
        Arc::new(p)
    })
    .clone()
}
