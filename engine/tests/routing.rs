//! Request routing: virtual hosts, path/header/method matches, direct responses,
//! prefix rewrite, header manipulation, and the no-route answer.

mod common;
use common::*;

fn upstream_of(r: &Response) -> String {
    r.upstream().map(str::to_string).unwrap_or_else(|| {
        format!(
            "<proxy: {} {:?} {}>",
            r.status,
            r.error_reason(),
            r.text().trim()
        )
    })
}

#[test]
fn routes_by_host_exact_wildcard_port_and_fallback() {
    let (a, b, c) = (
        Upstream::start("a"),
        Upstream::start("b"),
        Upstream::start("c"),
    );
    let port = free_port();
    let _proxy = Proxy::start(&format!(
        r#"listeners:
  - name: web
    address: 127.0.0.1:{port}
    virtual_hosts:
      - name: exact
        domains: ["api.example.com"]
        routes:
          - name: exact
            match: {{ path: {{ prefix: / }} }}
            route: {{ cluster: a }}
      - name: wild
        domains: ["*.example.com"]
        routes:
          - name: wild
            match: {{ path: {{ prefix: / }} }}
            route: {{ cluster: b }}
      - name: fallback
        domains: ["*"]
        routes:
          - name: fallback
            match: {{ path: {{ prefix: / }} }}
            route: {{ cluster: c }}
clusters:
{}{}{}"#,
        cluster_yaml("a", &[a.addr]),
        cluster_yaml("b", &[b.addr]),
        cluster_yaml("c", &[c.addr]),
    ));
    let web = local(port);
    let cases = [
        ("api.example.com", "a"),
        ("api.example.com:8080", "a"),
        ("api.example.com:1", "a"),
        ("foo.example.com", "b"),
        ("foo.example.com:8443", "b"),
        ("other.org", "c"),
        ("localhost", "c"),
        ("127.0.0.1:9999", "c"),
    ];
    for (host, want) in cases {
        let r = get(web, host, "/x");
        assert_eq!(r.status, 200, "Host {host}: {}", r.text());
        assert_eq!(
            upstream_of(&r),
            want,
            "Host {host} routed to the wrong upstream"
        );
    }
}

#[test]
fn routes_by_path_exact_prefix_regex() {
    let (a, b, c) = (
        Upstream::start("a"),
        Upstream::start("b"),
        Upstream::start("c"),
    );
    let port = free_port();
    let proxy = Proxy::start(&format!(
        r#"listeners:
  - name: web
    address: 127.0.0.1:{port}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: exact
            match: {{ path: {{ exact: /exact }} }}
            route: {{ cluster: a }}
          - name: regex
            match: {{ path: {{ regex: "/re/[0-9]+" }} }}
            route: {{ cluster: c }}
          - name: prefix
            match: {{ path: {{ prefix: /pre }} }}
            route: {{ cluster: b }}
clusters:
{}{}{}"#,
        cluster_yaml("a", &[a.addr]),
        cluster_yaml("b", &[b.addr]),
        cluster_yaml("c", &[c.addr]),
    ));
    let web = local(port);
    let cases: [(&str, Option<&str>); 9] = [
        ("/exact", Some("a")),
        ("/exact?q=1", Some("a")),
        ("/exact/more", None),
        ("/pre", Some("b")),
        ("/pre/x/y", Some("b")),
        ("/re/123", Some("c")),
        ("/re/123?x=abc", Some("c")),
        ("/re/12a", None), // regex must match the whole path
        ("/nothing", None),
    ];
    for (path, want) in cases {
        let r = get(web, "localhost", path);
        match want {
            Some(u) => {
                assert_eq!(r.status, 200, "{path}: {}", r.text());
                assert_eq!(upstream_of(&r), u, "{path} routed to the wrong upstream");
            }
            None => {
                assert_eq!(
                    r.status,
                    404,
                    "{path} should not match any route: {}",
                    upstream_of(&r)
                );
                assert_eq!(r.error_reason(), Some("no_route"), "{path}");
            }
        }
    }
    drop(proxy);
}

