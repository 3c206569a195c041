//! Authorization policy values both loaders check the same way, so a policy
//! the control plane accepts is one every proxy accepts: SPIFFE ID patterns
//! and request paths in normal form.

/// What an `identities` entry means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpiffePattern {
    /// The entry is one exact SPIFFE ID.
    Exact,
    /// `spiffe://<td>/ns/<ns>/*`: any ID starting with this prefix
    /// (`spiffe://<td>/ns/<ns>/`).
    Namespace(String),
}

/// Checks an `identities` entry: an exact `spiffe://` ID, or
/// `spiffe://<trust domain>/ns/<namespace>/*`.
pub fn spiffe_pattern(id: &str) -> Result<SpiffePattern, String> {
    let Some(rest) = id.strip_prefix("spiffe://") else {
        return Err(format!("{id:?} is not a spiffe:// ID"));
    };
    if rest.is_empty()
        || id
            .bytes()
            .any(|b| b <= b' ' || b == 0x7f || b == b'?' || b == b'#')
    {
        return Err(format!("{id:?} is not a spiffe:// ID"));
    }
    if let Some(prefix) = id.strip_suffix("/*") {
        let parts: Vec<&str> = prefix["spiffe://".len()..].split('/').collect();
        return match parts.as_slice() {
            [td, "ns", ns] if !td.is_empty() && !ns.is_empty() && !ns.contains('*') => {
                Ok(SpiffePattern::Namespace(format!("{prefix}/")))
            }
            _ => Err(format!(
                "{id:?}: a wildcard is written spiffe://<trust domain>/ns/<namespace>/*"
            )),
        };
    }
    if id.contains('*') {
        return Err(format!(
            "{id:?}: an exact SPIFFE ID, or spiffe://<trust domain>/ns/<namespace>/*"
        ));
    }
    Ok(SpiffePattern::Exact)
}

/// The path part of a request target, normalized for matching: query and
/// fragment dropped, `%XX` of unreserved characters decoded (other escapes
/// kept, hex upper-cased), `.` and `..` segments removed, runs of `/`
/// merged. The result always starts with `/`.
pub fn normalize_path(target: &[u8]) -> Vec<u8> {
    let end = target
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(target.len());
    let raw = &target[..end];
    // Decode unreserved escapes.
    let mut dec = Vec::with_capacity(raw.len() + 1);
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'%' && i + 2 < raw.len() {
            if let (Some(h), Some(l)) = (hex(raw[i + 1]), hex(raw[i + 2])) {
                let c = h << 4 | l;
                if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                    dec.push(c);
                } else {
                    dec.push(b'%');
                    dec.push(raw[i + 1].to_ascii_uppercase());
                    dec.push(raw[i + 2].to_ascii_uppercase());
                }
                i += 3;
                continue;
            }
        }
        dec.push(b);
        i += 1;
    }
    // Resolve segments.
    let mut out: Vec<&[u8]> = Vec::new();
    let trailing = dec.ends_with(b"/") || dec.ends_with(b"/.") || dec.ends_with(b"/..");
    for seg in dec.split(|&b| b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut path = Vec::with_capacity(dec.len() + 1);
    for s in &out {
        path.push(b'/');
        path.extend_from_slice(s);
    }
    if path.is_empty() || (trailing && !out.is_empty()) {
        path.push(b'/');
    }
    path
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Checks a rule's path: it must start with `/` and already be in the form
/// requests are matched in, or it could never match.
pub fn normal_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("{p:?} must start with /"));
    }
    let n = normalize_path(p.as_bytes());
    if n != p.as_bytes() {
        return Err(format!(
            "{p:?} is not in normal form (requests are matched as {:?})",
            String::from_utf8_lossy(&n)
        ));
    }
    Ok(())
}
