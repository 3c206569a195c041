//! Exact Prometheus series after a known amount of traffic.

mod common;
use common::*;

use std::time::Duration;

fn start(up: &Upstream, port: u16) -> Proxy {
    Proxy::start_with(
        &format!(
            r#"listeners:
  - name: web
    address: 127.0.0.1:{port}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: a
            match: {{ path: {{ prefix: /a }} }}
            route: {{ cluster: up }}
          - name: hello
            match: {{ path: {{ exact: /hello }} }}
            direct_response: {{ status: 200, body: "hi" }}
clusters:
{}"#,
            cluster_yaml("up", &[up.addr]),
        ),
        &["--workers", "1"],
    )
}

#[test]
fn request_counters_and_histogram_are_exact() {
    let up = Upstream::start("up");
    let port = free_port();
    let proxy = start(&up, port);
    let web = local(port);
    for i in 0..3 {
        let r = get(web, "localhost", &format!("/a/{i}"));
        assert_eq!(r.status, 200);
    }
    for _ in 0..2 {
        let r = get(web, "localhost", "/missing");
        assert_eq!(r.status, 404);
    }
    let series =
        "ringmesh_requests_total{listener=\"web\",route=\"\",cluster=\"\",status_class=\"4xx\"}";
    let text = proxy.wait_metric(series, Duration::from_secs(3), |v| v >= 2.0);
    assert_metric_line(&text, "ringmesh_requests_total{listener=\"web\",route=\"a\",cluster=\"up\",status_class=\"2xx\"} 3");
    assert_metric_line(
        &text,
        "ringmesh_requests_total{listener=\"web\",route=\"\",cluster=\"\",status_class=\"4xx\"} 2",
    );
    assert_metric_line(
        &text,
        "ringmesh_upstream_request_duration_seconds_count{cluster=\"up\"} 3",
    );
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("ringmesh_requests_total{")
                && l.contains("status_class=\"5xx\"")
                && !l.ends_with(" 0")),
        "no 5xx happened:\n{}",
        related_lines(&text, "ringmesh_requests_total")
    );
    let conns = metric_value(
        &text,
        "ringmesh_downstream_connections_total{listener=\"web\"}",
    );
    assert_eq!(conns, Some(5.0), "5 client connections were made");
    let sum = metric_value(
        &text,
        "ringmesh_upstream_request_duration_seconds_sum{cluster=\"up\"}",
    )
    .expect("histogram _sum");
    assert!(sum > 0.0 && sum < 3.0, "duration sum {sum}");
    // Histogram: buckets cumulative, +Inf bucket equals _count.
    let buckets: Vec<(String, f64)> = text
        .lines()
        .filter(|l| {
            l.starts_with("ringmesh_upstream_request_duration_seconds_bucket{cluster=\"up\",le=\"")
        })
        .map(|l| {
            let le = l
                .split("le=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .to_string();
            let v: f64 = l.rsplit(' ').next().unwrap().parse().unwrap();
            (le, v)
        })
        .collect();
    assert!(
        buckets.len() >= 2,
        "histogram buckets:\n{}",
        related_lines(&text, "ringmesh_upstream_request_duration_seconds_bucket")
    );
    assert!(
        buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "buckets not cumulative: {buckets:?}"
    );
    assert_eq!(
        buckets.last().unwrap(),
        &("+Inf".to_string(), 3.0),
        "last bucket must be le=\"+Inf\" == count"
    );
    assert!(
        buckets.iter().any(|(le, _)| le == "0.005"),
        "expected a le=\"0.005\" bucket: {buckets:?}"
    );

    let pool = metric_value(&text, "ringmesh_upstream_pool_hits_total{cluster=\"up\"}")
        .unwrap_or(0.0)
        + metric_value(&text, "ringmesh_upstream_pool_misses_total{cluster=\"up\"}").unwrap_or(0.0);
    assert_eq!(
        pool,
        3.0,
        "pool hits + misses = upstream requests:\n{}",
        related_lines(&text, "ringmesh_upstream_pool")
    );
    let rx = metric_value(
        &text,
        "ringmesh_downstream_bytes_received_total{listener=\"web\"}",
    )
    .unwrap_or(0.0);
    let tx = metric_value(
        &text,
        "ringmesh_downstream_bytes_sent_total{listener=\"web\"}",
    )
    .unwrap_or(0.0);
    assert!(rx >= 5.0 * 30.0, "bytes received {rx}");
    assert!(tx >= 5.0 * 50.0, "bytes sent {tx}");
    assert!(
        metric_value(&text, "ringmesh_config_epoch").is_some(),
        "ringmesh_config_epoch missing"
    );
    assert!(
        text.lines().any(
            |l| l.starts_with("ringmesh_worker_io_driver{worker=\"0\",driver=\"")
                && l.ends_with("\"} 1")
        ),
        "{}",
        related_lines(&text, "ringmesh_worker_io_driver")
    );
    assert!(
        !text.contains("ringmesh_worker_io_driver{worker=\"1\""),
        "--workers 1 but a second worker is reported"
    );
    // Active connections drop back to 0 once the clients are gone.
    let text = proxy.wait_metric(
        "ringmesh_downstream_connections_active{listener=\"web\"}",
        Duration::from_secs(3),
        |v| v == 0.0,
    );
    assert_metric_line(
        &text,
        "ringmesh_downstream_connections_active{listener=\"web\"} 0",
    );
}

#[test]
fn direct_responses_are_counted_with_empty_cluster() {
    let up = Upstream::start("up");
    let port = free_port();
    let proxy = start(&up, port);
    let web = local(port);
    let mut c = Conn::connect(web);
    for _ in 0..4 {
        assert_eq!(c.request(&Req::get("/hello")).unwrap().text(), "hi");
    }
    let series = "ringmesh_requests_total{listener=\"web\",route=\"hello\",cluster=\"\",status_class=\"2xx\"}";
    let text = proxy.wait_metric(series, Duration::from_secs(3), |v| v >= 4.0);
    assert_metric_line(&text, &format!("{series} 4"));
    assert_metric_line(
        &text,
        "ringmesh_downstream_connections_active{listener=\"web\"} 1",
    );
    assert_metric_line(
        &text,
        "ringmesh_downstream_connections_total{listener=\"web\"} 1",
    );
    assert_eq!(up.request_count(), 0);
}

#[test]
fn metrics_text_is_well_formed() {
    let up = Upstream::start("up");
    let port = free_port();
    let proxy = start(&up, port);
    get(local(port), "localhost", "/a/x");
    // The request is counted once its response is written: the client may
    // read it a moment before that.
    wait_until(Duration::from_secs(5), || {
        proxy.metrics().contains("# TYPE ringmesh_requests_total ")
    });
    let text = proxy.metrics();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad metric line {line:?}"));
        assert!(
            value.parse::<f64>().is_ok() || value == "+Inf" || value == "NaN",
            "bad value in {line:?}"
        );
        let name = series.split('{').next().unwrap();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(
                    labels.starts_with('{') && labels.ends_with('}'),
                    "bad labels in {line:?}"
                );
            }
        }
    }
    for family in [
        "ringmesh_requests_total",
        "ringmesh_downstream_connections_total",
        "ringmesh_upstream_request_duration_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "missing # TYPE for {family}"
        );
    }
}
