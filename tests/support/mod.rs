//! Test support: real upstream servers on ephemeral loopback ports and a
//! strangler started in-process from configuration text.

pub mod backend;
pub mod ports;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use strangler::app::App;
use strangler::config;

/// A running strangler with its configuration file in a temporary folder.
pub struct Proxy {
    pub app: Option<App>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub config_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proxy {
    /// Starts strangler from `toml` (listen addresses are forced to port 0
    /// unless the text sets them).
    pub async fn start(toml: &str) -> Proxy {
        Self::try_start(toml).await.expect("strangler should start")
    }

    pub async fn try_start(toml: &str) -> anyhow::Result<Proxy> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("strangler.toml");
        let store = dir.path().join("strangler.db");
        std::fs::write(&path, with_ephemeral_listeners(toml, &store))?;
        let env: Arc<dyn config::EnvSource + Send + Sync> =
            Arc::new(HashMap::<String, String>::new());
        let loaded = config::load(&path, env.as_ref()).map_err(|e| anyhow::anyhow!("{e}"))?;
        let app = App::start(loaded.config, path.clone(), env, Some("test".into())).await?;
        Ok(Proxy {
            addr: app.proxy_addr,
            admin: app.admin_addr,
            app: Some(app),
            config_path: path,
            _dir: dir,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// The admin listener's `/metrics` text.
    pub async fn metrics(&self) -> String {
        client()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .expect("the admin listener answers")
            .text()
            .await
            .expect("a metrics body")
    }

    /// An admin API answer, as JSON (or whatever it deserializes into).
    pub async fn admin_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        self.admin_get(path)
            .await
            .json()
            .await
            .expect("a JSON answer")
    }

    /// A plain GET of the admin API (no token), whatever its status.
    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        client()
            .get(self.admin_url(path))
            .send()
            .await
            .expect("the admin listener answers")
    }

    /// Rewrites the configuration file (keeping the bound addresses).
    pub fn rewrite_config(&self, toml: &str) {
        let store = self.config_path.with_file_name("strangler.db");
        let text = format!(
            "[store]\nurl = \"sqlite://{}\"\n{}",
            store.display(),
            with_listeners(toml, self.addr, self.admin)
        );
        std::fs::write(&self.config_path, text).expect("config file is writable");
    }

    pub async fn stop(mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await;
        }
    }
}

fn with_ephemeral_listeners(toml: &str, store: &std::path::Path) -> String {
    let mut text = String::new();
    if !toml.contains("[store]") {
        text.push_str(&format!(
            "[store]\nurl = \"sqlite://{}\"\n",
            store.display()
        ));
    }
    if !toml.contains("[server]") {
        text.push_str("[server]\nlisten = \"127.0.0.1:0\"\n");
    }
    if !toml.contains("[admin]") {
        text.push_str("[admin]\nlisten = \"127.0.0.1:0\"\n");
    }
    text.push_str(toml);
    text
}

fn with_listeners(toml: &str, proxy: SocketAddr, admin: SocketAddr) -> String {
    format!("[server]\nlisten = \"{proxy}\"\n[admin]\nlisten = \"{admin}\"\n{toml}")
}

/// A plain HTTP/1.1 client with a connection pool.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a default reqwest client builds")
}

/// Two upstreams named legacy and candidate, and the config text declaring them.
pub fn upstreams(legacy: SocketAddr, candidate: SocketAddr) -> String {
    format!(
        "[upstreams.legacy]\nurl = \"http://{legacy}\"\n\n[upstreams.candidate]\nurl = \"http://{candidate}\"\n\n"
    )
}

/// Sends a raw HTTP/1.1 request and returns everything the server wrote
/// until it closed the connection or 5 s passed.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("proxy accepts connections");
    stream.write_all(request).await.expect("request written");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut out),
    )
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads from a raw connection until a request head is complete: `false`
/// when the peer closed (or failed) first. For hand-written origins.
pub async fn read_request_head(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    true
}
