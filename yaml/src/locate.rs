//! Walks yaml-rust2's parser events over one file, without building values:
//! maps a field path (`traffic[0].routes[1].split[0].weight`) to the line it
//! was written on, so errors found after deserialization (unknown service,
//! duplicate names) still point the operator at a line; and counts the nodes
//! a deserializer would see with every alias expanded, so an alias bomb is
//! refused before serde_yaml expands it.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Paths are recorded this deep at most: deeper than any field of our
/// schemas, and recording every path of a deeply nested document costs the
/// square of its depth (100,000 nested `[` took a minute).
const MAX_DEPTH: usize = 64;

enum Frame {
    Map { key: Option<String> },
    Seq { index: usize },
}

#[derive(Default)]
struct Walker {
    stack: Vec<Frame>,
    lines: HashMap<String, usize>,
}

impl Walker {
    fn path(&self) -> String {
        let mut p = String::new();
        for f in &self.stack {
            match f {
                Frame::Map { key: Some(k) } => {
                    if !p.is_empty() {
                        p.push('.');
                    }
                    p.push_str(k);
                }
                Frame::Map { key: None } => {}
                Frame::Seq { index } => {
                    p.push('[');
                    p.push_str(&index.to_string());
                    p.push(']');
                }
            }
        }
        p
    }

    /// A value (scalar or container) was completed: advance the parent.
    fn value_done(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Map { key }) => *key = None,
            Some(Frame::Seq { index }) => *index += 1,
            None => {}
        }
    }

    fn record(&mut self, line: usize) {
        if self.stack.len() > MAX_DEPTH {
            return;
        }
        let p = self.path();
        self.lines.entry(p).or_insert(line);
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(s, ..) => {
                if let Some(Frame::Map { key }) = self.stack.last_mut() {
                    if key.is_none() {
                        *key = Some(s);
                        self.record(mark.line());
                        return;
                    }
                }
                self.record(mark.line());
                self.value_done();
            }
            Event::MappingStart(..) => {
                self.record(mark.line());
                self.stack.push(Frame::Map { key: None });
            }
            Event::SequenceStart(..) => {
                self.record(mark.line());
                self.stack.push(Frame::Seq { index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.value_done();
            }
            Event::Alias(..) => {
                self.record(mark.line());
                self.value_done();
            }
            _ => {}
        }
    }
}

/// Line numbers (1-based) of every field path in `text`. A document that does
/// not parse yields an empty map (serde_yaml reports that error itself).
pub fn field_lines(text: &str) -> HashMap<String, usize> {
    let mut w = Walker::default();
    let mut parser = Parser::new_from_str(text);
    if parser.load(&mut w, false).is_err() {
        return HashMap::new();
    }
    w.lines
}

/// The line of `path`, or of its closest recorded ancestor.
pub fn line_of(lines: &HashMap<String, usize>, path: &str) -> Option<usize> {
    let mut p = path;
    loop {
        if let Some(l) = lines.get(p) {
            return Some(*l);
        }
        let cut = p.rfind(['.', '['])?;
        p = &p[..cut];
    }
}

/// The line (1-based) where the second document of `text` starts, if it has
/// one. serde_yaml refuses a stream of several documents without a location;
/// this is the line to point the operator at.
pub fn second_document(text: &str) -> Option<usize> {
    #[derive(Default)]
    struct Starts(Vec<usize>);
    impl MarkedEventReceiver for Starts {
        fn on_event(&mut self, ev: Event, mark: Marker) {
            if let Event::DocumentStart = ev {
                self.0.push(mark.line());
            }
        }
    }
    let mut starts = Starts::default();
    // A syntax error further on does not move where the second document began.
    let _ = Parser::new_from_str(text).load(&mut starts, true);
    starts.0.get(1).copied()
}

/// Containers nested deeper than this are refused before serde_yaml sees
/// the document: its parser (libyaml) takes time in the square of the depth
/// (100,000 nested `[` in a 200 KB file took a minute). Configs nest less
/// than a dozen levels.
pub const MAX_NESTING: usize = 64;

/// Why [`precheck`] refuses a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// More values than the budget, aliases expanded.
    TooManyValues { line: usize },
    /// Containers nested more than [`MAX_NESTING`] deep.
    TooDeep { line: usize },
}

/// Counts nodes as a deserializer sees them: an alias counts as the size of
/// the node it names, computed once, so nothing is expanded here.
struct Counter {
    total: usize,
    budget: usize,
    max_depth: usize,
    sizes: HashMap<usize, usize>,
    /// Open containers: (anchor id, `total` before the container).
    open: Vec<(usize, usize)>,
    refused: Option<Refused>,
}

impl MarkedEventReceiver for Counter {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.refused.is_some() {
            return;
        }
        match ev {
            Event::Scalar(_, _, anchor, _) => {
                self.total += 1;
                if anchor > 0 {
                    self.sizes.insert(anchor, 1);
                }
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                self.open.push((anchor, self.total));
                self.total += 1;
                if self.open.len() > self.max_depth {
                    self.refused = Some(Refused::TooDeep { line: mark.line() });
                    return;
                }
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((anchor, start)) = self.open.pop() {
                    if anchor > 0 {
                        self.sizes.insert(anchor, self.total - start);
                    }
                }
            }
            Event::Alias(anchor) => {
                let n = self.sizes.get(&anchor).copied().unwrap_or(1);
                self.total = self.total.saturating_add(n);
            }
            _ => {}
        }
        if self.total > self.budget {
            self.refused = Some(Refused::TooManyValues { line: mark.line() });
        }
    }
}

