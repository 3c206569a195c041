//! rustls traffic secrets to the kernel's `tls12_crypto_info_*` structs (via
//! ktls-core's shim), and the TLS 1.3 suites we offload.

use ktls_core::tls::AeadKey;
use ktls_core::{ConnectionTrafficSecrets, ProtocolVersion, TlsCryptoInfoRx, TlsCryptoInfoTx};

/// A TLS 1.3 AEAD the kernel can take over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20Poly1305,
}

impl Suite {
    pub const ALL: [Suite; 3] = [Suite::Aes128Gcm, Suite::Aes256Gcm, Suite::Chacha20Poly1305];

    pub fn name(self) -> &'static str {
        match self {
            Suite::Aes128Gcm => "TLS13_AES_128_GCM_SHA256",
            Suite::Aes256Gcm => "TLS13_AES_256_GCM_SHA384",
            Suite::Chacha20Poly1305 => "TLS13_CHACHA20_POLY1305_SHA256",
        }
    }

    /// The suite a finished rustls handshake negotiated, if we offload it.
    pub fn of(suite: rustls::SupportedCipherSuite) -> Option<Suite> {
        match suite {
            rustls::SupportedCipherSuite::Tls13(s) => match s.common.suite {
                rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => Some(Suite::Aes128Gcm),
                rustls::CipherSuite::TLS13_AES_256_GCM_SHA384 => Some(Suite::Aes256Gcm),
                rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => {
                    Some(Suite::Chacha20Poly1305)
                }
                _ => None,
            },
            // TLS 1.2 is never negotiated between mesh proxies.
            _ => None,
        }
    }
}

/// Both directions' secrets and record sequence numbers, ready for the kernel.
pub struct CryptoInfo {
    pub suite: Suite,
    pub tx_seq: u64,
    pub rx_seq: u64,
    pub(crate) tx: ConnectionTrafficSecrets,
    pub(crate) rx: ConnectionTrafficSecrets,
}

impl std::fmt::Debug for CryptoInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("CryptoInfo")
            .field("suite", &self.suite)
            .field("tx_seq", &self.tx_seq)
            .field("rx_seq", &self.rx_seq)
            .finish_non_exhaustive()
    }
}

/// Converts what `dangerous_extract_secrets` gave for a TLS 1.3 session.
pub fn crypto_info(
    suite: Suite,
    secrets: rustls::ExtractedSecrets,
) -> Result<CryptoInfo, ktls_core::Error> {
    let s = ktls_core::ExtractedSecrets::try_from(secrets)?;
    Ok(CryptoInfo {
        suite,
        tx_seq: s.tx.0,
        rx_seq: s.rx.0,
        tx: s.tx.1,
        rx: s.rx.1,
    })
}

impl CryptoInfo {
    /// The kernel structs, in the order they are set (TLS_TX, then TLS_RX).
    pub fn into_kernel(self) -> Result<(TlsCryptoInfoTx, TlsCryptoInfoRx), ktls_core::Error> {
        Ok((
            TlsCryptoInfoTx::new(ProtocolVersion::TLSv1_3, self.tx, self.tx_seq)?,
            TlsCryptoInfoRx::new(ProtocolVersion::TLSv1_3, self.rx, self.rx_seq)?,
        ))
    }
}

/// The (iv, salt) halves the kernel struct gets: for AES-GCM the 12-byte TLS
/// 1.3 IV splits into a 4-byte salt and an 8-byte "iv"; ChaCha20 keeps all 12
/// bytes as iv. The key itself is private to ktls-core.
#[cfg(test)]
pub(crate) fn iv_salt(s: &ConnectionTrafficSecrets) -> (Vec<u8>, Vec<u8>) {
    match s {
        ConnectionTrafficSecrets::Aes128Gcm { iv, salt, .. } => (iv.to_vec(), salt.to_vec()),
        ConnectionTrafficSecrets::Aes256Gcm { iv, salt, .. } => (iv.to_vec(), salt.to_vec()),
        ConnectionTrafficSecrets::Chacha20Poly1305 { iv, salt, .. } => (iv.to_vec(), salt.to_vec()),
        _ => (Vec::new(), Vec::new()),
    }
}

/// TLS_TX material with an all-zero key, for the probe.
pub(crate) fn dummy_tx(suite: Suite) -> Result<TlsCryptoInfoTx, ktls_core::Error> {
    let secrets = match suite {
        Suite::Aes128Gcm => ConnectionTrafficSecrets::Aes128Gcm {
            key: AeadKey::new([0; libc::TLS_CIPHER_AES_GCM_128_KEY_SIZE]),
            iv: Default::default(),
            salt: Default::default(),
        },
        Suite::Aes256Gcm => ConnectionTrafficSecrets::Aes256Gcm {
            key: AeadKey::new([0; libc::TLS_CIPHER_AES_GCM_256_KEY_SIZE]),
            iv: Default::default(),
            salt: Default::default(),
        },
        Suite::Chacha20Poly1305 => ConnectionTrafficSecrets::Chacha20Poly1305 {
            key: AeadKey::new([0; libc::TLS_CIPHER_CHACHA20_POLY1305_KEY_SIZE]),
            iv: Default::default(),
            salt: Default::default(),
        },
    };
    TlsCryptoInfoTx::new(ProtocolVersion::TLSv1_3, secrets, 0)
}
