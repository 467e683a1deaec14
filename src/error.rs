//! The crate's one error type and the one place that knows what each failure means to a
//! client: HTTP status, stable kebab-case `code`, public message, `Retry-After`. Internal
//! detail (decoder messages, addresses, paths) stays in `Display` for logs and never reaches a
//! response body.

use std::borrow::Cow;

use crate::cpu::GateError;
use crate::origin::OriginError;
use crate::pixels::{DecodeError, EncodeError, PixelError, ProbeError};
use crate::plan::PlanError;
use crate::policy::{Limited, PolicyError};
use crate::request::options::OptionsError;
use crate::request::url::UrlError;

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
    #[error("refused by the policy ({status}): {reason}")]
    Denied {
        status: u16,
        reason: String,
        retry_after: Option<u64>,
    },
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
            Error::Denied { status, .. } => *status,
            Error::Limited(_) => 429,
            Error::PolicyFailed(_) => 503,
            Error::FormatMismatch { .. } => 400,
        }
    }

    /// Stable machine-readable code for the JSON error body, logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Options(o) | Error::Url(UrlError::Options(o)) => match o {
                OptionsError::Expired => "expired-url",
                OptionsError::SecurityOption(_) => "security-option-forbidden",
                OptionsError::UnknownPreset(_) => "unknown-preset",
                _ => "invalid-url",
            },
            Error::Url(UrlError::Signature(_)) => "invalid-signature",
            Error::Url(_) => "invalid-url",
            Error::Origin(o) => match o {
                OriginError::NotAllowed => "source-not-allowed",
                OriginError::BlockedAddress(_) => "source-address-blocked",
                OriginError::Unreachable(_) => "source-unreachable",
                OriginError::ClientError(404) | OriginError::NotFound => "source-not-found",
                OriginError::ClientError(_) => "origin-client-error",
                OriginError::ServerError(_) => "origin-server-error",
                OriginError::BadResponse(_) => "origin-bad-response",
                OriginError::Timeout(_) => "origin-timeout",
                OriginError::TooLarge(_) => "source-file-too-large",
                OriginError::TooManyRedirects(_) => "too-many-redirects",
            },
            Error::Pixels(e) => match e {
                PixelError::Probe(ProbeError::Empty) => "empty-source",
                PixelError::Probe(ProbeError::NotAnImage) => "not-an-image",
                PixelError::Probe(ProbeError::Corrupt(..)) => "corrupt-image",
                PixelError::Probe(ProbeError::Unsupported(..)) => "unsupported-source-format",
                PixelError::SourceTooManyPixels { .. } => "source-resolution-too-large",
                PixelError::SourceTooManyBytes { .. } => "source-file-too-large",
                PixelError::TooManyFrames { .. } => "too-many-frames",
                PixelError::MaxBytesUnreachable { .. } => "max-bytes-unreachable",
                PixelError::UnsupportedOption(_) => "unsupported-option",
                PixelError::UnsupportedInput(_) => "unsupported-source-format",
                PixelError::UnsupportedOutput(_) => "unsupported-output-format",
                PixelError::Plan(PlanError::EmptySource(..)) => "corrupt-image",
                PixelError::Plan(PlanError::ResultTooLarge { .. }) => "result-too-large",
                PixelError::Decode(
                    DecodeError::Unsupported(_) | DecodeError::UnsupportedVariant(..),
                ) => "unsupported-source-format",
                PixelError::Decode(_) => "corrupt-image",
                PixelError::Encode(EncodeError::Unsupported(_)) => "unsupported-output-format",
                PixelError::Ops(_) | PixelError::Encode(_) => "internal-error",
                PixelError::Deadline => "request-timeout",
            },
            Error::Gate(GateError::QueueFull) => "queue-full",
            Error::Gate(GateError::Deadline) | Error::Timeout => "request-timeout",
            Error::Gate(GateError::Panicked(_)) => "internal-error",
            Error::NotFound => "not-found",
            Error::BodyTooLarge(_) => "body-too-large",
            Error::BadUpload(_) => "bad-upload",
            Error::UploadNotKept => "upload-not-kept",
            Error::Denied { .. } => "policy-denied",
            Error::Limited(_) => "rate-limited",
            Error::PolicyFailed(_) => "policy-error",
            Error::FormatMismatch { .. } => "format-mismatch",
        }
    }

    /// The text a client may see: no internal detail.
    pub fn public_message(&self) -> Cow<'static, str> {
        // The policy's reason is written by the operator for clients (e.g. "upgrade your plan").
        if let Error::Denied { reason, .. } = self {
            return Cow::Owned(reason.clone());
        }
        Cow::Borrowed(match self.code() {
            "expired-url" => "The URL has expired",
            "security-option-forbidden" => "Security options are not allowed",
            "invalid-url" | "unknown-preset" => "Invalid URL",
            "unsupported-option" => "Invalid URL: option not supported",
            "invalid-signature" => "Forbidden",
            "source-not-allowed" | "source-address-blocked" => "Invalid source URL",
            "source-unreachable" | "too-many-redirects" => "Source image is unreachable",
            "source-not-found" => "Source image not found",
            "origin-client-error" | "origin-server-error" | "origin-bad-response" => {
                "Source image is unreachable"
            }
            "origin-timeout" => "Source image download timed out",
            "empty-source" => "The source image is empty",
            "not-an-image" => "The source is not an image",
            "corrupt-image" => "The source image is corrupt",
            "source-resolution-too-large" => "The source image resolution is too large",
            "source-file-too-large" => "The source image file is too large",
            "unsupported-source-format" => "The source image format is not supported",
            "unsupported-output-format" => "The requested output format is not supported",
            "result-too-large" => "The requested result is too large",
            "too-many-frames" => "The animation has too many frames",
            "max-bytes-unreachable" => "No quality brings the result under max_bytes",
            "queue-full" => "Too many requests are being processed; retry shortly",
            "request-timeout" => "Timeout",
            "not-found" => "Not found",
            "body-too-large" => "The uploaded image is too large",
            "upload-not-kept" => "The result is too large to keep; ask for the image itself",
            "bad-upload" => {
                "The upload is malformed: send the image as the body or as the `file` part of a form"
            }
            "rate-limited" => "Rate limit exceeded",
            "policy-error" => "The request could not be checked; retry shortly",
            "format-mismatch" => "The options and the output file name ask for different formats",
            _ => "Internal error",
        })
    }

    /// Seconds for `Retry-After` on overload answers.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            // Whole seconds, rounded up: retrying at the stated time must succeed.
            Error::Limited(l) => Some(l.retry_after.as_secs_f64().ceil().max(1.0) as u64),
            Error::Denied { retry_after, .. } => *retry_after,
            _ => matches!(self.status(), 503).then_some(1),
        }
    }

    /// Whether this is our fault (logged as an error) rather than the client's or origin's.
    pub fn is_internal(&self) -> bool {
        self.status() == 500
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Format;
    use crate::request::signature::SignatureError;

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
        let denied = Error::Denied {
            status: 402,
            reason: "Upgrade your plan".into(),
            retry_after: None,
        };
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
