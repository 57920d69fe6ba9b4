//! Admin API errors: `{"error": "…"}` with a fitting status.

use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;

use crate::runtime::ControlError;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

impl From<ControlError> for ApiError {
    fn from(error: ControlError) -> Self {
        let status = match error {
            ControlError::UnknownRoute(_) => StatusCode::NOT_FOUND,
            ControlError::Conflict(_) | ControlError::NotLeader => StatusCode::CONFLICT,
            ControlError::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, error.to_string())
    }
}
