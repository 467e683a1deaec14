//! The crate's one error type and the one place that knows what each failure means: HTTP
//! status, stable kebab-case `code` and public message (a typed [`Kind`]), `Retry-After` and
//! rate-limit headers, the JSON body, the log level, the error metric and the origin-fetch
//! outcome label. Internal detail (decoder messages, addresses, paths) stays in `Display` for
//! logs and never reaches a response body.

use std::borrow::Cow;

use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use crate::cpu::GateError;
use crate::metrics::{FetchOutcome, Metrics};
use crate::origin::OriginError;
use crate::pixels::{DecodeError, EncodeError, PixelError, ProbeError};
use crate::plan::PlanError;
use crate::policy::{Limited, PolicyError, Refusal, Verdict};
use crate::request::options::OptionsError;
use crate::request::url::UrlError;
use crate::response::Body;

/// Any failure of a request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Options(#[from] OptionsError),
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error(transparent)]
    Origin(#[from] OriginError),
    #[error(transparent)]
    Pixels(#[from] PixelError),
    #[error(transparent)]
    Gate(#[from] GateError),
    #[error("the request took longer than the request timeout")]
    Timeout,
    #[error("no such route")]
    NotFound,
    /// An upload body over the source size limit (stopped reading there).
    #[error("the request body is over the limit of {0} bytes")]
    BodyTooLarge(u64),
    /// An upload that is not a usable body (malformed multipart, no `file` part, cut off).
    #[error("bad upload: {0}")]
    BadUpload(String),
    /// A JSON upload whose result the upload store could not keep (larger than the store).
    #[error("the upload result is too large to keep for its URL")]
    UploadNotKept,
    /// The policy refused the request with its own status and client-facing reason.
    #[error("refused by the policy ({}): {}", .0.status, .0.reason)]
    Denied(Refusal),
    #[error("rate limited (bucket full: {}, retry in {:?})", .0.table_full, .0.retry_after)]
    Limited(Limited),
    /// `decide` failed and the policy's `on_error` is `deny`.
    #[error("policy failed: {0}")]
    PolicyFailed(PolicyError),
    /// `pixgate transform`: the options ask for one format, the output file's name another.
    #[error("the options ask for {options} but the output file is named .{file}")]
    FormatMismatch {
        options: crate::Format,
        file: crate::Format,
    },
}

impl Error {
    /// HTTP status (API.md §6).
    pub fn status(&self) -> u16 {
        match self {
            Error::Options(o) | Error::Url(UrlError::Options(o)) => match o {
                OptionsError::SecurityOption(_) => 403,
                _ => 404,
            },
            Error::Url(UrlError::Signature(_)) => 403,
            Error::Url(_) => 404,
            Error::Origin(o) => match o {
                OriginError::ClientError(s) => *s,
                OriginError::ServerError(_) | OriginError::BadResponse(_) => 502,
                OriginError::Timeout(_) => 504,
                OriginError::TooLarge(_) => 422,
                OriginError::NotAllowed
                | OriginError::BlockedAddress(_)
                | OriginError::Unreachable(_)
                | OriginError::TooManyRedirects(_)
                | OriginError::NotFound => 404,
            },
            Error::Pixels(PixelError::UnsupportedOption(_)) => 404,
            Error::Pixels(PixelError::Deadline) => 503,
            Error::Pixels(PixelError::Ops(_) | PixelError::Encode(EncodeError::Failed(..))) => 500,
            Error::Pixels(_) => 422,
            Error::Gate(GateError::Panicked(_)) => 500,
            Error::Gate(_) | Error::Timeout => 503,
            Error::NotFound => 404,
            Error::BodyTooLarge(_) => 413,
            Error::BadUpload(_) => 400,
            Error::UploadNotKept => 507,
            Error::Denied(r) => r.status,
            Error::Limited(_) => 429,
            Error::PolicyFailed(_) => 503,
            Error::FormatMismatch { .. } => 400,
        }
    }

    /// What the failure is to a client: the stable code and its public message.
    pub fn kind(&self) -> Kind {
        use Kind as K;
        match self {
            Error::Options(o) | Error::Url(UrlError::Options(o)) => match o {
                OptionsError::Expired => K::ExpiredUrl,
                OptionsError::SecurityOption(_) => K::SecurityOptionForbidden,
                OptionsError::UnknownPreset(_) => K::UnknownPreset,
                _ => K::InvalidUrl,
            },
            Error::Url(UrlError::Signature(_)) => K::InvalidSignature,
            Error::Url(_) => K::InvalidUrl,
            Error::Origin(o) => match o {
                OriginError::NotAllowed => K::SourceNotAllowed,
                OriginError::BlockedAddress(_) => K::SourceAddressBlocked,
                OriginError::Unreachable(_) => K::SourceUnreachable,
                OriginError::ClientError(404) | OriginError::NotFound => K::SourceNotFound,
                OriginError::ClientError(_) => K::OriginClientError,
                OriginError::ServerError(_) => K::OriginServerError,
                OriginError::BadResponse(_) => K::OriginBadResponse,
                OriginError::Timeout(_) => K::OriginTimeout,
                OriginError::TooLarge(_) => K::SourceFileTooLarge,
                OriginError::TooManyRedirects(_) => K::TooManyRedirects,
            },
            Error::Pixels(e) => match e {
                PixelError::Probe(ProbeError::Empty) => K::EmptySource,
                PixelError::Probe(ProbeError::NotAnImage) => K::NotAnImage,
                PixelError::Probe(ProbeError::Corrupt(..)) => K::CorruptImage,
                PixelError::Probe(ProbeError::Unsupported(..)) => K::UnsupportedSourceFormat,
                PixelError::SourceTooManyPixels { .. } => K::SourceResolutionTooLarge,
                PixelError::SourceTooManyBytes { .. } => K::SourceFileTooLarge,
                PixelError::TooManyFrames { .. } => K::TooManyFrames,
                PixelError::MaxBytesUnreachable { .. } => K::MaxBytesUnreachable,
                PixelError::UnsupportedOption(_) => K::UnsupportedOption,
                PixelError::UnsupportedInput(_) => K::UnsupportedSourceFormat,
                PixelError::UnsupportedOutput(_) => K::UnsupportedOutputFormat,
                PixelError::Plan(PlanError::EmptySource(..)) => K::CorruptImage,
                PixelError::Plan(PlanError::ResultTooLarge { .. }) => K::ResultTooLarge,
                PixelError::Decode(
                    DecodeError::Unsupported(_) | DecodeError::UnsupportedVariant(..),
                ) => K::UnsupportedSourceFormat,
                PixelError::Decode(_) => K::CorruptImage,
                PixelError::Encode(EncodeError::Unsupported(_)) => K::UnsupportedOutputFormat,
                PixelError::Ops(_) | PixelError::Encode(_) => K::InternalError,
                PixelError::Deadline => K::RequestTimeout,
            },
            Error::Gate(GateError::QueueFull) => K::QueueFull,
            Error::Gate(GateError::Deadline) | Error::Timeout => K::RequestTimeout,
            Error::Gate(GateError::Panicked(_)) => K::InternalError,
            Error::NotFound => K::NotFound,
            Error::BodyTooLarge(_) => K::BodyTooLarge,
            Error::BadUpload(_) => K::BadUpload,
            Error::UploadNotKept => K::UploadNotKept,
            Error::Denied(_) => K::PolicyDenied,
            Error::Limited(_) => K::RateLimited,
            Error::PolicyFailed(_) => K::PolicyError,
            Error::FormatMismatch { .. } => K::FormatMismatch,
        }
    }

    /// Stable machine-readable code for the JSON error body, logs and metrics.
    pub fn code(&self) -> &'static str {
        self.kind().code()
    }

    /// The text a client may see: no internal detail.
    pub fn public_message(&self) -> Cow<'static, str> {
        match self {
            // The policy's reason is written by the operator for clients.
            Error::Denied(r) => Cow::Owned(r.reason.clone()),
            _ => Cow::Borrowed(self.kind().message()),
        }
    }

    /// Seconds for `Retry-After` on overload answers.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            // Whole seconds, rounded up: retrying at the stated time must succeed.
            Error::Limited(l) => Some(l.retry_after.as_secs_f64().ceil().max(1.0) as u64),
            Error::Denied(r) => r.retry_after,
            _ => matches!(self.status(), 503).then_some(1),
        }
    }

    /// Ours or the origin's (5xx) is a warning in the log; the client's fault is routine.
    pub fn log_level(&self) -> tracing::Level {
        if self.status() >= 500 {
            tracing::Level::WARN
        } else {
            tracing::Level::INFO
        }
    }

    /// Counts the failure in `pixgate_errors_total{code}`.
    pub fn count(&self, m: &Metrics) {
        m.error(self.code());
    }

    /// The JSON error response: the stable code and the public message — never internal
    /// detail, unless `development` (imgproxy's `DEVELOPMENT_ERRORS_MODE`) asks for the
    /// specific reason instead (`unknown preset `nope``), which may name paths and addresses.
    pub fn response(&self, development: bool) -> Response<Body> {
        let message = if development {
            Cow::Owned(self.to_string())
        } else {
            self.public_message()
        };
        let body =
            serde_json::json!({ "error": { "code": self.code(), "message": message } }).to_string();
        let mut r = Response::new(Body::new(bytes::Bytes::from(body)));
        *r.status_mut() =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(s) = self.retry_after() {
            h.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if let Error::Limited(l) = self {
            // draft-ietf-httpapi-ratelimit-headers; only on 429s, because image responses
            // are cached by CDNs and a per-client counter in them would be served to others.
            h.insert("ratelimit-limit", HeaderValue::from(l.limit));
            h.insert("ratelimit-remaining", HeaderValue::from(0));
            h.insert(
                "ratelimit-reset",
                HeaderValue::from(self.retry_after().unwrap_or(1)),
            );
        }
        r
    }

    /// The policy's verdict as the request's fate.
    pub fn from_verdict(v: Verdict) -> Result<(), Error> {
        match v {
            Verdict::Allow => Ok(()),
            Verdict::Deny(r) => Err(Error::Denied(r)),
            Verdict::Limited(l) => Err(Error::Limited(l)),
            Verdict::Failed(e) => Err(Error::PolicyFailed(e)),
        }
    }
}

