//! Glue between axum and ruma's server-side request and response types:
//! reading a bounded body, parsing a ruma request with the spec's errcodes,
//! and turning a ruma response into an axum one.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use http::Method;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use ruma::api::error::{DeserializationError, FromHttpRequestError};
use ruma::api::path_builder::PathBuilder;
use ruma::api::{IncomingRequest, IncomingRequestExt, Metadata, OutgoingResponse, OutgoingResponseExt};

use crate::error::{ErrorKind, MatrixError, MatrixResult};

/// A ruma response type served as an axum response.
pub struct RumaResponse<T>(pub T);

impl<T: OutgoingResponse> IntoResponse for RumaResponse<T> {
    fn into_response(self) -> Response {
        match self.0.try_into_http_response::<BytesMut>() {
            Ok(response) => response.map(|body| Body::from(body.freeze())).into_response(),
            Err(e) => MatrixError::internal(format_args!("serializing a response: {e}")).into_response(),
        }
    }
}

/// Reads a request body of at most `limit` bytes; a longer one is `M_TOO_LARGE`.
pub async fn read_body(body: Body, limit: usize) -> MatrixResult<Bytes> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large(limit)),
        Err(e) => Err(MatrixError::new(ErrorKind::BadRequest, format!("could not read the request body: {e}"))),
    }
}

/// The error for a body over the configured maximum.
pub fn too_large(limit: usize) -> MatrixError {
    MatrixError::new(ErrorKind::TooLarge, format!("request body is larger than {limit} bytes"))
}

/// The stable paths (every version, `r0` included) under which ruma knows an
/// endpoint, in axum's `{param}` syntax; unstable MSC paths are left out.
pub fn stable_paths<T: Metadata>() -> Vec<&'static str> {
    T::PATH_BUILDER.all_paths().filter(|path| !path.contains("/unstable/")).collect()
}

/// Parses a ruma request from the request head, its body and the
/// percent-decoded path arguments, mapping failures to the spec's errcodes:
/// a body that is not JSON is `M_NOT_JSON`, JSON of the wrong shape is
/// `M_BAD_JSON`, a bad query or path parameter is `M_INVALID_PARAM`.
pub fn parse_request<T: IncomingRequest>(
    method: &Method,
    uri: &http::Uri,
    headers: &http::HeaderMap,
    body: &[u8],
    path_args: &[&str],
) -> MatrixResult<T> {
    // The spec requires a JSON object body on POST and PUT, but many clients
    // send nothing for endpoints without parameters (e.g. /logout): read an
    // empty body as `{}`, so a missing required field is still M_BAD_JSON.
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { body };
    let mut builder = http::Request::builder().method(method.clone()).uri(uri.clone());
    if let Some(h) = builder.headers_mut() {
        h.clone_from(headers);
    }
    let request = builder.body(body).map_err(MatrixError::internal)?;
    // Deserializers of untrusted input must not take the request down: ruma
    // 0.17's `LoginInfo` indexes a missing `type` key and panics, for one.
    // Invariant: parsing touches nothing shared, so unwinding out of it is safe.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| T::try_from_http_request(request, path_args))) {
        Ok(parsed) => parsed.map_err(|e| request_error(e, body)),
        Err(_) => Err(MatrixError::bad_json("request body has the wrong shape")),
    }
}

fn request_error(error: FromHttpRequestError, body: &[u8]) -> MatrixError {
    match error {
        FromHttpRequestError::MethodMismatch { .. } => MatrixError::new(
            ErrorKind::Unrecognized { status: http::StatusCode::METHOD_NOT_ALLOWED },
            "method not allowed",
        ),
        FromHttpRequestError::Deserialization(e) => match e {
            DeserializationError::Json(e) => {
                if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() {
                    MatrixError::new(ErrorKind::NotJson, format!("request body is not valid JSON: {e}"))
                } else {
                    MatrixError::bad_json(format!("request body has the wrong shape: {e}"))
                }
            }
            DeserializationError::Utf8(_) => MatrixError::new(ErrorKind::NotJson, "request body is not UTF-8"),
            DeserializationError::Query(e) => MatrixError::invalid_param(format!("bad query parameter: {e}")),
            DeserializationError::Ident(e) => MatrixError::invalid_param(format!("bad identifier: {e}")),
            other => MatrixError::bad_json(other.to_string()),
        },
        // FromHttpRequestError is non-exhaustive.
        other => MatrixError::bad_json(other.to_string()),
    }
}
