//! Reading `callgrind_annotate` output for the `grpc --callgrind` report:
//! the function lines, the cost per request grouped by component (crate,
//! or engine source file), the top functions by self cost and the callers of
//! libc's memcpy/memmove. Pure functions of the text, unit-tested.
//!
//! With fat LTO almost everything is inlined, so callgrind names a cost by
//! the source file of the inlined code and the symbol it was inlined into
//! (`h2-0.4.20/src/hpack/table.rs:h2::frame::headers::HeaderBlock::into_encoding`);
//! the grouping goes by the file, which is where the work was written.

use std::collections::HashMap;

/// One `Ir (pct)  file:function` line.
#[derive(Debug, Clone, PartialEq)]
pub struct FnCost {
    pub ir: u64,
    pub name: String,
}

fn parse_line(l: &str) -> Option<(u64, &str)> {
    let l = l.trim_start();
    let (num, rest) = l.split_once(' ')?;
    let ir: u64 = num.replace(',', "").parse().ok()?;
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('(')?;
    let (_, rest) = rest.split_once(')')?;
    Some((ir, rest.trim()))
}

/// The program total and the function lines of a flat `callgrind_annotate
/// --auto=no` listing. Lines whose cost equals the total are left out: they
/// are the thread's root frames (`clone`, `start_thread`, …), which a dump
/// taken after `callgrind_control -z` lists at 100% even as self cost.
pub fn parse_flat(text: &str) -> (u64, Vec<FnCost>) {
    let mut total = 0;
    let mut v = vec![];
    for l in text.lines() {
        let Some((ir, rest)) = parse_line(l) else {
            continue;
        };
        if rest == "PROGRAM TOTALS" {
            total = ir;
            continue;
        }
        if ir == total || rest.starts_with('<') || rest.starts_with('*') {
            continue;
        }
        v.push(FnCost {
            ir,
            name: rest.to_string(),
        });
    }
    (total, v)
}

/// The component a function line's cost belongs to.
pub fn component(name: &str) -> String {
    let file = name.split(':').next().unwrap_or(name);
    let func = name.get(file.len() + 1..).unwrap_or("");
    if file.contains("memmove") || file.contains("memcpy") {
        return "libc memcpy/memmove".into();
    }
    if file.contains("memcmp") || file.contains("memset") {
        return "libc memcmp/memset".into();
    }
    if let Some(i) = file.find("engine/src/") {
        return format!("engine {}", &file[i + "engine/src/".len()..]);
    }
    // A crate from the registry: `…/index.crates.io-…/NAME-VERSION/src/PATH`.
    if let Some(i) = file.find("index.crates.io-") {
        let rest = &file[i..];
        let mut parts = rest.splitn(3, '/');
        let _ = parts.next();
        let krate = parts.next().unwrap_or("");
        let name = krate
            .rsplit_once('-')
            .map(|(n, _)| n)
            .unwrap_or(krate)
            .to_string();
        // h2 is where most of the work is: split it by module.
        if name == "h2" {
            let path = parts.next().unwrap_or("");
            let path = path.strip_prefix("src/").unwrap_or(path);
            let module = match path.split('/').next() {
                Some("hpack") => "hpack",
                Some("proto") => "proto (streams, flow control)",
                Some("codec") => "codec (framing)",
                Some("frame") => "frame",
                _ => "other",
            };
            return format!("h2 {module}");
        }
        return name;
    }
    if file.contains("/rustc/") || file.contains("/library/") {
        let into = func
            .trim_start_matches('<')
            .split("::")
            .next()
            .unwrap_or("?");
        return format!("std/core/alloc inlined into {into}");
    }
    if file.contains("sysdeps") || file.contains("libc.so") {
        return "libc other".into();
    }
    "other".into()
}

