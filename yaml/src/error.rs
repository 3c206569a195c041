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

#[cfg(test)]
mod tests {
    use super::*;

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
