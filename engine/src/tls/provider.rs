//! The one rustls crypto provider of the process. Every config is built with
//! `builder_with_provider(provider())`: no process default is installed, and
//! `builder()` would panic. Switching to aws-lc-rs is a change to this file.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

pub fn provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}