/// The number of nodes in `text` with aliases expanded, or `Err(line)` where
/// it went past `budget`. A document that does not parse counts 0 (serde_yaml
/// reports that error itself).
pub fn expanded_nodes(text: &str, budget: usize) -> Result<usize, usize> {
    match count(text, budget, usize::MAX) {
        Err(Refused::TooManyValues { line } | Refused::TooDeep { line }) => Err(line),
        Ok(n) => Ok(n),
    }
}

/// What a loader checks before serde_yaml parses `text`: at most `budget`
/// values with aliases expanded (see [`expanded_nodes`]) and containers
/// nested at most [`MAX_NESTING`] deep. A document that does not parse
/// passes (serde_yaml reports that error itself).
pub fn precheck(text: &str, budget: usize) -> Result<usize, Refused> {
    count(text, budget, MAX_NESTING)
}

fn count(text: &str, budget: usize, max_depth: usize) -> Result<usize, Refused> {
    let mut c = Counter {
        total: 0,
        budget,
        max_depth,
        sizes: HashMap::new(),
        open: Vec::new(),
        refused: None,
    };
    let mut parser = Parser::new_from_str(text);
    let parsed = parser.load(&mut c, false);
    if let Some(r) = c.refused {
        return Err(r);
    }
    match parsed {
        // yaml-rust2 stops at 255 nested flow collections, which it must
        // scan to their end before it reports the first of them.
        Err(e) if max_depth < usize::MAX && e.info() == "recursion limit exceeded" => {
            Err(Refused::TooDeep {
                line: e.marker().line(),
            })
        }
        Err(_) => Ok(0),
        Ok(()) => Ok(c.total),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_fields() {
        let y = "mesh:\n  trust_domain: x\ntraffic:\n  - name: a\n    service: b\n  - name: c\n    routes:\n      - name: r\n        split:\n          - { subset: v1, weight: 3 }\n";
        let l = field_lines(y);
        assert_eq!(l.get("mesh.trust_domain"), Some(&2));
        assert_eq!(l.get("traffic[1].name"), Some(&6));
        assert_eq!(
            line_of(&l, "traffic[1].routes[0].split[0].weight"),
            Some(10)
        );
        assert_eq!(line_of(&l, "traffic[1].routes[0].split[0].nope"), Some(10));
        assert_eq!(line_of(&l, "traffic[1].routes[0].timeout"), Some(8));
        assert_eq!(line_of(&l, "nothing"), None);
    }

    #[test]
    fn finds_the_second_document() {
        // Found by the fuzz target config_yaml: serde_yaml's error had no line.
        assert_eq!(second_document("a: 1\n---\nb: 2\n"), Some(2));
        assert_eq!(second_document("# c\na: 1\n\n--- x\n"), Some(4));
        assert_eq!(second_document("a: 1\n"), None);
        assert_eq!(second_document(""), None);
        assert_eq!(second_document("a: 1\n---\n[\n"), Some(2));
    }

    #[test]
    fn counts_expanded_aliases() {
        assert_eq!(expanded_nodes("a: 1\nb: [x, y]\n", 100), Ok(7));
        // b is the 3-node list twice more.
        assert_eq!(
            expanded_nodes("a: &l [x, y]\nb: [*l, *l]\n", 100),
            Ok(1 + 1 + 3 + 1 + 1 + 3 + 3)
        );
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..30 {
            let p = i - 1;
            bomb.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert_eq!(expanded_nodes(&bomb, 1_000_000), Err(8));
        assert_eq!(expanded_nodes("a: [", 10), Ok(0));
    }

    #[test]
    fn deep_nesting_is_refused_before_serde_yaml_sees_it() {
        // libyaml (under serde_yaml) takes the square of the depth:
        // 100,000 nested `[` took a minute there.
        let deep = format!("a: 1\nb: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let t = std::time::Instant::now();
        assert_eq!(
            precheck(&deep, 1_000_000),
            Err(Refused::TooDeep { line: 2 })
        );
        let deep_map = format!(
            "a:\n  b: {}1{}\n",
            "{x: ".repeat(100_000),
            "}".repeat(100_000)
        );
        assert_eq!(
            precheck(&deep_map, 1_000_000),
            Err(Refused::TooDeep { line: 2 })
        );
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        let ok = format!(
            "a: {}{}\n",
            "[".repeat(MAX_NESTING - 1),
            "]".repeat(MAX_NESTING - 1)
        );
        assert!(precheck(&ok, 1_000_000).is_ok());
        assert_eq!(
            precheck("a: [x, y]\n", 3),
            Err(Refused::TooManyValues { line: 1 })
        );
        // expanded_nodes keeps counting values only.
        assert_eq!(expanded_nodes("a: [x, y]\n", 100), Ok(5));
    }
}