#[test]
fn routes_by_header_and_method() {
    let (a, b, c) = (
        Upstream::start("a"),
        Upstream::start("b"),
        Upstream::start("c"),
    );
    let port = free_port();
    let proxy = Proxy::start(&format!(
        r#"listeners:
  - name: web
    address: 127.0.0.1:{port}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: canary
            match:
              path: {{ prefix: /h }}
              headers:
                - {{ name: x-canary, exact: "1" }}
            route: {{ cluster: a }}
          - name: debug
            match:
              path: {{ prefix: /h }}
              headers:
                - {{ name: x-debug, present: true }}
            route: {{ cluster: b }}
          - name: user
            match:
              path: {{ prefix: /h }}
              headers:
                - {{ name: x-user, regex: "^[a-z]+$" }}
            route: {{ cluster: c }}
          - name: post-only
            match:
              path: {{ prefix: /m }}
              methods: [POST, PUT]
            route: {{ cluster: a }}
clusters:
{}{}{}"#,
        cluster_yaml("a", &[a.addr]),
        cluster_yaml("b", &[b.addr]),
        cluster_yaml("c", &[c.addr]),
    ));
    let web = local(port);
    let cases: Vec<(Req, Option<&str>)> = vec![
        (Req::get("/h").header("x-canary", "1"), Some("a")),
        (Req::get("/h").header("X-Canary", "1"), Some("a")), // header names are case-insensitive
        (Req::get("/h").header("x-canary", "2"), None),
        (Req::get("/h").header("x-debug", ""), Some("b")),
        (Req::get("/h").header("x-debug", "yes"), Some("b")),
        (
            Req::get("/h")
                .header("x-canary", "2")
                .header("x-debug", "1"),
            Some("b"),
        ),
        (Req::get("/h").header("x-user", "alice"), Some("c")),
        (Req::get("/h").header("x-user", "Alice"), None),
        (Req::get("/h").header("x-user", "al1ce"), None),
        (Req::get("/h"), None),
        (Req::new("POST", "/m").body("x"), Some("a")),
        (Req::new("PUT", "/m").body("x"), Some("a")),
        (Req::get("/m"), None),
        (Req::new("DELETE", "/m"), None),
    ];
    for (req, want) in cases {
        let r = send(web, &req);
        let what = format!("{} {} {:?}", req.method, req.target, &req.headers[1..]);
        match want {
            Some(u) => {
                assert_eq!(r.status, 200, "{what}: {}", r.text());
                assert_eq!(upstream_of(&r), u, "{what} routed to the wrong upstream");
            }
            None => {
                assert_eq!(
                    r.status,
                    404,
                    "{what} should not match: {}",
                    upstream_of(&r)
                );
                assert_eq!(r.error_reason(), Some("no_route"), "{what}");
            }
        }
    }
    drop(proxy);
}

#[test]
fn direct_response() {
    let port = free_port();
    let _proxy = Proxy::start(&format!(
        r#"listeners:
  - name: web
    address: 127.0.0.1:{port}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: hello
            match: {{ path: {{ exact: /hello }} }}
            direct_response:
              status: 200
              body: "hello from ringmesh\n"
          - name: maint
            match: {{ path: {{ prefix: /maint }} }}
            direct_response:
              status: 503
              body: '{{"down":true}}'
              content_type: application/json
clusters: []
"#
    ));
    let web = local(port);
    let r = get(web, "localhost", "/hello");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello from ringmesh\n");
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("text/plain"),
        "{:?}",
        r.headers
    );
    assert_eq!(r.header("content-length"), Some("20"));

    let r = get(web, "localhost", "/maint/x");
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), r#"{"down":true}"#);
    assert_eq!(r.header("content-type"), Some("application/json"));

    // HEAD of a direct response: headers only, and the connection stays usable.
    let mut c = Conn::connect(web);
    let r = c.request(&Req::new("HEAD", "/hello")).unwrap();
    assert_eq!(r.status, 200);
    let r = c.request(&Req::get("/hello")).unwrap();
    assert_eq!(
        r.text(),
        "hello from ringmesh\n",
        "HEAD response must not carry a body"
    );
}

