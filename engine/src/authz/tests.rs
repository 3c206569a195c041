use super::*;
use crate::config::model::{AuthzAction, AuthzPath, AuthzPolicy, AuthzRule};

const FRONT: &str = "spiffe://cluster.local/ns/default/sa/frontend";
const RATINGS: &str = "spiffe://cluster.local/ns/default/sa/ratings";
const OTHER_NS: &str = "spiffe://cluster.local/ns/shop/sa/cart";

fn policy(name: &str, action: AuthzAction, rules: Vec<AuthzRule>) -> AuthzPolicy {
    AuthzPolicy {
        name: name.into(),
        action,
        rules,
    }
}

fn http<'a>(id: Option<&'a str>, method: &'a str, path: &'a str) -> Subject<'a> {
    Subject {
        identity: id,
        http: Some(HttpSubject {
            method: method.as_bytes(),
            path: path.as_bytes(),
        }),
        port: 9080,
    }
}

fn tcp(id: Option<&str>, port: u16) -> Subject<'_> {
    Subject {
        identity: id,
        http: None,
        port,
    }
}

fn prefix(p: &str) -> AuthzPath {
    AuthzPath {
        exact: None,
        prefix: Some(p.into()),
    }
}

fn exact(p: &str) -> AuthzPath {
    AuthzPath {
        exact: Some(p.into()),
        prefix: None,
    }
}

#[test]
fn no_policy_allows_everything() {
    let p = compile("l", &[]).unwrap();
    assert_eq!(p.evaluate(&http(None, "GET", "/")), Decision::NoPolicy);
    assert!(p.evaluate(&tcp(None, 1)).allowed());
}

#[test]
fn deny_beats_allow() {
    let p = compile(
        "l",
        &[
            policy(
                "allow-front",
                AuthzAction::Allow,
                vec![AuthzRule {
                    identities: vec![FRONT.into()],
                    ..Default::default()
                }],
            ),
            policy(
                "deny-admin",
                AuthzAction::Deny,
                vec![AuthzRule {
                    paths: vec![prefix("/admin")],
                    ..Default::default()
                }],
            ),
        ],
    )
    .unwrap();
    let d = p.evaluate(&http(Some(FRONT), "GET", "/admin/users"));
    assert_eq!(
        p.name(match d {
            Decision::Denied(i) => i,
            other => panic!("{other:?}"),
        }),
        "deny-admin"
    );
    assert_eq!(
        p.denial_body(d),
        "RBAC: access denied by policy \"deny-admin\"\n"
    );
    assert!(matches!(
        p.evaluate(&http(Some(FRONT), "GET", "/products")),
        Decision::Allowed(_)
    ));
    // Another caller: no ALLOW matches.
    let d = p.evaluate(&http(Some(RATINGS), "GET", "/products"));
    assert_eq!(d, Decision::NoAllowMatch);
    assert_eq!(
        p.denial_body(d),
        "RBAC: access denied: no ALLOW policy matched (allow-front)\n"
    );
    // Plaintext (no identity) cannot match an identity rule.
    assert_eq!(
        p.evaluate(&http(None, "GET", "/products")),
        Decision::NoAllowMatch
    );
}

#[test]
fn every_set_field_must_match() {
    let p = compile(
        "l",
        &[policy(
            "reads",
            AuthzAction::Allow,
            vec![AuthzRule {
                namespaces: vec!["default".into()],
                methods: vec!["GET".into(), "HEAD".into()],
                paths: vec![prefix("/api/"), exact("/health")],
                ports: vec![9080],
                ..Default::default()
            }],
        )],
    )
    .unwrap();
    assert!(p
        .evaluate(&http(Some(FRONT), "GET", "/api/x?y=1"))
        .allowed());
    assert!(p
        .evaluate(&http(Some(RATINGS), "HEAD", "/health"))
        .allowed());
    assert!(!p.evaluate(&http(Some(FRONT), "POST", "/api/x")).allowed());
    assert!(!p.evaluate(&http(Some(FRONT), "GET", "/healthz")).allowed());
    assert!(!p.evaluate(&http(Some(OTHER_NS), "GET", "/api/x")).allowed());
    let mut other_port = http(Some(FRONT), "GET", "/api/x");
    other_port.port = 9081;
    assert!(!p.evaluate(&other_port).allowed());
    // Methods are case-sensitive, as HTTP says.
    assert!(!p.evaluate(&http(Some(FRONT), "get", "/api/x")).allowed());
}

#[test]
fn namespace_wildcard_in_identities() {
    let p = compile(
        "l",
        &[policy(
            "shop",
            AuthzAction::Allow,
            vec![AuthzRule {
                identities: vec!["spiffe://cluster.local/ns/shop/*".into()],
                ..Default::default()
            }],
        )],
    )
    .unwrap();
    assert!(p.evaluate(&http(Some(OTHER_NS), "GET", "/")).allowed());
    assert!(!p.evaluate(&http(Some(FRONT), "GET", "/")).allowed());
    // "shopping" is not "shop".
    assert!(!p
        .evaluate(&http(
            Some("spiffe://cluster.local/ns/shopping/sa/x"),
            "GET",
            "/"
        ))
        .allowed());
}

