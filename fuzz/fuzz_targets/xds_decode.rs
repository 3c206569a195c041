//! Control-plane messages: arbitrary bytes prost-decoded as
//! `ringmesh.v1.DiscoveryResponse`s and applied as the proxy's control
//! client applies a batch (`State::apply`, `identity::resolve` for secrets,
//! `translate::build` compiling the next config), starting from a complete
//! state (clusters, endpoints, an HTTP and a TCP listener, a route table).
//!
//! Input: messages framed `[selector, len_lo, len_hi, bytes..]`
//! (`ringmesh_fuzz::frames`); the selector picks the resource type when the
//! decoded one is not a subscribed type.
//!
//! Properties: never panics; a refused response leaves the state as it was
//! (the next response applies to the last good state); a response applied
//! twice (a resend) gives the same state; a compiled config only names
//! clusters it has.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use ringmesh_engine::config::{model, ListenerKind};
use ringmesh_engine::router::Action;
use ringmesh_engine::xds::identity::{self, Pending};
use ringmesh_engine::xds::{translate, Kind, State};
use ringmesh_fuzz::{frames, xds_base};
use ringmesh_proto::v1 as pb;

fn base() -> &'static State {
    static BASE: OnceLock<State> = OnceLock::new();
    BASE.get_or_init(|| {
        xds_base().iter().fold(State::default(), |s, r| {
            let kind = Kind::from_proto(r.r#type).expect("a subscribed type");
            s.apply(kind, r).expect("the base state applies")
        })
    })
}

fn node() -> pb::Node {
    pb::Node {
        id: "node-1".into(),
        service: "web".into(),
        namespace: "default".into(),
        address: "10.0.0.1".into(),
        ..Default::default()
    }
}

fuzz_target!(|data: &[u8]| {
    let bootstrap = model::File::default();
    let pending = Pending::default();
    let node = node();
    let mut state = base().clone();
    for (sel, bytes) in frames(data).take(8) {
        let Ok(resp) = pb::DiscoveryResponse::decode(bytes) else {
            continue;
        };
        let kind =
            Kind::from_proto(resp.r#type).unwrap_or(Kind::ALL[usize::from(sel) % Kind::COUNT]);
        let applied = state.apply(kind, &resp).and_then(|mut next| {
            if kind == Kind::Secret {
                identity::resolve(&mut next, &pending, &node)?;
            }
            let config = translate::build(&bootstrap, Path::new("control"), &next)?;
            Ok((next, config))
        });
        let Ok((next, config)) = applied else {
            continue;
        };
        // A resend of the same response changes nothing.
        if kind != Kind::Secret {
            let again = next
                .apply(kind, &resp)
                .expect("a resend of an applied response");
            assert_eq!(again, next, "applying {} twice", kind.name());
        }
        for l in &config.listeners {
            match &l.kind {
                ListenerKind::Tcp { cluster, .. } => assert!(*cluster < config.clusters.len()),
                ListenerKind::Http(table) => {
                    for r in table.vhosts.iter().flat_map(|v| &v.routes) {
                        if let Action::Forward(f) = &r.action {
                            assert!(!f.targets.is_empty() && f.total_weight > 0);
                            for (c, _) in &f.targets {
                                assert!(*c < config.clusters.len());
                            }
                        }
                    }
                }
            }
        }
        state = next;
    }
});
