//! The admin API's extractors: axum's `Json`, `Query` and `Path`, whose refusals
//! (malformed JSON, a missing field, a wrong type, no JSON content type, a bad path or
//! query parameter) answer in the documented error form
//! `{"error": {"code", "message"}}` instead of axum's plain text.

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

use crate::http::error::ApiError;

/// A JSON body in, or a JSON answer out. A body must also pass the checks every JSON
/// Siyu accepts passes ([`siyu_core::json_check`]): no NUL, no lone surrogate, bounded depth.
pub struct Json<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| m.trim().to_ascii_lowercase())
            .is_some_and(|m| m == "application/json" || m.ends_with("+json"));
        if !is_json {
            return Err(JsonRejection::MissingJsonContentType(Default::default()).into());
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| ApiError::bad_request("unreadable_body", e.body_text()))?;
        let axum::Json(value) = axum::Json::<T>::from_bytes(&bytes)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| ApiError::bad_request("invalid_json", "the body is not UTF-8"))?;
        siyu_core::json_check::check(text).map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))?;
        Ok(Json(value))
    }
}

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> ApiError {
        let (status, code) = match &r {
            JsonRejection::MissingJsonContentType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            JsonRejection::JsonSyntaxError(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            JsonRejection::JsonDataError(_) => (StatusCode::BAD_REQUEST, "invalid_body"),
            JsonRejection::BytesRejection(_) => (StatusCode::BAD_REQUEST, "unreadable_body"),
            _ => (StatusCode::BAD_REQUEST, "invalid_body"),
        };
        let message = match &r {
            JsonRejection::MissingJsonContentType(_) => "send the body as JSON with `Content-Type: application/json`".to_string(),
            // serde's own words name the field and what it expected.
            _ => r.body_text(),
        };
        ApiError::new(status, code, message)
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> ApiError {
        ApiError::bad_request("invalid_query", r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> ApiError {
        ApiError::bad_request("invalid_path", r.body_text())
    }
}