/// Self cost per component, biggest first.
pub fn by_component(fns: &[FnCost]) -> Vec<(String, u64)> {
    let mut m: HashMap<String, u64> = HashMap::new();
    for f in fns {
        *m.entry(component(&f.name)).or_default() += f.ir;
    }
    let mut v: Vec<(String, u64)> = m.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

/// The callers of libc's memcpy/memmove (`--tree=caller`), biggest first:
/// (Ir, caller line with its call count).
pub fn memcpy_callers(tree: &str) -> Vec<(u64, String)> {
    let mut out = vec![];
    let mut block: Vec<(u64, String)> = vec![];
    for l in tree.lines() {
        if l.trim().is_empty() {
            block.clear();
            continue;
        }
        let Some((ir, rest)) = parse_line(l) else {
            block.clear();
            continue;
        };
        if let Some(c) = rest.strip_prefix('<') {
            block.push((ir, c.trim().to_string()));
        } else if let Some(f) = rest.strip_prefix('*') {
            if f.contains("memcpy") || f.contains("memmove") {
                out.append(&mut block);
            }
            block.clear();
        }
    }
    out.sort_by_key(|c| std::cmp::Reverse(c.0));
    out
}

/// Shortens `…/index.crates.io-…/h2-0.4.20/src/x.rs:f` to `h2-0.4.20/src/x.rs:f`
/// and `/rustc/HASH/library/…` to `library/…` for the report.
pub fn short(name: &str) -> String {
    let mut s = name.to_string();
    if let Some(i) = s.find("index.crates.io-") {
        if let Some(j) = s[i..].find('/') {
            s = s[i + j + 1..].to_string();
        }
    }
    if let Some(i) = s.find("/library/") {
        s = s[i + 1..].to_string();
    }
    if let Some(i) = s.find("/engine/src/") {
        s = s[i + 1..].to_string();
    }
    // The binary's path in brackets adds nothing.
    if let Some(i) = s.rfind(" [/") {
        if !s[i..].contains(".so") {
            s.truncate(i);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLAT: &str = "--------------------------------------------------------------------------------
1,000,000 (100.0%)  PROGRAM TOTALS

--------------------------------------------------------------------------------
Ir                      file:function
--------------------------------------------------------------------------------
1,000,000 (100.0%)  ./misc/../sysdeps/unix/sysv/linux/x86_64/clone.S:clone [/usr/lib/x86_64-linux-gnu/libc.so.6]
  400,000 (40.00%)  ./string/../sysdeps/x86_64/multiarch/memmove-vec-unaligned-erms.S:__memcpy_avx_unaligned_erms [/usr/lib/x86_64-linux-gnu/libc.so.6]
  200,000 (20.00%)  /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/h2-0.4.20/src/hpack/table.rs:h2::frame::headers::HeaderBlock::into_encoding
  100,000 (10.00%)  /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/http-1.5.0/src/header/map.rs:http::header::map::HeaderMap<T>::try_append2 [/tmp/b/ringmesh-proxy]
   50,000 ( 5.00%)  /work/wt/bench/engine/src/http2/proxy.rs:ringmesh_engine::http2::proxy::forward::{{closure}} [/tmp/b/ringmesh-proxy]
   50,000 ( 5.00%)  /rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/core/src/ptr/mod.rs:h2::codec::framed_write::Encoder<B>::buffer
   40,000 ( 4.00%)  /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/h2-0.4.20/src/proto/streams/store.rs:h2::proto::streams::store::Ptr::deref
";

    #[test]
    fn flat_listing() {
        let (total, fns) = parse_flat(FLAT);
        assert_eq!(total, 1_000_000);
        assert_eq!(fns.len(), 6);
        assert_eq!(fns[0].ir, 400_000);
        let g = by_component(&fns);
        assert_eq!(g[0], ("libc memcpy/memmove".to_string(), 400_000));
        assert_eq!(g[1], ("h2 hpack".to_string(), 200_000));
        assert_eq!(g[2], ("http".to_string(), 100_000));
        assert!(g.contains(&("engine http2/proxy.rs".to_string(), 50_000)));
        assert!(g.contains(&("std/core/alloc inlined into h2".to_string(), 50_000)));
        assert!(g.contains(&("h2 proto (streams, flow control)".to_string(), 40_000)));
    }

    #[test]
    fn shortening() {
        assert_eq!(
            short("/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/http-1.5.0/src/header/map.rs:f [/tmp/b/ringmesh-proxy]"),
            "http-1.5.0/src/header/map.rs:f"
        );
        assert_eq!(
            short("/work/wt/bench/engine/src/http2/proxy.rs:g"),
            "engine/src/http2/proxy.rs:g"
        );
        assert_eq!(
            short("/rustc/5980/library/alloc/src/boxed.rs:h"),
            "library/alloc/src/boxed.rs:h"
        );
    }

    #[test]
    fn memcpy_caller_tree() {
        let t = "  5,000 ( 1.00%)  < /x/a.rs:caller_a (10x)
  9,000 ( 2.00%)  < /x/b.rs:caller_b (20x) [/bin]
 14,000 ( 3.00%)  *  ./string/../memmove-vec-unaligned-erms.S:__memcpy_avx_unaligned_erms [/libc.so.6]

  7,000 ( 1.00%)  < /x/c.rs:caller_c (1x)
  7,000 ( 1.00%)  *  /x/d.rs:other_fn
";
        let c = memcpy_callers(t);
        assert_eq!(
            c,
            vec![
                (9000, "/x/b.rs:caller_b (20x) [/bin]".to_string()),
                (5000, "/x/a.rs:caller_a (10x)".to_string())
            ]
        );
    }
}
