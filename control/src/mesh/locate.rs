//! Maps a field path (`traffic[0].routes[1].split[0].weight`) to the line it
//! was written on, so errors found after deserialization (unknown service,
//! duplicate names) still point the operator at a line. Walks yaml-rust2's
//! parser events; runs only when an error is reported.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

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
}