#[test]
fn tcp_ignores_http_fields_in_deny_and_never_matches_them_in_allow() {
    let p = compile(
        "l",
        &[
            policy(
                "deny-ratings-writes",
                AuthzAction::Deny,
                vec![AuthzRule {
                    identities: vec![RATINGS.into()],
                    methods: vec!["POST".into()],
                    ..Default::default()
                }],
            ),
            policy(
                "allow-get",
                AuthzAction::Allow,
                vec![AuthzRule {
                    methods: vec!["GET".into()],
                    ..Default::default()
                }],
            ),
            policy(
                "allow-port",
                AuthzAction::Allow,
                vec![AuthzRule {
                    ports: vec![5432],
                    ..Default::default()
                }],
            ),
        ],
    )
    .unwrap();
    assert!(matches!(
        p.evaluate(&tcp(Some(RATINGS), 5432)),
        Decision::Denied(_)
    ));
    assert!(matches!(
        p.evaluate(&tcp(Some(FRONT), 5432)),
        Decision::Allowed(i) if p.name(i) == "allow-port"
    ));
    assert_eq!(p.evaluate(&tcp(Some(FRONT), 6000)), Decision::NoAllowMatch);
}

#[test]
fn paths_are_matched_normalized() {
    let p = compile(
        "l",
        &[policy(
            "deny-admin",
            AuthzAction::Deny,
            vec![AuthzRule {
                paths: vec![prefix("/admin")],
                ..Default::default()
            }],
        )],
    )
    .unwrap();
    for sneaky in [
        "/admin",
        "//admin",
        "/./admin",
        "/x/../admin",
        "/%61dmin",
        "/%61%64min/x",
        "/public/../../admin",
    ] {
        assert!(
            !p.evaluate(&http(None, "GET", sneaky)).allowed(),
            "{sneaky} slipped past"
        );
    }
    assert!(p.evaluate(&http(None, "GET", "/public")).allowed());
}

#[test]
fn normalization() {
    let n = |s: &str| String::from_utf8(normalize_path(s.as_bytes())).unwrap();
    assert_eq!(n("/a/b/"), "/a/b/");
    assert_eq!(n("/a//b?x=/../y"), "/a/b");
    assert_eq!(n("/a/./b/../c"), "/a/c");
    assert_eq!(n("/.."), "/");
    assert_eq!(n(""), "/");
    assert_eq!(n("/a/.."), "/");
    assert_eq!(n("/%7euser"), "/~user");
    // Reserved characters stay escaped (upper-cased), '%' stays when not hex.
    assert_eq!(n("/a%2fb"), "/a%2Fb");
    assert_eq!(n("/100%"), "/100%");
    assert_eq!(n("/a%zz"), "/a%zz");
}

#[test]
fn compile_errors_name_the_field() {
    let bad = |r: AuthzRule| {
        compile(
            "listeners[0].authorization",
            &[policy("p", AuthzAction::Allow, vec![r])],
        )
        .unwrap_err()
    };
    assert_eq!(
        bad(AuthzRule {
            identities: vec!["frontend".into()],
            ..Default::default()
        })
        .0,
        "listeners[0].authorization[0].rules[0].identities[0]"
    );
    assert_eq!(
        bad(AuthzRule {
            identities: vec!["spiffe://td/ns/*/sa/x".into()],
            ..Default::default()
        })
        .0,
        "listeners[0].authorization[0].rules[0].identities[0]"
    );
    assert_eq!(
        bad(AuthzRule {
            paths: vec![AuthzPath {
                exact: Some("/a".into()),
                prefix: Some("/b".into()),
            }],
            ..Default::default()
        })
        .0,
        "listeners[0].authorization[0].rules[0].paths[0]"
    );
    let (f, m) = bad(AuthzRule {
        paths: vec![prefix("/a/../b")],
        ..Default::default()
    });
    assert_eq!(f, "listeners[0].authorization[0].rules[0].paths[0].prefix");
    assert!(m.contains("normal form"), "{m}");
    assert_eq!(
        bad(AuthzRule {
            methods: vec!["GE T".into()],
            ..Default::default()
        })
        .0,
        "listeners[0].authorization[0].rules[0].methods[0]"
    );
    assert_eq!(
        bad(AuthzRule {
            ports: vec![0],
            ..Default::default()
        })
        .0,
        "listeners[0].authorization[0].rules[0].ports[0]"
    );
    let dup = compile(
        "a",
        &[
            policy("p", AuthzAction::Allow, vec![AuthzRule::default()]),
            policy("p", AuthzAction::Deny, vec![AuthzRule::default()]),
        ],
    )
    .unwrap_err();
    assert!(dup.1.contains("duplicate policy"), "{dup:?}");
}

#[test]
fn a_policy_without_rules_matches_nothing() {
    let p = compile(
        "l",
        &[
            policy("allow-nothing", AuthzAction::Allow, vec![]),
            policy("inert", AuthzAction::Deny, vec![]),
        ],
    )
    .unwrap();
    assert_eq!(
        p.evaluate(&http(Some(FRONT), "GET", "/")),
        Decision::NoAllowMatch
    );
    assert_eq!(p.evaluate(&tcp(None, 1)), Decision::NoAllowMatch);
}
