//! The service's errors: a stable code per kind of failure, the HTTP
//! status that goes with it, and the JSON body every error answers with:
//! `{"error": {"code": "...", "message": "..."}}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// What went wrong, as clients match on it. The strings never change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// The module is not WebAssembly (binary or text) or does not compile
    /// and link against WASI.
    BadModule,
    /// No snapshot has that name or root hash (here or in the store).
    UnknownSnapshot,
    /// No module has that name or hash.
    UnknownModule,
    /// A limit of the server or of the run was reached: snapshot memory,
    /// module count, a guest's memory cap.
    LimitExceeded,
    /// The guest ran past its deadline and was stopped (exit code 124).
    DeadlineExceeded,
    /// The guest trapped (exit code 134).
    Trapped,
    /// Too many requests are running and waiting: retry later.
    Overloaded,
    /// No bearer token, or the wrong one.
    Unauthorized,
    /// The request is malformed: JSON, names, paths, values out of range.
    BadRequest,
    /// The body is larger than the server accepts.
    PayloadTooLarge,
    /// No such route, or no such file or directory in a snapshot.
    NotFound,
    /// The route exists, but not with this method.
    MethodNotAllowed,
    /// The server failed (a store it cannot reach, say).
    Internal,
}

impl Code {
    /// The code as it appears in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BadModule => "bad_module",
            Code::UnknownSnapshot => "unknown_snapshot",
            Code::UnknownModule => "unknown_module",
            Code::LimitExceeded => "limit_exceeded",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::Trapped => "trapped",
            Code::Overloaded => "overloaded",
            Code::Unauthorized => "unauthorized",
            Code::BadRequest => "bad_request",
            Code::PayloadTooLarge => "payload_too_large",
            Code::NotFound => "not_found",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::Internal => "internal",
        }
    }

    /// The HTTP status a request failing with this code gets.
    pub fn status(self) -> StatusCode {
        match self {
            Code::BadModule | Code::BadRequest => StatusCode::BAD_REQUEST,
            Code::UnknownSnapshot | Code::UnknownModule | Code::NotFound => StatusCode::NOT_FOUND,
            Code::LimitExceeded => StatusCode::INSUFFICIENT_STORAGE,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Code::Trapped => StatusCode::UNPROCESSABLE_ENTITY,
            Code::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Every code, for the OpenAPI document.
    pub const ALL: [Code; 13] = [
        Code::BadModule,
        Code::UnknownSnapshot,
        Code::UnknownModule,
        Code::LimitExceeded,
        Code::DeadlineExceeded,
        Code::Trapped,
        Code::Overloaded,
        Code::Unauthorized,
        Code::BadRequest,
        Code::PayloadTooLarge,
        Code::NotFound,
        Code::MethodNotAllowed,
        Code::Internal,
    ];
}

/// A failed request: its code and a message for people.
#[derive(Clone, Debug)]
pub struct ApiError {
    /// The stable code.
    pub code: Code,
    /// What happened, in words.
    pub message: String,
}

impl ApiError {
    /// An error with `code` and `message`.
    pub fn new(code: Code, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }

    /// `bad_request`.
    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(Code::BadRequest, message)
    }

    /// `internal`, logged: the client cannot fix it.
    pub fn internal(message: impl Into<String>) -> ApiError {
        let message = message.into();
        tracing::error!(%message, "request failed on the server's side");
        ApiError::new(Code::Internal, message)
    }

    /// The `{"code", "message"}` object.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"code": self.code.as_str(), "message": self.message})
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.to_json() });
        let mut resp = (self.code.status(), axum::Json(body)).into_response();
        if self.code == Code::Overloaded {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.code == Code::PayloadTooLarge {
            // The rest of the body was never read: the connection cannot
            // carry another request, and the client must not reuse it.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if self.code == Code::Unauthorized {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"cowvfs\""),
            );
        }
        resp
    }
}

/// An engine error as the client should see it: a missing path is
/// `not_found`, a bad one `bad_request`, a quota `limit_exceeded`.
impl From<crate::Error> for ApiError {
    fn from(e: crate::Error) -> ApiError {
        use crate::ErrorKind as K;
        let code = match e.kind() {
            K::NotFound => Code::NotFound,
            K::NoSpace | K::QuotaExceeded | K::FileTooLarge => Code::LimitExceeded,
            K::InvalidInput
            | K::NotADirectory
            | K::IsADirectory
            | K::NameTooLong
            | K::Loop
            | K::PermissionDenied
            | K::Corrupt
            | K::Unsupported => Code::BadRequest,
            _ => return ApiError::internal(e.to_string()),
        };
        ApiError::new(code, e.to_string())
    }
}

/// What handlers return.
pub type ApiResult<T> = std::result::Result<T, ApiError>;
