//! Output-format negotiation from `Accept`, reduced to a decision before it touches a cache
//! key: a client can vary its `Accept` header endlessly, but it can only ever select one of
//! three entries per URL (explicit, negotiated modern format, source default).

use crate::format::Format;
use crate::pixels::encode;

/// The output format as decided before the source is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatChoice {
    /// The URL named it (`f:`, extension).
    Explicit(Format),
    /// Picked from `Accept`.
    Negotiated(Format),
    /// The source's own format (or PNG/JPEG when it cannot be written).
    SourceDefault,
}

impl FormatChoice {
    /// The format to ask the engine for (`None` = decide from the source).
    pub fn format(self) -> Option<Format> {
        match self {
            FormatChoice::Explicit(f) | FormatChoice::Negotiated(f) => Some(f),
            FormatChoice::SourceDefault => None,
        }
    }

    /// A short stable token for cache keys.
    pub fn key(self) -> String {
        match self {
            FormatChoice::Explicit(f) => format!("x:{f}"),
            FormatChoice::Negotiated(f) => format!("n:{f}"),
            FormatChoice::SourceDefault => "s".into(),
        }
    }
}

/// The best modern format the client accepts and this build writes (imgproxy: a substring
/// test on `Accept`; AVIF first, then WebP).
fn preferred(accept: Option<&str>) -> Option<Format> {
    let accept = accept?;
    [Format::Avif, Format::Webp]
        .into_iter()
        .find(|f| encode::can_write(*f) && accept.contains(f.mime()))
}

/// Decides the format, and whether the answer depends on `Accept` (→ `Vary: Accept`).
pub fn negotiate(
    explicit: Option<Format>,
    accept: Option<&str>,
    auto_format: bool,
    enforce_format: bool,
) -> (FormatChoice, bool) {
    let best = preferred(accept);
    match explicit {
        Some(f) if enforce_format => match best {
            Some(b) => (FormatChoice::Negotiated(b), true),
            None => (FormatChoice::Explicit(f), true),
        },
        Some(f) => (FormatChoice::Explicit(f), false),
        None if auto_format || enforce_format => match best {
            Some(b) => (FormatChoice::Negotiated(b), true),
            None => (FormatChoice::SourceDefault, true),
        },
        None => (FormatChoice::SourceDefault, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        let webp = Some("image/avif,image/webp,image/apng,*/*;q=0.8");
        assert_eq!(
            negotiate(None, webp, true, false),
            (FormatChoice::Negotiated(Format::Webp), true)
        );
        assert_eq!(
            negotiate(None, Some("image/jpeg"), true, false),
            (FormatChoice::SourceDefault, true)
        );
        assert_eq!(
            negotiate(None, None, true, false),
            (FormatChoice::SourceDefault, true)
        );
        assert_eq!(
            negotiate(None, webp, false, false),
            (FormatChoice::SourceDefault, false)
        );
        assert_eq!(
            negotiate(Some(Format::Png), webp, true, false),
            (FormatChoice::Explicit(Format::Png), false)
        );
        assert_eq!(
            negotiate(Some(Format::Png), webp, true, true),
            (FormatChoice::Negotiated(Format::Webp), true)
        );
        assert_eq!(
            negotiate(Some(Format::Png), Some("*/*"), false, true),
            (FormatChoice::Explicit(Format::Png), true)
        );
    }

    #[test]
    fn junk_accept_headers_reduce_to_few_choices() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000u32 {
            let junk = format!(
                "image/{i:x}, text/x-{}, image/webp{}",
                i * 7,
                if i % 3 == 0 { "" } else { "x" }
            );
            seen.insert(negotiate(None, Some(&junk), true, false).0.key());
        }
        assert!(seen.len() <= 2, "{seen:?}");
    }
}
