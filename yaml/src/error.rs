//! The error every config loader reports: the file, the line where known and
//! the field path, so an operator can go straight to the mistake.

use std::fmt;
use std::path::PathBuf;

/// Displayed as `FILE:LINE: FIELD: MESSAGE` (line and field left out when
/// unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or the directory itself when it cannot be read).
    pub file: PathBuf,
    /// 1-based, where known.
    pub line: Option<usize>,
    /// Field path such as `listeners[0].virtual_hosts[1].routes[2].route.cluster`;
    /// empty when the whole file is at fault.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Longest error message kept: messages quote the offending value, and a
/// hostile file can hold a value of megabytes (which would then fill logs,
/// status pages and NACKs).
pub const MAX_MESSAGE: usize = 1024;

/// `msg` cut to at most [`MAX_MESSAGE`] bytes (on a character boundary),
/// marked with `...` where it was cut.
pub fn clip(mut msg: String) -> String {
    if msg.len() <= MAX_MESSAGE {
        return msg;
    }
    let mut cut = MAX_MESSAGE - 3;
    while !msg.is_char_boundary(cut) {
        cut -= 1;
    }
    msg.truncate(cut);
    msg.push_str("...");
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_clipped_on_a_character_boundary() {
        assert_eq!(clip("short".into()), "short");
        let long = format!("name {:?} is bad", "é".repeat(5000));
        let c = clip(long);
        assert!(c.len() <= MAX_MESSAGE && c.ends_with("..."), "{}", c.len());
        assert!(c.starts_with("name \"éé"));
    }

    #[test]
    fn names_file_line_and_field() {
        let mut e = ConfigError {
            file: "mesh/traffic.yaml".into(),
            line: Some(19),
            field: "traffic[0].routes[1].split[0].weight".into(),
            message: "weight 2000000 is more than 1000000".into(),
        };
        assert_eq!(
            e.to_string(),
            "mesh/traffic.yaml:19: traffic[0].routes[1].split[0].weight: weight 2000000 is more than 1000000"
        );
        e.line = None;
        e.field.clear();
        assert_eq!(
            e.to_string(),
            "mesh/traffic.yaml: weight 2000000 is more than 1000000"
        );
    }
}