#[test]
fn prefix_rewrite_and_header_manipulation() {
    let up = Upstream::start("up");
    let port = free_port();
    let _proxy = Proxy::start(&format!(
        r#"listeners:
  - name: web
    address: 127.0.0.1:{port}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: users
            match: {{ path: {{ prefix: /users }} }}
            route:
              cluster: up
              prefix_rewrite: /v2/users
            request_headers_to_add: [{{ name: x-env, value: prod }}]
            request_headers_to_remove: [x-internal]
            response_headers_to_add: [{{ name: x-served-by, value: ringmesh }}]
            response_headers_to_remove: [server]
          - name: plain
            match: {{ path: {{ prefix: / }} }}
            route: {{ cluster: up }}
clusters:
{}"#,
        cluster_yaml("up", &[up.addr]),
    ));
    let web = local(port);

    let r = send(
        web,
        &Req::get("/users/42?full=1")
            .header("x-internal", "secret")
            .header("x-keep", "1"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up
        .last_request("/v2/users")
        .expect("upstream saw the rewritten path");
    assert_eq!(seen.path, "/v2/users/42?full=1");
    assert_eq!(r.json()["path"], "/v2/users/42?full=1");
    assert_eq!(seen.header("x-env"), Some("prod"));
    assert_eq!(
        seen.header("x-internal"),
        None,
        "x-internal must be removed"
    );
    assert_eq!(seen.header("x-keep"), Some("1"));
    assert_eq!(r.header("x-served-by"), Some("ringmesh"));
    assert_ne!(
        r.header("server"),
        Some("test-upstream"),
        "upstream's server header must be removed"
    );
    assert_eq!(
        r.header("x-upstream"),
        Some("up"),
        "other response headers are kept"
    );

    let r = send(web, &Req::get("/users").header("x-internal", "s"));
    assert_eq!(r.status, 200);
    assert_eq!(up.last_request("/v2/users").unwrap().path, "/v2/users");

    // Another route: nothing rewritten or touched.
    let r = send(
        web,
        &Req::get("/other/users").header("x-internal", "secret"),
    );
    assert_eq!(r.status, 200);
    let seen = up.last_request("/other").unwrap();
    assert_eq!(seen.path, "/other/users");
    assert_eq!(seen.header("x-internal"), Some("secret"));
    assert_eq!(seen.header("x-env"), None);
    assert_eq!(r.header("server"), Some("test-upstream"));
    assert_eq!(r.header("x-served-by"), None);
}

#[test]
fn no_route_is_404_with_reason() {
    let up = Upstream::start("up");
    let port = free_port();
    let _proxy = Proxy::start(&format!(
        r#"listeners:
  - name: web
    address: 127.0.0.1:{port}
    virtual_hosts:
      - name: only
        domains: ["only.test"]
        routes:
          - name: api
            match: {{ path: {{ prefix: /api }} }}
            route: {{ cluster: up }}
clusters:
{}"#,
        cluster_yaml("up", &[up.addr]),
    ));
    let web = local(port);
    assert_eq!(get(web, "only.test", "/api/x").status, 200);
    for (host, path) in [
        ("only.test", "/web"),
        ("other.test", "/api/x"),
        ("only.test.evil", "/api"),
    ] {
        let r = get(web, host, path);
        assert_eq!(r.status, 404, "Host {host} {path}");
        assert_eq!(r.error_reason(), Some("no_route"), "Host {host} {path}");
        assert!(!r.body.is_empty(), "errors carry a short text body");
    }
    assert_eq!(
        up.request_count(),
        1,
        "unrouted requests must not reach the upstream"
    );
}

#[test]
fn proxy_made_responses_answer_each_request_exactly_once() {
    // Direct responses and no_route 404s on a keep-alive connection: one request,
    // one response, nothing more on the wire, and the next request is answered.
    let port = free_port();
    let _proxy = Proxy::start(&format!(
        r#"listeners:
  - name: web
    address: 127.0.0.1:{port}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: one
            match: {{ path: {{ exact: /one }} }}
            direct_response: {{ status: 200, body: "one" }}
          - name: two
            match: {{ path: {{ exact: /two }} }}
            direct_response: {{ status: 200, body: "two" }}
clusters: []
"#
    ));
    let mut c = Conn::connect(local(port));
    for (path, status, body) in [
        ("/one", 200, "one"),
        ("/nope", 404, ""),
        ("/two", 200, "two"),
        ("/one", 200, "one"),
    ] {
        let r = c.request(&Req::get(path)).unwrap();
        assert_eq!(r.status, status, "{path}");
        if !body.is_empty() {
            assert_eq!(r.text(), body, "{path}: answer belongs to another request");
        }
        c.set_read_timeout(std::time::Duration::from_millis(300));
        match c.read_some(4096) {
            Ok(extra) if extra.is_empty() => {
                panic!("{path}: connection closed after a keep-alive response")
            }
            Ok(extra) => panic!(
                "{path}: unsolicited bytes after the response (request answered twice?): {:?}",
                String::from_utf8_lossy(&extra[..extra.len().min(200)])
            ),
            Err(_) => {} // nothing more: good
        }
        c.set_read_timeout(IO_TIMEOUT);
    }
}
