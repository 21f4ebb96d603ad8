//! The one error taxonomy (docs/architecture.md, Errors).
//!
//! Every failure anywhere in the daemon ends up as an [`Error`] carrying one stable [`ErrorCode`]; MCP results,
//! REST bodies, logs and metrics all speak these codes, so the mapping lives here and nowhere else.

use serde::Serialize;
use std::fmt;

/// Stable error codes. The string form is part of the public API: never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    Unauthorized,
    Forbidden,
    NotFound,
    InvalidRequest,
    RateLimited,
    XyteServerError,
    NetworkError,
    Timeout,
    InvalidParams,
    PermissionDenied,
    ReadOnly,
    TooManyRequests,
    /// The gateway's own disk is full: nothing was stored, retry once space is freed.
    StorageFull,
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::InvalidRequest,
        ErrorCode::RateLimited,
        ErrorCode::XyteServerError,
        ErrorCode::NetworkError,
        ErrorCode::Timeout,
        ErrorCode::InvalidParams,
        ErrorCode::PermissionDenied,
        ErrorCode::ReadOnly,
        ErrorCode::TooManyRequests,
        ErrorCode::StorageFull,
        ErrorCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::XyteServerError => "xyte_server_error",
            ErrorCode::NetworkError => "network_error",
            ErrorCode::Timeout => "timeout",
            ErrorCode::InvalidParams => "invalid_params",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::ReadOnly => "read_only",
            ErrorCode::TooManyRequests => "too_many_requests",
            ErrorCode::StorageFull => "storage_full",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status a REST caller sees for this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::Unauthorized | ErrorCode::Forbidden | ErrorCode::XyteServerError => 502,
            ErrorCode::NotFound => 404,
            ErrorCode::InvalidRequest => 422,
            ErrorCode::RateLimited | ErrorCode::NetworkError => 503,
            ErrorCode::Timeout => 504,
            ErrorCode::InvalidParams => 400,
            ErrorCode::PermissionDenied | ErrorCode::ReadOnly => 403,
            ErrorCode::TooManyRequests => 429,
            // 507 Insufficient Storage (RFC 4918): the request was fine, the gateway could not store it.
            ErrorCode::StorageFull => 507,
            ErrorCode::Internal => 500,
        }
    }

    /// Whether the failure says Xyte could not be reached at all (as opposed to Xyte answering "no").
    /// The cache serves stale data and the outbox keeps a command queued only for these.
    pub fn is_unreachable(self) -> bool {
        matches!(
            self,
            ErrorCode::NetworkError | ErrorCode::Timeout | ErrorCode::XyteServerError | ErrorCode::RateLimited
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure as the outside world sees it: a code, a message that says what to do next, and optional details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
    /// The caller asked for more than the gateway admits (see [`Error::over_limit`]); changes only the HTTP status.
    #[serde(skip)]
    pub over_limit: bool,
}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error { code, message: message.into(), hint: None, retry_after_s: None, over_limit: false }
    }

    /// The gateway's own admission control refused the call (the command outbox is at its limit): `rate_limited`,
    /// the code Xyte's 429s carry too, so agents handle both alike (wait `retry_after_s`, try again). But REST
    /// answers 429 here — this caller sent too much — while an upstream 429 stays 503: there the gateway cannot
    /// serve anyone for now, whatever the caller does.
    pub fn over_limit(message: impl Into<String>, retry_after_s: u64) -> Self {
        Error { over_limit: true, ..Error::new(ErrorCode::RateLimited, message).with_retry_after(retry_after_s) }
    }

    /// The HTTP status a REST caller sees.
    pub fn http_status(&self) -> u16 {
        if self.over_limit { 429 } else { self.code.http_status() }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_s = Some(seconds);
        self
    }

    pub fn invalid_params(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::InvalidParams, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::Internal, message)
    }

    /// The `{ "error": { … } }` body used by REST responses and MCP tool results.
    pub fn to_body(&self) -> serde_json::Value {
        serde_json::json!({ "error": self })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_distinct_names_and_documented_statuses() {
        let mut names: Vec<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
        assert_eq!(ErrorCode::Unauthorized.http_status(), 502);
        assert_eq!(ErrorCode::NotFound.http_status(), 404);
        assert_eq!(ErrorCode::InvalidRequest.http_status(), 422);
        assert_eq!(ErrorCode::RateLimited.http_status(), 503);
        assert_eq!(ErrorCode::Timeout.http_status(), 504);
        assert_eq!(ErrorCode::TooManyRequests.http_status(), 429);
        assert_eq!(ErrorCode::StorageFull.http_status(), 507);
        let refused = Error::over_limit("the outbox is full", 3);
        assert_eq!(
            (refused.code, refused.http_status(), refused.retry_after_s),
            (ErrorCode::RateLimited, 429, Some(3))
        );
        assert_eq!(Error::new(ErrorCode::RateLimited, "Xyte said 429").http_status(), 503);
    }

    #[test]
    fn body_serialises_code_as_snake_case_and_omits_absent_fields() {
        let body = Error::new(ErrorCode::RateLimited, "slow down").with_retry_after(2).to_body();
        assert_eq!(
            body,
            serde_json::json!({"error": {"code": "rate_limited", "message": "slow down", "retry_after_s": 2}})
        );
    }
}
