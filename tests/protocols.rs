//! HTTP/2 (h2c and TLS with ALPN), https upstreams, gRPC trailers, WebSocket.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::support::backend::{full, Backend};
use crate::support::{client, upstreams, Proxy};

const ROUTE: &str = "\n[[routes]]\nname = \"all\"\npath_prefix = \"/\"\nlegacy = \"legacy\"\ncandidate = \"candidate\"\n";

struct Cert {
    _dir: tempfile::TempDir,
    cert_path: std::path::PathBuf,
    key_path: std::path::PathBuf,
    cert_pem: String,
    key_pem: String,
}

fn self_signed() -> Cert {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert_pem = generated.cert.pem();
    let key_pem = generated.key_pair.serialize_pem();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, &cert_pem).unwrap();
    std::fs::write(&key_path, &key_pem).unwrap();
    Cert {
        _dir: dir,
        cert_path,
        key_path,
        cert_pem,
        key_pem,
    }
}

#[tokio::test]
async fn h2c_clients_are_served() {
    let legacy = Backend::named("legacy").await;
    let candidate = Backend::named("candidate").await;
    let proxy = Proxy::start(&format!(
        "{}{ROUTE}",
        upstreams(legacy.addr, candidate.addr)
    ))
    .await;
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2.get(proxy.url("/x")).send().await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.text().await.unwrap(), "legacy");
    assert_eq!(
        legacy.seen()[0].headers["host"],
        proxy.addr.to_string(),
        "the :authority becomes Host"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn tls_listener_negotiates_h2_and_http1() {
    let cert = self_signed();
    let legacy = Backend::named("legacy").await;
    let candidate = Backend::named("candidate").await;
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntls = {{ cert = \"{}\", key = \"{}\" }}\n{}{ROUTE}",
        cert.cert_path.display(),
        cert.key_path.display(),
        upstreams(legacy.addr, candidate.addr)
    );
    let proxy = Proxy::start(&toml).await;
    let root = reqwest::Certificate::from_pem(cert.cert_pem.as_bytes()).unwrap();
    let url = format!("https://localhost:{}/secure", proxy.addr.port());
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(root.clone())
        .resolve("localhost", proxy.addr)
        .build()
        .unwrap();
    let response = h2.get(&url).send().await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2, "ALPN chose h2");
    assert_eq!(response.text().await.unwrap(), "legacy");
    let h1 = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(root)
        .http1_only()
        .resolve("localhost", proxy.addr)
        .build()
        .unwrap();
    let response = h1.get(&url).send().await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_11);
    assert_eq!(legacy.seen()[1].headers["x-forwarded-proto"], "https");
    proxy.stop().await;
}

/// A TLS upstream that answers with the HTTP version it was spoken to in.
async fn tls_backend(cert: &Cert) -> std::net::SocketAddr {
    let certs = rustls_pemfile::certs(&mut cert.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut cert.key_pem.as_bytes())
        .unwrap()
        .unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            format!("{:?}", req.version()),
                        ))))
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn https_upstreams_with_a_configured_ca_and_each_protocol() {
    let cert = self_signed();
    let backend = tls_backend(&cert).await;
    let candidate = Backend::named("candidate").await;
    for (protocol, expected) in [
        ("auto", "HTTP/2.0"),
        ("h2", "HTTP/2.0"),
        ("http1", "HTTP/1.1"),
    ] {
        let toml = format!(
            "[upstreams.legacy]\nurl = \"https://127.0.0.1:{}\"\nca = \"{}\"\nprotocol = \"{protocol}\"\n\n[upstreams.candidate]\nurl = \"http://{}\"\n{ROUTE}",
            backend.port(),
            cert.cert_path.display(),
            candidate.addr
        );
        let proxy = Proxy::start(&toml).await;
        let response = client().get(proxy.url("/tls")).send().await.unwrap();
        assert_eq!(response.status(), 200, "protocol {protocol}");
        assert_eq!(
            response.text().await.unwrap(),
            expected,
            "protocol {protocol}"
        );
        proxy.stop().await;
    }
    // Without the CA the certificate is not trusted: 502, not a hang.
    let toml = format!(
        "[upstreams.legacy]\nurl = \"https://127.0.0.1:{}\"\n\n[upstreams.candidate]\nurl = \"http://{}\"\n{ROUTE}",
        backend.port(),
        candidate.addr
    );
    let proxy = Proxy::start(&toml).await;
    assert_eq!(
        client()
            .get(proxy.url("/tls"))
            .send()
            .await
            .unwrap()
            .status(),
        502
    );
    proxy.stop().await;
}

