//! Data-path failures and the answers the proxy makes for them.

use http::{Response, StatusCode};

use super::body::{full, ProxyBody};

/// Why an upstream exchange failed before a response arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// No connection (refused, unreachable, DNS, TLS, connect timeout).
    Connect,
    /// No response headers within `timeout`.
    Timeout,
    /// The connection broke before any response byte.
    Reset,
}

impl UpstreamFailure {
    /// The `kind` label of `strangler_upstream_errors_total`.
    pub fn kind(self) -> &'static str {
        match self {
            UpstreamFailure::Connect => "connect",
            UpstreamFailure::Timeout => "timeout",
            UpstreamFailure::Reset => "reset",
        }
    }

    /// Transport errors before any response byte may be retried on legacy.
    pub fn is_transport(self) -> bool {
        matches!(self, UpstreamFailure::Connect | UpstreamFailure::Reset)
    }

    pub fn status(self) -> StatusCode {
        match self {
            UpstreamFailure::Timeout => StatusCode::GATEWAY_TIMEOUT,
            UpstreamFailure::Connect | UpstreamFailure::Reset => StatusCode::BAD_GATEWAY,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            UpstreamFailure::Connect => "is unreachable",
            UpstreamFailure::Timeout => "did not answer in time",
            UpstreamFailure::Reset => "closed the connection before answering",
        }
    }
}

/// The short plain-text answer for a failed upstream (SPEC §8).
pub fn upstream_failure_response(
    failure: UpstreamFailure,
    route: &str,
    upstream: &str,
) -> Response<ProxyBody> {
    plain(
        failure.status(),
        format!(
            "strangler: upstream {upstream} of route {route} {}\n",
            failure.describe()
        ),
    )
}

/// A plain-text answer made by the proxy.
pub fn plain(status: StatusCode, text: String) -> Response<ProxyBody> {
    let mut response = Response::new(full(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
