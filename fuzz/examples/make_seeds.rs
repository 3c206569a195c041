//! Writes the binary seeds of the fuzz targets into `seeds/`: control-plane
//! responses (`xds_decode`), ClientHellos (`tls_sniff`) and what an h2
//! client sends after the preface (`http2_request`). The text seeds are
//! written by hand. Run from `fuzz/`: `cargo run --example make_seeds`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use ringmesh_fuzz::{frame, response, xds_base};
use ringmesh_proto::v1 as pb;
use tokio::io::AsyncReadExt;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("seeds").join(target);
    std::fs::create_dir_all(&dir).expect("seeds dir");
    std::fs::write(dir.join(name), bytes).expect("write a seed");
    println!("seeds/{target}/{name}: {} bytes", bytes.len());
}

fn xds() {
    let base = xds_base();
    // The base state resent, one type per seed.
    for r in &base {
        let mut out = Vec::new();
        frame(&mut out, 0, &r.encode_to_vec());
        let kind = pb::ResourceType::try_from(r.r#type)
            .expect("a type")
            .as_str_name()
            .to_lowercase();
        write("xds_decode", &format!("{kind}"), &out);
    }
    // A batch: clusters dropped while a route names one (retained), a
    // listener changed, the route table replaced.
    let mut out = Vec::new();
    let mut clusters = base[0].clone();
    clusters.resources.truncate(1);
    frame(&mut out, 1, &clusters.encode_to_vec());
    frame(&mut out, 3, &base[2].encode_to_vec());
    frame(&mut out, 4, &base[3].encode_to_vec());
    write("xds_decode", "batch", &out);
    // A secret set without a bundle, and an empty response of every type.
    let mut out = Vec::new();
    frame(
        &mut out,
        0,
        &response(pb::ResourceType::Secret, "s1", Vec::new()).encode_to_vec(),
    );
    for t in [
        pb::ResourceType::Cluster,
        pb::ResourceType::Listener,
        pb::ResourceType::RouteTable,
    ] {
        frame(
            &mut out,
            0,
            &response(t, "empty", Vec::new()).encode_to_vec(),
        );
    }
    write("xds_decode", "empty", &out);
}

fn tls() {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    for (name, versions, alpn) in [
        (
            "hello-tls13",
            &[&rustls::version::TLS13][..],
            vec![b"h2".to_vec()],
        ),
        ("hello-tls12", &[&rustls::version::TLS12][..], Vec::new()),
    ] {
        let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .expect("versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = alpn;
        let server = "reviews.default.svc".try_into().expect("name");
        let mut conn = rustls::ClientConnection::new(Arc::new(config), server).expect("client");
        let mut hello = Vec::new();
        conn.write_tls(&mut hello).expect("hello");
        write("tls_sniff", name, &hello);
    }
    write("tls_sniff", "http1", b"GET / HTTP/1.1\r\n");
    write("tls_sniff", "h2c-preface", ringmesh_engine::http2::PREFACE);
    write("tls_sniff", "short-record", &[0x16, 0x03, 0x01]);
}

/// What an h2 client writes for `requests`, without the preface.
async fn h2_bytes(
    requests: Vec<(http::Request<()>, Vec<Bytes>, Option<http::HeaderMap>, bool)>,
) -> Vec<u8> {
    let (c, mut s) = tokio::io::duplex(1 << 20);
    let client = tokio::spawn(async move {
        let (mut send, conn) = h2::client::handshake(c).await.expect("handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        for (req, body, trailers, reset) in requests {
            let eos = body.is_empty() && trailers.is_none();
            let (_resp, mut tx) = send.send_request(req, eos).expect("send");
            for (i, chunk) in body.iter().enumerate() {
                let last = i + 1 == body.len() && trailers.is_none();
                tx.send_data(chunk.clone(), last).expect("data");
            }
            if let Some(t) = trailers {
                tx.send_trailers(t).expect("trailers");
            }
            if reset {
                tx.send_reset(h2::Reason::CANCEL);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    });
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    client.abort();
    let preface = ringmesh_engine::http2::PREFACE;
    assert!(out.starts_with(preface));
    out.split_off(preface.len())
}

fn get(path: &str) -> http::Request<()> {
    http::Request::builder()
        .uri(format!("http://reviews.default:9080{path}"))
        .header("x-request-id", "abc")
        .header("accept", "*/*")
        .body(())
        .expect("request")
}

fn http2() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        write(
            "http2_request",
            "get",
            &h2_bytes(vec![(get("/v1/items?x=1"), Vec::new(), None, false)]).await,
        );

        let post = http::Request::builder()
            .method("POST")
            .uri("http://api.example.com/upload")
            .header("content-type", "text/plain")
            .header("te", "trailers")
            .body(())
            .expect("request");
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-checksum", "1234".parse().expect("value"));
        trailers.insert("grpc-status", "0".parse().expect("value"));
        write(
            "http2_request",
            "post-trailers",
            &h2_bytes(vec![(
                post,
                vec![Bytes::from_static(b"hello "), Bytes::from_static(b"world")],
                Some(trailers),
                false,
            )])
            .await,
        );

        let grpc = http::Request::builder()
            .method("POST")
            .uri("http://echo.default:50051/ringmesh.testing.v1.Echo/Say")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("grpc-timeout", "250m")
            .header("content-length", "10")
            .body(())
            .expect("request");
        write(
            "http2_request",
            "grpc",
            &h2_bytes(vec![(
                grpc,
                vec![Bytes::from_static(b"\0\0\0\0\x05hello")],
                None,
                false,
            )])
            .await,
        );

        let resets: Vec<_> = (0..6)
            .map(|i| {
                (
                    get(&format!("/r{i}")),
                    vec![Bytes::from_static(b"x")],
                    None,
                    true,
                )
            })
            .collect();
        write("http2_request", "rapid-reset", &h2_bytes(resets).await);
    });
}

fn main() {
    xds();
    tls();
    http2();
}
