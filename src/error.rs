//! The crate's one error type and the one place that knows what each failure means to a
//! client: HTTP status, stable kebab-case `code`, public message. Internal detail (decoder
//! messages, paths) stays in `Display` for logs and never reaches a response body.

use crate::pixels::{PixelError, ProbeError};
use crate::plan::PlanError;
use crate::request::options::OptionsError;

/// Any failure of a request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Options(#[from] OptionsError),
    #[error(transparent)]
    Pixels(#[from] PixelError),
}

impl Error {
    /// HTTP status (API.md §6).
    pub fn status(&self) -> u16 {
        match self {
            Error::Options(OptionsError::SecurityOption(_)) => 403,
            Error::Options(_) => 404,
            Error::Pixels(PixelError::UnsupportedOption(_)) => 404,
            Error::Pixels(PixelError::Ops(_)) => 500,
            Error::Pixels(PixelError::Encode(crate::pixels::EncodeError::Failed(..))) => 500,
            Error::Pixels(_) => 422,
        }
    }

    /// Stable machine-readable code for the JSON error body, logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Options(OptionsError::Expired) => "expired-url",
            Error::Options(OptionsError::SecurityOption(_)) => "security-option-forbidden",
            Error::Options(OptionsError::UnknownPreset(_)) => "unknown-preset",
            Error::Options(_) => "invalid-url",
            Error::Pixels(e) => match e {
                PixelError::Probe(ProbeError::Empty) => "empty-source",
                PixelError::Probe(ProbeError::NotAnImage) => "not-an-image",
                PixelError::Probe(ProbeError::Corrupt(..)) => "corrupt-image",
                PixelError::Probe(ProbeError::Unsupported(..)) => "unsupported-source-format",
                PixelError::SourceTooManyPixels { .. } => "source-resolution-too-large",
                PixelError::SourceTooManyBytes { .. } => "source-file-too-large",
                PixelError::UnsupportedOption(_) => "unsupported-option",
                PixelError::UnsupportedInput(_) => "unsupported-source-format",
                PixelError::UnsupportedOutput(_) => "unsupported-output-format",
                PixelError::Plan(PlanError::EmptySource(..)) => "corrupt-image",
                PixelError::Plan(PlanError::ResultTooLarge { .. }) => "result-too-large",
                PixelError::Decode(crate::pixels::DecodeError::Unsupported(_)) => {
                    "unsupported-source-format"
                }
                PixelError::Decode(_) => "corrupt-image",
                PixelError::Ops(_) => "internal-error",
                PixelError::Encode(crate::pixels::EncodeError::Unsupported(_)) => {
                    "unsupported-output-format"
                }
                PixelError::Encode(_) => "internal-error",
            },
        }
    }

    /// The text a client may see: no internal detail.
    pub fn public_message(&self) -> &'static str {
        match self.code() {
            "expired-url" => "The URL has expired",
            "security-option-forbidden" => "Security options are not allowed",
            "invalid-url" | "unknown-preset" => "Invalid URL",
            "unsupported-option" => "Invalid URL: option not supported",
            "empty-source" => "The source image is empty",
            "not-an-image" => "The source is not an image",
            "corrupt-image" => "The source image is corrupt",
            "source-resolution-too-large" => "The source image resolution is too large",
            "source-file-too-large" => "The source image file is too large",
            "unsupported-source-format" => "The source image format is not supported",
            "unsupported-output-format" => "The requested output format is not supported",
            "result-too-large" => "The requested result is too large",
            _ => "Internal error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Format;

    #[test]
    fn statuses_follow_the_api_table() {
        let e = |p: PixelError| Error::from(p);
        assert_eq!(Error::from(OptionsError::Expired).status(), 404);
        assert_eq!(
            Error::from(OptionsError::SecurityOption("msr".into())).status(),
            403
        );
        assert_eq!(e(PixelError::Probe(ProbeError::NotAnImage)).status(), 422);
        assert_eq!(e(PixelError::UnsupportedInput(Format::Avif)).status(), 422);
        assert_eq!(e(PixelError::UnsupportedOption("trim")).status(), 404);
        let ops = e(PixelError::Ops(crate::pixels::OpsError::Resize("x".into())));
        assert_eq!(
            (ops.status(), ops.public_message()),
            (500, "Internal error")
        );
    }
}
