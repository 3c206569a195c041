//! Real curl as the client, as a user would try the proxy.

mod common;
use common::*;

fn start(up: &Upstream, port: u16) -> Proxy {
    Proxy::start(&format!(
        r#"listeners:
  - name: web
    address: 127.0.0.1:{port}
    virtual_hosts:
      - name: api
        domains: ["api.example.com"]
        routes:
          - name: api
            match: {{ path: {{ prefix: / }} }}
            route: {{ cluster: up }}
      - name: default
        domains: ["*"]
        routes:
          - name: hello
            match: {{ path: {{ exact: /hello }} }}
            direct_response:
              status: 200
              body: "hello from ringmesh\n"
          - name: up
            match: {{ path: {{ prefix: /up }} }}
            route: {{ cluster: up }}
clusters:
{}"#,
        cluster_yaml("up", &[up.addr]),
    ))
}

/// Splits `curl -i` output into (status line, headers, body).
fn split_i(out: &str) -> (String, Vec<(String, String)>, String) {
    let (head, body) = out
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header/body split in {out:?}"));
    let (start, headers) = parse_head(head.as_bytes());
    (start, headers, body.to_string())
}

#[test]
fn curl_i_direct_and_proxied() {
    let up = Upstream::start("up");
    let port = free_port();
    let _p = start(&up, port);

    let out = curl(&["-sS", "-i", &format!("http://127.0.0.1:{port}/hello")]);
    assert_eq!(
        out.status.map(|s| s.success()),
        Some(true),
        "curl: {}",
        out.stderr
    );
    let (status, headers, body) = split_i(&out.stdout);
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(body, "hello from ringmesh\n");
    assert!(
        find_header(&headers, "x-request-id").is_some(),
        "response carries x-request-id: {headers:?}"
    );

    let out = curl(&[
        "-sS",
        "-i",
        "-H",
        "Host: api.example.com",
        &format!("http://127.0.0.1:{port}/users/7?x=1"),
    ]);
    let (status, headers, body) = split_i(&out.stdout);
    assert!(
        status.starts_with("HTTP/1.1 200"),
        "{status}: {}",
        out.stderr
    );
    assert_eq!(find_header(&headers, "x-upstream"), Some("up"));
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(j["path"], "/users/7?x=1");

    let out = curl(&["-sS", "-i", &format!("http://127.0.0.1:{port}/nope")]);
    let (status, headers, _) = split_i(&out.stdout);
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    assert_eq!(find_header(&headers, "ringmesh-error"), Some("no_route"));

    // Several URLs on one curl invocation reuse the connection.
    let url = format!("http://127.0.0.1:{port}/up/1");
    let out = curl(&[
        "-sS",
        "-w",
        "%{http_code} %{num_connects}\n",
        "-o",
        "/dev/null",
        &url,
        "-o",
        "/dev/null",
        &url,
        "-o",
        "/dev/null",
        &url,
    ]);
    assert_eq!(
        out.stdout, "200 1\n200 0\n200 0\n",
        "curl keep-alive: {}",
        out.stderr
    );
}

#[test]
fn curl_upload_with_t() {
    let up = Upstream::start("up");
    let port = free_port();
    let _p = start(&up, port);
    let dir = scratch_dir("curl-upload");
    let file = dir.join("upload.bin");
    const N: u64 = 8 * 1024 * 1024 + 17;
    let mut f = std::fs::File::create(&file).unwrap();
    write_pattern(&mut f, N).unwrap();
    drop(f);
    let path = file.to_str().unwrap();

    let out = curl(&[
        "-sS",
        "--http1.1",
        "-T",
        path,
        "-w",
        "\n%{http_code}",
        &format!("http://127.0.0.1:{port}/up/put"),
    ]);
    assert_eq!(
        out.status.map(|s| s.success()),
        Some(true),
        "curl -T: {}",
        out.stderr
    );
    let (body, code) = out.stdout.rsplit_once('\n').unwrap();
    assert_eq!(code, "200");
    let j: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(j["method"], "PUT");
    assert_eq!(j["body_len"].as_u64(), Some(N));
    assert_eq!(j["body_sum"].as_str(), Some(pattern_checksum(N).as_str()));
    let seen = up.last_request("/up/put").unwrap();
    assert_eq!(seen.header("content-length"), Some(N.to_string().as_str()));

    // The same file as a chunked upload.
    let out = curl(&[
        "-sS",
        "--http1.1",
        "-T",
        path,
        "-H",
        "Transfer-Encoding: chunked",
        "-w",
        "\n%{http_code}",
        &format!("http://127.0.0.1:{port}/up/chunked-put"),
    ]);
    let (body, code) = out.stdout.rsplit_once('\n').unwrap();
    assert_eq!(code, "200", "{}", out.stderr);
    let j: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(j["body_len"].as_u64(), Some(N));
    assert_eq!(j["body_sum"].as_str(), Some(pattern_checksum(N).as_str()));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn curl_download_matches() {
    let up = Upstream::start("up");
    let port = free_port();
    let _p = start(&up, port);
    let dir = scratch_dir("curl-download");
    let file = dir.join("out.bin");
    const N: u64 = 5 * 1024 * 1024;
    for kind in ["bytes", "chunked"] {
        let out = curl(&[
            "-sS",
            "-H",
            "Host: api.example.com",
            "-o",
            file.to_str().unwrap(),
            "-w",
            "%{http_code} %{size_download}",
            &format!("http://127.0.0.1:{port}/{kind}/{N}"),
        ]);
        assert_eq!(out.stdout, format!("200 {N}"), "{kind}: {}", out.stderr);
        let data = std::fs::read(&file).unwrap();
        let mut check = PatternCheck::new();
        check.update(&data);
        assert_eq!(
            check.first_mismatch, None,
            "{kind}: downloaded file differs"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
