//! The one error type of the Matrix APIs: an errcode, a message, and the HTTP
//! status the spec gives that errcode.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Map, Value, json};

/// Result of an operation that fails with a Matrix error.
pub type MatrixResult<T> = Result<T, MatrixError>;

/// The kinds of error Neurite returns, each one an errcode from the spec.
#[derive(Debug, Clone, PartialEq)]
pub enum ErrorKind {
    /// `M_FORBIDDEN`: not allowed, e.g. a wrong password or another user's resource.
    Forbidden,
    /// `M_UNKNOWN_TOKEN`: the access or refresh token is not (or no longer) valid.
    UnknownToken {
        /// Whether the client may keep its state and log in again (an expired token).
        soft_logout: bool,
    },
    /// `M_MISSING_TOKEN`: the endpoint needs an access token and none was given.
    MissingToken,
    /// `M_BAD_JSON`: valid JSON of the wrong shape.
    BadJson,
    /// `M_NOT_JSON`: the body is not JSON at all.
    NotJson,
    /// `M_NOT_FOUND`: no such resource.
    NotFound,
    /// `M_LIMIT_EXCEEDED`: rate-limited; retry after this many milliseconds.
    LimitExceeded {
        /// How long the client should wait before retrying.
        retry_after_ms: u64,
    },
    /// `M_UNRECOGNIZED`: unknown endpoint (404) or a known one with the wrong method (405).
    Unrecognized {
        /// 404 for an unknown path, 405 for a wrong method.
        status: StatusCode,
    },
    /// `M_USER_DEACTIVATED`: the account has been deactivated.
    UserDeactivated,
    /// `M_USER_IN_USE`: the user ID is taken.
    UserInUse,
    /// `M_INVALID_USERNAME`: the user ID is not a valid one to register.
    InvalidUsername,
    /// `M_EXCLUSIVE`: the user ID is reserved.
    Exclusive,
    /// `M_MISSING_PARAM`: a required parameter is missing.
    MissingParam,
    /// `M_INVALID_PARAM`: a parameter has a wrong value.
    InvalidParam,
    /// `M_TOO_LARGE`: the request or entity is too large.
    TooLarge,
    /// `M_WEAK_PASSWORD`: the password does not meet the server's policy.
    WeakPassword,
    /// `M_GUEST_ACCESS_FORBIDDEN`: guests may not do this.
    GuestAccessForbidden,
    /// `M_UNSUPPORTED_ROOM_VERSION`: the server cannot create a room of that version.
    UnsupportedRoomVersion,
    /// `M_INVALID_ROOM_STATE`: the initial state given to `createRoom` is invalid.
    InvalidRoomState,
    /// `M_BAD_STATE`: the state change cannot be made, e.g. unbanning a user who is not banned.
    BadState,
    /// `M_ROOM_IN_USE`: the room alias `createRoom` was asked for is taken.
    RoomInUse,
    /// `M_UNKNOWN` with status 409: the resource already exists, e.g. a taken room alias on
    /// `PUT /directory/room/{roomAlias}`.
    Conflict,
    /// `M_UNKNOWN` with status 400: a bad request no other code describes.
    BadRequest,
    /// `M_UNKNOWN` with status 500: a fault on our side; details are logged, never sent.
    Internal,
    /// User-interactive authentication must continue: 401 with the UIA body
    /// (flows, params, session, completed, and errcode/error if a stage failed).
    UiaRequired(Box<Value>),
}

impl ErrorKind {
    /// The errcode string the spec gives this kind.
    pub fn errcode(&self) -> &'static str {
        match self {
            Self::Forbidden => "M_FORBIDDEN",
            Self::UnknownToken { .. } => "M_UNKNOWN_TOKEN",
            Self::MissingToken => "M_MISSING_TOKEN",
            Self::BadJson => "M_BAD_JSON",
            Self::NotJson => "M_NOT_JSON",
            Self::NotFound => "M_NOT_FOUND",
            Self::LimitExceeded { .. } => "M_LIMIT_EXCEEDED",
            Self::Unrecognized { .. } => "M_UNRECOGNIZED",
            Self::UserDeactivated => "M_USER_DEACTIVATED",
            Self::UserInUse => "M_USER_IN_USE",
            Self::InvalidUsername => "M_INVALID_USERNAME",
            Self::Exclusive => "M_EXCLUSIVE",
            Self::MissingParam => "M_MISSING_PARAM",
            Self::InvalidParam => "M_INVALID_PARAM",
            Self::TooLarge => "M_TOO_LARGE",
            Self::WeakPassword => "M_WEAK_PASSWORD",
            Self::GuestAccessForbidden => "M_GUEST_ACCESS_FORBIDDEN",
            Self::UnsupportedRoomVersion => "M_UNSUPPORTED_ROOM_VERSION",
            Self::InvalidRoomState => "M_INVALID_ROOM_STATE",
            Self::BadState => "M_BAD_STATE",
            Self::RoomInUse => "M_ROOM_IN_USE",
            Self::BadRequest | Self::Conflict | Self::Internal => "M_UNKNOWN",
            Self::UiaRequired(_) => "M_FORBIDDEN",
        }
    }

    /// The HTTP status this kind is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Forbidden | Self::UserDeactivated | Self::GuestAccessForbidden => StatusCode::FORBIDDEN,
            Self::UnknownToken { .. } | Self::MissingToken | Self::UiaRequired(_) => StatusCode::UNAUTHORIZED,
            Self::BadJson
            | Self::NotJson
            | Self::UserInUse
            | Self::InvalidUsername
            | Self::Exclusive
            | Self::MissingParam
            | Self::InvalidParam
            | Self::WeakPassword
            | Self::UnsupportedRoomVersion
            | Self::InvalidRoomState
            | Self::BadState
            | Self::RoomInUse
            | Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::Conflict => StatusCode::CONFLICT,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::LimitExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unrecognized { status } => *status,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A Matrix API error: what the client sees as `{"errcode": ..., "error": ...}`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{} {}: {message}", kind.status().as_u16(), kind.errcode())]
