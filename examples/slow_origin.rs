//! A slow (or never-answering) HTTP/1.1 origin for the shadow benchmarks of
//! `bench/run.sh`: the candidate that answers after 1 s, or never.
//!
//! nginx cannot sleep, and the first version of this origin (asyncio,
//! `bench/slow_origin.py`) spent about as much CPU per answer as the proxy
//! under test. In the benchmark everything shares two cores, so that CPU
//! came out of the proxy's share, in bursts of a thousand answers a second,
//! and showed in the client's p99: it measured the candidate, not the
//! proxy. A candidate in production runs on other machines. This one is
//! hyper on one thread, so its cost per answer is a few microseconds.
//!
//! It answers like the benchmark's nginx origins (same bodies, same
//! comparable headers, so strangler's comparisons match), only later:
//!
//! ```sh
//! cargo run --release --example slow_origin -- --port 18082 --delay 1
//! cargo run --release --example slow_origin -- --port 18083 --delay never
//! ```
//!
//! `/` gets the 100-byte body of `bench/conf/nginx-backend.conf`
//! (text/plain); `/big` 16,384 bytes of `b` (application/octet-stream, with
//! the `Last-Modified`, `ETag` and `Accept-Ranges` nginx sends for
//! `www/big.bin`, whose mtime `run.sh` pins to `--mtime`); anything else 404.

use std::convert::Infallible;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use clap::Parser;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;

#[derive(Parser)]
#[command(about = "A slow or never-answering origin for bench/run.sh")]
struct Args {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long)]
    port: u16,
    /// Seconds before answering, or `never`.
    #[arg(long, default_value = "1")]
    delay: String,
    /// mtime of nginx's big.bin (seconds since the epoch).
    #[arg(long, default_value_t = 1_767_225_600)]
    mtime: u64,
}

const SMALL_BODY: &[u8; 100] = b"bench-backend-ok xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n";
const BIG_LEN: usize = 16_384;

/// The answers, built once.
struct Answers {
    small: Bytes,
    big: Bytes,
    last_modified: HeaderValue,
    etag: HeaderValue,
}

impl Answers {
    fn new(mtime: u64) -> Answers {
        let when = UNIX_EPOCH + Duration::from_secs(mtime);
        Answers {
            small: Bytes::from_static(SMALL_BODY),
            big: Bytes::from(vec![b'b'; BIG_LEN]),
            last_modified: HeaderValue::from_str(&httpdate::fmt_http_date(when))
                .expect("an HTTP date is a valid header value"),
            etag: HeaderValue::from_str(&format!("\"{mtime:x}-{BIG_LEN:x}\""))
                .expect("a hex ETag is a valid header value"),
        }
    }

    fn answer(&self, path: &str) -> Response<Full<Bytes>> {
        let (status, content_type, body) = match path {
            "/" => (StatusCode::OK, "text/plain", self.small.clone()),
            "/big" => (StatusCode::OK, "application/octet-stream", self.big.clone()),
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain",
                Bytes::from_static(b"not found\n"),
            ),
        };
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if path == "/big" {
            headers.insert(header::LAST_MODIFIED, self.last_modified.clone());
            headers.insert(header::ETAG, self.etag.clone());
            headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        }
        response
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let delay = match args.delay.as_str() {
        "never" => None,
        secs => Some(Duration::from_secs_f64(secs.parse()?)),
    };
    let answers: &'static Answers = Box::leak(Box::new(Answers::new(args.mtime)));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // A deep backlog, as nginx's: a thousand mirrors may connect at once.
        let address = tokio::net::lookup_host((args.host.as_str(), args.port))
            .await?
            .next()
            .ok_or_else(|| anyhow::anyhow!("{} has no address", args.host))?;
        let socket = if address.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(address)?;
        let listener = socket.listen(4096)?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let service = service_fn(move |request: Request<Incoming>| async move {
                match delay {
                    Some(delay) => tokio::time::sleep(delay).await,
                    None => std::future::pending::<()>().await,
                }
                Ok::<_, Infallible>(answers.answer(request.uri().path()))
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
