//! A small admin API client for the `status`, `promote`… commands.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Why an admin call failed; the message is one sentence for stderr.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid admin URL {0}")]
    BadUrl(String),
    #[error("cannot reach the admin API at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the admin API answered {status}: {message}")]
    Refused { status: StatusCode, message: String },
}

pub struct AdminClient {
    base: String,
    token: Option<String>,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl AdminClient {
    pub fn new(base: &str, token: Option<String>) -> Self {
        AdminClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub async fn get(&self, path: &str) -> Result<serde_json::Value, ClientError> {
        self.call(Method::GET, path, None).await
    }

    /// A GET whose answer is text (JSON lines), returned as is.
    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let (status, bytes) = self.send(Method::GET, path, None).await?;
        if !status.is_success() {
            return Err(refused(status, &bytes));
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    pub async fn post(
        &self,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, ClientError> {
        self.call(Method::POST, path, body).await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, ClientError> {
        let (status, bytes) = self.send(method, path, body).await?;
        if !status.is_success() {
            return Err(refused(status, &bytes));
        }
        Ok(serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let url = format!("{}{}", self.base, path);
        let mut request = Request::builder().method(method).uri(&url);
        if let Some(token) = &self.token {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some(json) => {
                request = request.header(http::header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(json.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let request = request
            .body(body)
            .map_err(|_| ClientError::BadUrl(self.base.clone()))?;
        let unreachable = |reason: String| ClientError::Unreachable {
            url: self.base.clone(),
            reason,
        };
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        Ok((status, bytes))
    }
}

/// An error answer: its `{"error": …}` message, or its text.
fn refused(status: StatusCode, bytes: &[u8]) -> ClientError {
    let json: serde_json::Value = serde_json::from_slice(bytes).unwrap_or(serde_json::Value::Null);
    let message = json.get("error").and_then(|e| e.as_str()).map_or_else(
        || String::from_utf8_lossy(bytes).trim().to_string(),
        str::to_string,
    );
    ClientError::Refused { status, message }
}
