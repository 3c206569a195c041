//! Route regexes (path and header matchers), compiled alike by the control
//! plane (to validate a mesh) and the proxy (to match): anchored to the
//! whole value, with a size limit per regex and a budget for all the regexes
//! of one config, so a hostile config costs bounded time and memory to
//! compile and to hold (10,000 routes with a near-limit regex each would
//! otherwise take minutes and gigabytes).

use regex_automata::meta;
use regex_automata::util::syntax;

pub use regex_automata::meta::Regex;

/// Compiled (NFA) size limit of one regex.
pub const SIZE_LIMIT: usize = 1 << 20;
/// Heap of all the compiled regexes of one config together
/// (`Regex::memory_usage`). A typical route regex takes a few KiB; one with
/// Unicode classes (`\w+`) some 100 KiB.
pub const TOTAL_LIMIT: usize = 64 << 20;
/// Lazy-DFA cache of one regex in one thread (the `regex` crate's default
/// is 2 MiB): with many regexes and many workers the default could add up to
/// gigabytes for requests crafted to visit many DFA states.
pub const CACHE_CAPACITY: usize = 256 << 10;

/// What is left of [`TOTAL_LIMIT`] while one config is compiled.
#[derive(Debug)]
pub struct Budget {
    left: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget { left: TOTAL_LIMIT }
    }
}

impl Budget {
    /// Bytes still available.
    pub fn left(&self) -> usize {
        self.left
    }
}

/// Compiles `pattern` to match a whole value (`^(?:pattern)$`), as the
/// `regex` crate's `bytes::Regex` would (Unicode classes, matching bytes that
/// are not UTF-8). The pattern must also stand on its own: `a)|(b` would
/// otherwise close our group and escape the anchors. The error reads like
/// the `regex` crate's.
pub fn compile(pattern: &str, budget: &mut Budget) -> Result<Regex, String> {
    let limit = SIZE_LIMIT.min(budget.left);
    // Parsed, not compiled, on its own: half the time of a hostile config.
    syntax::parse_with(pattern, &syntax_config()).map_err(|e| shorten(e.to_string()))?;
    let re = build(&format!("^(?:{pattern})$"), limit)?;
    let used = re.memory_usage();
    if used > budget.left {
        return Err(over_budget());
    }
    budget.left -= used;
    Ok(re)
}

fn over_budget() -> String {
    format!("the regexes of this config together exceed the limit of {TOTAL_LIMIT} bytes compiled")
}

fn build(pattern: &str, limit: usize) -> Result<Regex, String> {
    let config = meta::Config::new()
        .nfa_size_limit(Some(limit))
        .hybrid_cache_capacity(CACHE_CAPACITY)
        .match_kind(regex_automata::MatchKind::LeftmostFirst)
        .utf8_empty(false);
    meta::Builder::new()
        .configure(config)
        .syntax(syntax_config())
        .build(pattern)
        .map_err(|e| match (e.size_limit(), e.syntax_error()) {
            (Some(l), _) if l < SIZE_LIMIT => over_budget(),
            (Some(l), _) => format!("Compiled regex exceeds size limit of {l} bytes."),
            (None, Some(s)) => shorten(s.to_string()),
            (None, None) => e.to_string(),
        })
}

/// As `regex::bytes::RegexBuilder` configures it.
fn syntax_config() -> syntax::Config {
    syntax::Config::new().utf8(false)
}

/// A parse error quotes the pattern twice (the pattern and a marker line):
/// past a few hundred bytes only what is wrong is kept.
fn shorten(msg: String) -> String {
    if msg.len() <= 512 {
        return msg;
    }
    let what = msg.lines().last().unwrap_or_default();
    format!(
        "regex parse error: {}",
        what.strip_prefix("error: ").unwrap_or(what)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(p: &str) -> Result<Regex, String> {
        compile(p, &mut Budget::default())
    }

    #[test]
    fn matches_like_an_anchored_regex_crate_bytes_regex() {
        let patterns = [
            "/users/[0-9]+",
            "/a|/b",
            "/x.",
            "(?-u)/x.",
            "\\w+",
            "(?i)/ADMIN.*",
            "/caf\u{e9}",
            "[^/]+",
            "",
        ];
        let values: [&[u8]; 12] = [
            b"/users/42",
            b"/users/42/x",
            b"x/users/42",
            b"/b",
            b"/b/c",
            b"/x\xff",
            b"/xy",
            "h\u{e9}llo".as_bytes(),
            b"/admin/x",
            "/caf\u{e9}".as_bytes(),
            b"",
            b"a\nb",
        ];
        for p in patterns {
            let ours = one(p).unwrap();
            let theirs = regex::bytes::Regex::new(&format!("^(?:{p})$")).unwrap();
            for v in values {
                assert_eq!(
                    ours.is_match(v),
                    theirs.is_match(v),
                    "{p:?} on {:?}",
                    String::from_utf8_lossy(v)
                );
            }
        }
    }

    #[test]
    fn errors_read_like_the_regex_crate() {
        let e = one("a)|(b").unwrap_err();
        assert!(e.starts_with("regex parse error:"), "{e}");
        let e = one("[z-a]").unwrap_err();
        assert!(e.starts_with("regex parse error:"), "{e}");
        assert_eq!(
            one("(\\w{100}){100}").unwrap_err(),
            "Compiled regex exceeds size limit of 1048576 bytes."
        );
        let deep = format!("{}a{}", "(".repeat(1000), ")".repeat(1000));
        assert_eq!(
            one(&deep).unwrap_err(),
            "regex parse error: exceed the maximum number of nested parentheses/brackets (250)"
        );
    }

    #[test]
    fn the_budget_bounds_all_the_regexes_of_a_config() {
        let mut b = Budget::default();
        let mut n = 0;
        let err = loop {
            match compile("/[a-z0-9]{9000}", &mut b) {
                Ok(_) => n += 1,
                Err(e) => break e,
            }
            assert!(n < 1000, "no budget");
        };
        assert_eq!(
            err,
            "the regexes of this config together exceed the limit of 67108864 bytes compiled"
        );
        assert!(n > 10, "{n}");
        // Typical route regexes take a few KiB: 10,000 fit with room to spare.
        let mut b = Budget::default();
        for _ in 0..100 {
            compile("/api/v[0-9]+/users/[^/]+", &mut b).unwrap();
        }
        let each = (TOTAL_LIMIT - b.left()) / 100;
        assert!(each * 10_000 < TOTAL_LIMIT / 2, "{each} bytes each");
    }
}
