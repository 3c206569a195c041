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
/// A config file larger than this is refused before it is parsed.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

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
    let text = read_bounded(path).map_err(|message| ConfigError {
        file: path.to_owned(),
        line: None,
        field: String::new(),
        message,
    })?;
    load_str_with(path, &text, overrides)
}

/// The file's text, if it is at most [`MAX_FILE_BYTES`] of UTF-8.
fn read_bounded(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut bytes = Vec::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "file is larger than the limit of {MAX_FILE_BYTES} bytes"
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "cannot read: not UTF-8 (byte {})",
            e.utf8_error().valid_up_to()
        )
    })
}

pub fn load_str(path: &Path, text: &str) -> Result<Config, ConfigError> {
    load_str_with(path, text, &Overrides::default())
}

fn load_str_with(path: &Path, text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
    // Counted before serde_yaml runs: it expands aliases first, so a small
    // file of nested aliases could otherwise take gigabytes; and its parser
    // takes the square of the nesting depth.
    if let Err(r) = locate::precheck(text, MAX_YAML_VALUES) {
        let (line, message) = match r {
            locate::Refused::TooManyValues { line } => (
                line,
                format!("more than {MAX_YAML_VALUES} YAML values (aliases expanded)"),
            ),
            locate::Refused::TooDeep { line } => (
                line,
                format!("nested more than {} levels deep", locate::MAX_NESTING),
            ),
        };
        return Err(ConfigError {
            file: path.to_owned(),
            line: Some(line),
            field: String::new(),
            message,
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
                message: ringmesh_yaml::clip(message),
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
            message: ringmesh_yaml::clip(message),
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
