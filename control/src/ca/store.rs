//! The generated root on disk: `root.pem` (0644) and `root.key.pem` (0600)
//! in a 0700 directory, each written to a temporary file, synced and renamed
//! so a crash never leaves half a key. The key is written last: its presence
//! means the pair is complete.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256,
};
use time::OffsetDateTime;

use super::random_serial;
use crate::{log_info, log_warn};

pub const ROOT_CERT: &str = "root.pem";
pub const ROOT_KEY: &str = "root.key.pem";
/// Lifetime of a generated root.
pub const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The root's certificate and key PEM from `dir`, generated and stored on
/// the first start.
pub fn load_or_generate(dir: &Path, trust_domain: &str) -> Result<(String, String), String> {
    let cert_path = dir.join(ROOT_CERT);
    let key_path = dir.join(ROOT_KEY);
    if key_path.exists() {
        let key = read_key(&key_path)?;
        let cert = fs::read_to_string(&cert_path)
            .map_err(|e| format!("{}: cannot read the CA root: {e}", cert_path.display()))?;
        return Ok((cert, key));
    }
    if cert_path.exists() {
        // The key is written last: a root without it was never complete.
        log_warn!(
            "{} has no {ROOT_KEY} beside it; generating a new root",
            cert_path.display()
        );
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("{}: cannot create the CA directory: {e}", dir.display()))?;
    let (cert, key) =
        generate_root(trust_domain).map_err(|e| format!("generating the root: {e}"))?;
    write_atomic(&cert_path, cert.as_bytes(), 0o644)?;
    write_atomic(&key_path, key.as_bytes(), 0o600)?;
    log_info!(
        "generated a new mesh root for trust domain {trust_domain} in {} (key {}, mode 0600)",
        cert_path.display(),
        key_path.display()
    );
    Ok((cert, key))
}

/// A self-signed ECDSA P-256 root: 10 years, CA with a path length of one
/// (room for an intermediate), keyCertSign and cRLSign. No URI name
/// constraint: webpki refuses chains carrying one.
pub fn generate_root(trust_domain: &str) -> Result<(String, String), rcgen::Error> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, trust_domain);
    dn.push(DnType::CommonName, format!("ringmesh root {trust_domain}"));
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::from_secs(300);
    p.not_after = now + ROOT_LIFETIME;
    p.serial_number = Some(random_serial());
    let cert = p.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Reads a private key file, refusing one that group or others can read.
pub fn read_key(path: &Path) -> Result<String, String> {
    let meta = fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{}: the CA private key is readable by group or others (mode {mode:04o}); `chmod 600` it",
            path.display()
        ));
    }
    fs::read_to_string(path).map_err(|e| format!("{}: cannot read the CA key: {e}", path.display()))
}

/// Writes `bytes` to `path` with `mode` through a fresh temporary file in
/// the same directory, synced before and after the rename.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp: PathBuf = dir.join(format!(".{name}.tmp-{:08x}", fastrand::u32(..)));
    let err = |e: std::io::Error| format!("{}: cannot write: {e}", path.display());
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // Exactly `mode`, whatever the umask.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)
}
