//! Configuration: the YAML model users write (`model`), and its compilation into
//! the immutable, validated `Config` that one epoch of the workers runs on.

pub mod compile;
pub use ringmesh_yaml::duration;
use ringmesh_yaml::locate;
pub mod model;

use std::path::Path;

pub use compile::{Cluster, Config, Http2Limits, Limits, Listener, ListenerKind};

pub use ringmesh_yaml::ConfigError;

/// Values a config file may hold with YAML aliases expanded: far above any
/// real proxy config, far below what hurts.
const MAX_YAML_VALUES: usize = 1_000_000;

/// Read, parse and compile a config file. Runs on the control thread, never on
/// a worker: name resolution and regex compilation may take time.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with(path, &Overrides::default())
}

/// Settings given on the command line that win over the file's.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--admin`: replaces `admin.address`.
    pub admin: Option<String>,
}

impl Overrides {
    pub fn apply(&self, file: &mut model::File) {
        if let Some(a) = &self.admin {
            file.admin.address.clone_from(a);
        }
    }
}

/// `load`, with command-line overrides applied between parsing and compiling.
pub fn load_with(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_owned(),
        line: None,
        field: String::new(),
        message: format!("cannot read: {e}"),
    })?;
    load_str_with(path, &text, overrides)
}

pub fn load_str(path: &Path, text: &str) -> Result<Config, ConfigError> {
    load_str_with(path, text, &Overrides::default())
}

fn load_str_with(path: &Path, text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
    // Counted before serde_yaml runs: it expands aliases first, so a small
    // file of nested aliases could otherwise take gigabytes.
    if let Err(line) = locate::expanded_nodes(text, MAX_YAML_VALUES) {
        return Err(ConfigError {
            file: path.to_owned(),
            line: Some(line),
            field: String::new(),
            message: format!("more than {MAX_YAML_VALUES} YAML values (aliases expanded)"),
        });
    }
    let mut file: model::File = if text.trim().is_empty() {
        model::File::default()
    } else {
        serde_yaml::from_str(text).map_err(|e| {
            // serde_yaml puts the field path at the front and the location at
            // the end of its message; keep the path, move the line up front.
            let mut msg = e.to_string();
            if let Some(cut) = msg.find(" at line ") {
                msg.truncate(cut);
            }
            let (field, message) = match msg.split_once(": ") {
                Some((f, m)) if !f.contains(' ') => (f.to_owned(), m.to_owned()),
                _ => (String::new(), msg),
            };
            ConfigError {
                file: path.to_owned(),
                // serde_yaml gives no location for a second document.
                line: e
                    .location()
                    .map(|l| l.line())
                    .or_else(|| locate::second_document(text)),
                field,
                message,
            }
        })?
    };
    overrides.apply(&mut file);
    let mut config = compile::compile(file, path).map_err(|(field, message)| {
        let lines = locate::field_lines(text);
        ConfigError {
            file: path.to_owned(),
            line: locate::line_of(&lines, &field),
            field,
            message,
        }
    })?;
    config.version = format!("{:016x}", fnv1a(text.as_bytes()));
    Ok(config)
}

/// Content hash for the config version (not cryptographic: it only tells
/// operators whether two proxies run the same file).
pub(crate) fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x100_0000_01b3)
    })
}

#[cfg(test)]
mod tests;
