//! Content hashes that name resource versions: FNV-1a (128 bits) over the
//! protobuf encoding, folded to 64 bits of hex. Unlike std's hasher it is the
//! same in every build, so a restarted control plane computes the versions
//! its proxies already run and sends them nothing.

const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;

/// Incremental FNV-1a, 128 bits.
#[derive(Debug, Clone, Copy)]
pub struct Fnv128(u128);

impl Default for Fnv128 {
    fn default() -> Self {
        Self(OFFSET)
    }
}

impl Fnv128 {
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u128::from(b);
            self.0 = self.0.wrapping_mul(PRIME);
        }
    }

    pub fn finish(self) -> u128 {
        self.0
    }
}

/// The hash of one byte string.
pub fn hash_bytes(bytes: &[u8]) -> u128 {
    let mut h = Fnv128::default();
    h.write(bytes);
    h.finish()
}

/// A version string: 16 hex digits.
pub fn version_hex(hash: u128) -> String {
    // Truncation is the point: the two halves are folded into 64 bits.
    let folded = (hash as u64) ^ ((hash >> 64) as u64);
    format!("{folded:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_stable_and_sensitive_to_every_byte() {
        // A fixed value: versions must not change between builds.
        assert_eq!(version_hex(hash_bytes(b"")), "0eda065b652ec4cf");
        assert_ne!(hash_bytes(b"ab"), hash_bytes(b"ba"));
        assert_ne!(hash_bytes(b"a"), hash_bytes(b"a\0"));
        assert_eq!(version_hex(hash_bytes(b"x")).len(), 16);
    }
}
