//! The proxy's YAML config: `config::load_str` (parse, alias budget, compile)
//! on arbitrary text.
//!
//! Properties: never panics; a refusal names the file and a field or a line
//! (inside the text), with a message; a config that compiles, serialized back
//! from its model with serde_yaml and loaded again, compiles to the same
//! result (model, limits, admin address, listeners with their route tables
//! and authorization, clusters).
//!
//! Inputs that would touch the world are skipped before the loader sees
//! them: host names (DNS) in addresses, and certificate or key files.
#![no_main]

use std::net::SocketAddr;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use ringmesh_engine::config::{load_str, model, Config};
use ringmesh_fuzz::check_yaml_error;

const FILE: &str = "fuzz.yaml";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The loader refuses an alias bomb (with this same budget) before serde
    // expands it; the look ahead below must not expand one either.
    if ringmesh_yaml::locate::expanded_nodes(text, 1_000_000).is_ok() {
        if let Ok(file) = serde_yaml::from_str::<model::File>(text) {
            if touches_the_world(&file) {
                return;
            }
        }
    }
    let path = Path::new(FILE);
    match load_str(path, text) {
        Err(e) => {
            assert_eq!(e.file, path);
            check_yaml_error(&e, text);
        }
        Ok(config) => round_trip(&config),
    }
});

fn addr_ok(a: &str) -> bool {
    a.parse::<SocketAddr>().is_ok()
}

fn touches_the_world(f: &model::File) -> bool {
    f.identity.is_some()
        || !addr_ok(&f.admin.address)
        || f.listeners
            .iter()
            .any(|l| l.tls.is_some() || !addr_ok(&l.address))
        || f.clusters.iter().any(|c| {
            c.endpoints.iter().any(|e| !addr_ok(e))
                || c.mtls
                    .as_ref()
                    .is_some_and(|m| m.plaintext_endpoints.iter().any(|e| !addr_ok(e)))
        })
}

fn compiled(c: &Config) -> String {
    format!(
        "{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
        c.model, c.admin, c.access_log, c.limits, c.listeners, c.clusters
    )
}

fn round_trip(c: &Config) {
    let yaml = serde_yaml::to_string(&c.model).expect("a model serializes");
    let again = load_str(Path::new(FILE), &yaml)
        .unwrap_or_else(|e| panic!("the model written back is refused: {e}\n{yaml}"));
    assert_eq!(
        compiled(c),
        compiled(&again),
        "round trip changed the config:\n{yaml}"
    );
}
