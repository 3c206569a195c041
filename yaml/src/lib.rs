//! What the proxy's config loader (`engine/src/config`) and the control
//! plane's mesh loader (`control/src/mesh`) both need from YAML beyond serde:
//! the line a field path was written on (`locate`), a bound on alias
//! expansion before serde sees a file (`locate::expanded_nodes`), and
//! durations as operators write them (`duration`), and the error that names
//! file, line and field (`ConfigError`); and the authorization values both
//! must judge alike (`authz`); and route regexes, compiled alike with a
//! size limit each and a budget for all of one config (`route_regex`).

pub mod authz;
pub mod duration;
mod error;
pub mod locate;
pub mod route_regex;

pub use error::{clip, ConfigError};