impl crate::cache::FillError for Error {
    fn fill_lost() -> Self {
        Error::Gate(GateError::Panicked("cache fill task ended".into()))
    }
}

/// Every error code's series in `pixgate_errors_total`, at 0.
pub fn preregister(m: &Metrics) {
    for k in Kind::ALL {
        m.error_series(k.code());
    }
}

/// The `outcome` label of an origin fetch that failed.
pub fn fetch_outcome(e: &OriginError) -> FetchOutcome {
    match e {
        OriginError::ClientError(_) | OriginError::NotFound => FetchOutcome::ClientError,
        OriginError::ServerError(_) => FetchOutcome::ServerError,
        OriginError::Timeout(_) => FetchOutcome::Timeout,
        OriginError::BlockedAddress(_) | OriginError::NotAllowed => FetchOutcome::Blocked,
        OriginError::TooLarge(_) => FetchOutcome::TooLarge,
        OriginError::Unreachable(_)
        | OriginError::BadResponse(_)
        | OriginError::TooManyRedirects(_) => FetchOutcome::Error,
    }
}

/// Declares [`Kind`] with each variant's code and public message side by side, so a new
/// failure is one line and a code cannot lose its message.
macro_rules! kinds {
    ($($variant:ident => $code:literal, $message:literal;)*) => {
        /// A failure as clients see it: one variant per public `code`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Kind {
            $($variant,)*
        }

        impl Kind {
            /// Every kind, for documentation and tests.
            pub const ALL: &[Kind] = &[$(Kind::$variant,)*];

            /// The stable kebab-case code.
            pub fn code(self) -> &'static str {
                match self {
                    $(Kind::$variant => $code,)*
                }
            }

            /// The public message.
            pub fn message(self) -> &'static str {
                match self {
                    $(Kind::$variant => $message,)*
                }
            }
        }
    };
}