/// A gRPC answer: one message, then `grpc-status` (and `grpc-message`) in
/// the trailers.
fn grpc_answer(
    message: &'static [u8],
    status: &str,
    text: Option<&str>,
) -> Response<crate::support::backend::Body> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", status.parse().unwrap());
    if let Some(text) = text {
        trailers.insert("grpc-message", text.parse().unwrap());
    }
    let frames = vec![
        Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from_static(message))),
        Ok(http_body::Frame::trailers(trailers)),
    ];
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames))
        .map_err(|e| Box::new(e) as _)
        .boxed();
    Response::builder()
        .header("content-type", "application/grpc")
        .body(body)
        .unwrap()
}

/// One gRPC call through the proxy over h2c; the answer is a 200, collected.
async fn grpc_call(proxy: &Proxy, path: &str) -> http_body_util::Collected<Bytes> {
    let h2 = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let request = Request::post(proxy.url(path))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap();
    let response = h2.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap()
}

#[tokio::test]
async fn grpc_trailers_pass_through_h2c() {
    let backend =
        Backend::start(|_req| async { grpc_answer(b"\0\0\0\0\x02hi", "0", Some("ok")) }).await;
    let candidate = Backend::named("candidate").await;
    let toml = format!(
        "[upstreams.legacy]\nurl = \"http://{}\"\nprotocol = \"h2c\"\n\n[upstreams.candidate]\nurl = \"http://{}\"\n{ROUTE}",
        backend.addr, candidate.addr
    );
    let proxy = Proxy::start(&toml).await;
    let collected = grpc_call(&proxy, "/pkg.Service/Method").await;
    let trailers = collected
        .trailers()
        .cloned()
        .expect("trailers reached the client");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(collected.to_bytes().as_ref(), b"\0\0\0\0\x02hi");
    let seen = &backend.seen()[0];
    assert_eq!(seen.version, http::Version::HTTP_2, "h2c to the upstream");
    assert_eq!(seen.headers["te"], "trailers");
    proxy.stop().await;
}

#[tokio::test]
async fn a_grpc_status_in_the_trailers_counts_for_the_error_gate() {
    // The usual gRPC failure: 200, then `grpc-status: 13` in the trailers.
    let candidate = Backend::start(|req| async move {
        let status = if req.uri().path().ends_with("/Fail") {
            "13"
        } else {
            "0"
        };
        grpc_answer(b"\0\0\0\0\0", status, None)
    })
    .await;
    let legacy = Backend::named("legacy").await;
    let toml = format!(
        "[upstreams.legacy]\nurl = \"http://{}\"\n\n[upstreams.candidate]\nurl = \"http://{}\"\nprotocol = \"h2c\"\n{ROUTE}stage = \"candidate\"\n[routes.rollout]\nauto = false\nfailure_limit = 1000000\n",
        legacy.addr, candidate.addr
    );
    let proxy = Proxy::start(&toml).await;
    for method in ["Fail", "Ok", "Fail", "Ok", "Fail"] {
        let collected = grpc_call(&proxy, &format!("/pkg.Service/{method}")).await;
        assert!(
            collected.trailers().is_some(),
            "trailers reached the client"
        );
    }
    let route: serde_json::Value = proxy.admin_json("/api/routes/all").await;
    assert_eq!(route["stage"], "candidate", "{route:#}");
    assert_eq!(
        (
            &route["candidate"]["requests"],
            &route["candidate"]["errors"]
        ),
        (&serde_json::json!(5), &serde_json::json!(3)),
        "{route:#}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn websocket_upgrades_pass_through() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::{Message, Role};

    let echo = Backend::start(|mut req| async move {
        let key = req.headers().get("sec-websocket-key").cloned().unwrap();
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let upgraded = upgrade.await.unwrap();
            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                None,
            )
            .await;
            while let Some(Ok(message)) = ws.next().await {
                if message.is_text() {
                    let _ = ws
                        .send(Message::text(format!(
                            "echo: {}",
                            message.to_text().unwrap()
                        )))
                        .await;
                }
            }
        });
        Response::builder()
            .status(101)
            .header("upgrade", "websocket")
            .header("connection", "upgrade")
            .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
            .body(full(""))
            .unwrap()
    })
    .await;
    let candidate = Backend::named("candidate").await;
    let proxy = Proxy::start(&format!("{}{ROUTE}", upstreams(echo.addr, candidate.addr))).await;
    let (mut ws, response) =
        tokio_tungstenite::connect_async(format!("ws://{}/socket", proxy.addr))
            .await
            .unwrap();
    assert_eq!(response.status(), 101);
    for text in ["one", "two"] {
        ws.send(Message::text(text)).await.unwrap();
        let answer = ws.next().await.unwrap().unwrap();
        assert_eq!(answer.to_text().unwrap(), format!("echo: {text}"));
    }
    ws.close(None).await.unwrap();
    proxy.stop().await;
}
