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
    /// Picked from `Accept`: `still` for still results and `animated` for animated ones
    /// (AVIF is still-only here; `None` = the source's default).
    Negotiated {
        still: Format,
        animated: Option<Format>,
    },
    /// The source's own format (or PNG/JPEG when it cannot be written).
    SourceDefault,
}

impl FormatChoice {
    /// The format to ask the engine for (`None` = decide from the source).
    pub fn format(self) -> Option<Format> {
        match self {
            FormatChoice::Explicit(f) | FormatChoice::Negotiated { still: f, .. } => Some(f),
            FormatChoice::SourceDefault => None,
        }
    }

    /// For negotiated choices, the format of an animated result (`Some(None)`: the
    /// source's default); `None` when the format was not negotiated.
    pub fn animated(self) -> Option<Option<Format>> {
        match self {
            FormatChoice::Negotiated { animated, .. } => Some(animated),
            _ => None,
        }
    }

    /// A short stable token for cache keys.
    pub fn key(self) -> String {
        match self {
            FormatChoice::Explicit(f) => format!("x:{f}"),
            FormatChoice::Negotiated { still, animated } if animated == Some(still) => {
                format!("n:{still}")
            }
            FormatChoice::Negotiated { still, animated } => match animated {
                Some(a) => format!("n:{still}/{a}"),
                None => format!("n:{still}/s"),
            },
            FormatChoice::SourceDefault => "s".into(),
        }
    }
}

/// The best modern format the client accepts and this build writes (imgproxy: a substring
/// test on `Accept`; AVIF first, then WebP), with the one for animated results.
fn preferred(accept: Option<&str>) -> Option<FormatChoice> {
    let accept = accept?;
    let ok = |f: Format| encode::can_write(f) && accept.contains(f.mime());
    let webp = ok(Format::Webp).then_some(Format::Webp);
    if ok(Format::Avif) {
        Some(FormatChoice::Negotiated {
            still: Format::Avif,
            animated: webp,
        })
    } else {
        webp.map(|w| FormatChoice::Negotiated {
            still: w,
            animated: Some(w),
        })
    }
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
        Some(f) if enforce_format => (best.unwrap_or(FormatChoice::Explicit(f)), true),
        Some(f) => (FormatChoice::Explicit(f), false),
        None if auto_format || enforce_format => {
            (best.unwrap_or(FormatChoice::SourceDefault), true)
        }
        None => (FormatChoice::SourceDefault, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        let both = Some("image/avif,image/webp,image/apng,*/*;q=0.8");
        let avif = FormatChoice::Negotiated {
            still: Format::Avif,
            animated: Some(Format::Webp),
        };
        assert_eq!(negotiate(None, both, true, false), (avif, true));
        assert_eq!(avif.key(), "n:avif/webp");
        let webp = Some("image/webp,*/*");
        let webp_choice = FormatChoice::Negotiated {
            still: Format::Webp,
            animated: Some(Format::Webp),
        };
        assert_eq!(negotiate(None, webp, true, false), (webp_choice, true));
        assert_eq!(webp_choice.key(), "n:webp");
        assert_eq!(
            negotiate(None, Some("image/avif"), true, false).0.key(),
            "n:avif/s"
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
            (webp_choice, true)
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