kinds! {
    ExpiredUrl => "expired-url", "The URL has expired";
    SecurityOptionForbidden => "security-option-forbidden", "Security options are not allowed";
    UnknownPreset => "unknown-preset", "Invalid URL";
    InvalidUrl => "invalid-url", "Invalid URL";
    UnsupportedOption => "unsupported-option", "Invalid URL: option not supported";
    InvalidSignature => "invalid-signature", "Forbidden";
    SourceNotAllowed => "source-not-allowed", "Invalid source URL";
    SourceAddressBlocked => "source-address-blocked", "Invalid source URL";
    SourceUnreachable => "source-unreachable", "Source image is unreachable";
    TooManyRedirects => "too-many-redirects", "Source image is unreachable";
    SourceNotFound => "source-not-found", "Source image not found";
    OriginClientError => "origin-client-error", "Source image is unreachable";
    OriginServerError => "origin-server-error", "Source image is unreachable";
    OriginBadResponse => "origin-bad-response", "Source image is unreachable";
    OriginTimeout => "origin-timeout", "Source image download timed out";
    EmptySource => "empty-source", "The source image is empty";
    NotAnImage => "not-an-image", "The source is not an image";
    CorruptImage => "corrupt-image", "The source image is corrupt";
    SourceResolutionTooLarge => "source-resolution-too-large", "The source image resolution is too large";
    SourceFileTooLarge => "source-file-too-large", "The source image file is too large";
    UnsupportedSourceFormat => "unsupported-source-format", "The source image format is not supported";
    UnsupportedOutputFormat => "unsupported-output-format", "The requested output format is not supported";
    ResultTooLarge => "result-too-large", "The requested result is too large";
    TooManyFrames => "too-many-frames", "The animation has too many frames";
    MaxBytesUnreachable => "max-bytes-unreachable", "No quality brings the result under max_bytes";
    QueueFull => "queue-full", "Too many requests are being processed; retry shortly";
    RequestTimeout => "request-timeout", "Timeout";
    NotFound => "not-found", "Not found";
    BodyTooLarge => "body-too-large", "The uploaded image is too large";
    UploadNotKept => "upload-not-kept", "The result is too large to keep; ask for the image itself";
    BadUpload => "bad-upload", "The upload is malformed: send the image as the body or as the `file` part of a form";
    PolicyDenied => "policy-denied", "Forbidden by policy";
    RateLimited => "rate-limited", "Rate limit exceeded";
    PolicyError => "policy-error", "The request could not be checked; retry shortly";
    FormatMismatch => "format-mismatch", "The options and the output file name ask for different formats";
    InternalError => "internal-error", "Internal error";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Format;
    use crate::request::signature::SignatureError;

    #[test]
    fn every_kind_has_its_own_code_and_a_message() {
        let mut codes = std::collections::HashSet::new();
        for k in Kind::ALL {
            assert!(codes.insert(k.code()), "{} is used twice", k.code());
            assert!(!k.message().is_empty(), "{}", k.code());
            if *k != Kind::InternalError {
                assert_ne!(k.message(), "Internal error", "{}", k.code());
            }
        }
    }

    #[test]
    fn statuses_follow_the_api_table() {
        let cases: Vec<(Error, u16, &str)> = vec![
            (OptionsError::Expired.into(), 404, "expired-url"),
            (
                OptionsError::SecurityOption("msr".into()).into(),
                403,
                "security-option-forbidden",
            ),
            (
                UrlError::Signature(SignatureError::Mismatch).into(),
                403,
                "invalid-signature",
            ),
            (UrlError::Path("x").into(), 404, "invalid-url"),
            (OriginError::NotAllowed.into(), 404, "source-not-allowed"),
            (
                OriginError::BlockedAddress("127.0.0.1 (loopback)".into()).into(),
                404,
                "source-address-blocked",
            ),
            (
                OriginError::ClientError(404).into(),
                404,
                "source-not-found",
            ),
            (
                OriginError::ClientError(410).into(),
                410,
                "origin-client-error",
            ),
            (
                OriginError::ServerError(500).into(),
                502,
                "origin-server-error",
            ),
            (
                OriginError::BadResponse("reset".into()).into(),
                502,
                "origin-bad-response",
            ),
            (
                OriginError::Timeout(std::time::Duration::from_secs(5)).into(),
                504,
                "origin-timeout",
            ),
            (
                OriginError::TooLarge(10).into(),
                422,
                "source-file-too-large",
            ),
            (
                OriginError::TooManyRedirects(10).into(),
                404,
                "too-many-redirects",
            ),
            (
                PixelError::Probe(ProbeError::NotAnImage).into(),
                422,
                "not-an-image",
            ),
            (
                PixelError::UnsupportedInput(Format::Avif).into(),
                422,
                "unsupported-source-format",
            ),
            (
                PixelError::UnsupportedOption("trim").into(),
                404,
                "unsupported-option",
            ),
            (GateError::QueueFull.into(), 503, "queue-full"),
            (
                GateError::Panicked("x".into()).into(),
                500,
                "internal-error",
            ),
            (Error::Timeout, 503, "request-timeout"),
            (Error::BodyTooLarge(10), 413, "body-too-large"),
            (Error::BadUpload("x".into()), 400, "bad-upload"),
            (
                PixelError::TooManyFrames {
                    frames: 9,
                    limit: 1,
                }
                .into(),
                422,
                "too-many-frames",
            ),
            (
                PixelError::MaxBytesUnreachable {
                    smallest: 9,
                    limit: 1,
                }
                .into(),
                422,
                "max-bytes-unreachable",
            ),
        ];
        for (e, status, code) in cases {
            assert_eq!((e.status(), e.code()), (status, code), "{e:?}");
            // A client's own mistake is explained, never "Internal error".
            let message = e.public_message();
            assert!(
                !message.is_empty() && (status >= 500 || message != "Internal error"),
                "{code}: {message}"
            );
        }
        assert_eq!(Error::from(GateError::QueueFull).retry_after(), Some(1));
        assert_eq!(Error::from(OriginError::NotAllowed).retry_after(), None);
        let ops = Error::from(PixelError::Ops(crate::pixels::OpsError::Resize("x".into())));
        assert_eq!(
            (ops.status(), ops.public_message().as_ref()),
            (500, "Internal error")
        );
        let denied = Error::Denied(Refusal {
            status: 402,
            reason: "Upgrade your plan".into(),
            retry_after: None,
        });
        assert_eq!(
            (
                denied.status(),
                denied.code(),
                denied.public_message().as_ref()
            ),
            (402, "policy-denied", "Upgrade your plan")
        );
        let limited = Error::Limited(crate::policy::Limited {
            retry_after: std::time::Duration::from_millis(1200),
            limit: 5,
            table_full: false,
        });
        assert_eq!(
            (limited.status(), limited.code(), limited.retry_after()),
            (429, "rate-limited", Some(2))
        );
    }
}