pub struct MatrixError {
    /// Which error this is; decides the errcode and the status.
    pub kind: ErrorKind,
    /// A human-readable sentence for the client. Never contains secrets.
    pub message: String,
}

impl MatrixError {
    /// An error of the given kind with a message for the client.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }

    /// `M_FORBIDDEN`, 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, message)
    }

    /// `M_NOT_FOUND`, 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// `M_BAD_JSON`, 400.
    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadJson, message)
    }

    /// `M_INVALID_PARAM`, 400.
    pub fn invalid_param(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidParam, message)
    }

    /// `M_MISSING_PARAM`, 400.
    pub fn missing_param(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::MissingParam, message)
    }

    /// `M_UNKNOWN`, 500. The cause is logged here, once, and not sent to the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(ErrorKind::Internal, "Internal server error")
    }

    /// The JSON body of this error.
    pub fn body(&self) -> Value {
        if let ErrorKind::UiaRequired(body) = &self.kind {
            return (**body).clone();
        }
        let mut body = Map::new();
        body.insert("errcode".into(), json!(self.kind.errcode()));
        body.insert("error".into(), json!(self.message));
        match &self.kind {
            ErrorKind::UnknownToken { soft_logout } => {
                body.insert("soft_logout".into(), json!(soft_logout));
            }
            ErrorKind::LimitExceeded { retry_after_ms } => {
                body.insert("retry_after_ms".into(), json!(retry_after_ms));
            }
            _ => {}
        }
        Value::Object(body)
    }
}

impl IntoResponse for MatrixError {
    fn into_response(self) -> Response {
        let status = self.kind.status();
        let body = serde_json::to_vec(&self.body()).expect("a JSON value always serializes");
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let ErrorKind::LimitExceeded { retry_after_ms } = self.kind {
            // The spec (v1.10+) asks for Retry-After in whole seconds beside retry_after_ms.
            let secs = retry_after_ms.div_ceil(1000).max(1);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_the_spec_status() {
        let cases = [
            (ErrorKind::MissingToken, 401, "M_MISSING_TOKEN"),
            (ErrorKind::UnknownToken { soft_logout: true }, 401, "M_UNKNOWN_TOKEN"),
            (ErrorKind::NotJson, 400, "M_NOT_JSON"),
            (ErrorKind::BadJson, 400, "M_BAD_JSON"),
            (ErrorKind::Forbidden, 403, "M_FORBIDDEN"),
            (ErrorKind::LimitExceeded { retry_after_ms: 5 }, 429, "M_LIMIT_EXCEEDED"),
            (ErrorKind::TooLarge, 413, "M_TOO_LARGE"),
            (ErrorKind::Unrecognized { status: StatusCode::METHOD_NOT_ALLOWED }, 405, "M_UNRECOGNIZED"),
            (ErrorKind::Internal, 500, "M_UNKNOWN"),
            (ErrorKind::RoomInUse, 400, "M_ROOM_IN_USE"),
            (ErrorKind::Conflict, 409, "M_UNKNOWN"),
        ];
        for (kind, status, errcode) in cases {
            assert_eq!(kind.status().as_u16(), status, "{errcode}");
            assert_eq!(kind.errcode(), errcode);
        }
    }

    #[test]
    fn extra_fields_are_in_the_body() {
        let e = MatrixError::new(ErrorKind::LimitExceeded { retry_after_ms: 1200 }, "slow down");
        assert_eq!(e.body(), json!({"errcode": "M_LIMIT_EXCEEDED", "error": "slow down", "retry_after_ms": 1200}));
        let e = MatrixError::new(ErrorKind::UnknownToken { soft_logout: true }, "expired");
        assert_eq!(e.body()["soft_logout"], json!(true));
    }
}
