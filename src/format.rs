//! Image formats as the URL API names them: parsing of format names, extensions, MIME types and
//! what each format can carry. Knows nothing about codecs; `pixels` decides what it can read/write.

use std::fmt;

/// Every format name imgproxy's URL grammar accepts (`f:`, `@ext`, `fq:`, `skp:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    Jpeg,
    Png,
    Webp,
    Avif,
    Gif,
    Ico,
    Svg,
    Heic,
    Bmp,
    Tiff,
    Jxl,
}

impl Format {
    /// All formats, in canonical order.
    pub const ALL: [Format; 11] = [
        Format::Jpeg,
        Format::Png,
        Format::Webp,
        Format::Avif,
        Format::Gif,
        Format::Ico,
        Format::Svg,
        Format::Heic,
        Format::Bmp,
        Format::Tiff,
        Format::Jxl,
    ];

    /// Parses a format name or extension as imgproxy does (`jpg` and `jpeg` both mean JPEG).
    pub fn from_name(name: &str) -> Option<Format> {
        Some(match name {
            "jpg" | "jpeg" => Format::Jpeg,
            "png" => Format::Png,
            "webp" => Format::Webp,
            "avif" => Format::Avif,
            "gif" => Format::Gif,
            "ico" => Format::Ico,
            "svg" => Format::Svg,
            "heic" => Format::Heic,
            "bmp" => Format::Bmp,
            "tiff" => Format::Tiff,
            "jxl" => Format::Jxl,
            _ => return None,
        })
    }

    /// The canonical short name, also the file extension used in `Content-Disposition`.
    pub fn ext(self) -> &'static str {
        match self {
            Format::Jpeg => "jpg",
            Format::Png => "png",
            Format::Webp => "webp",
            Format::Avif => "avif",
            Format::Gif => "gif",
            Format::Ico => "ico",
            Format::Svg => "svg",
            Format::Heic => "heic",
            Format::Bmp => "bmp",
            Format::Tiff => "tiff",
            Format::Jxl => "jxl",
        }
    }

    pub fn mime(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
            Format::Webp => "image/webp",
            Format::Avif => "image/avif",
            Format::Gif => "image/gif",
            Format::Ico => "image/x-icon",
            Format::Svg => "image/svg+xml",
            Format::Heic => "image/heif",
            Format::Bmp => "image/bmp",
            Format::Tiff => "image/tiff",
            Format::Jxl => "image/jxl",
        }
    }

    /// Whether an encoded image of this format can hold an alpha channel.
    pub fn supports_alpha(self) -> bool {
        !matches!(self, Format::Jpeg | Format::Bmp)
    }

    /// Whether the format has a quality knob (`q`, `fq`).
    pub fn has_quality(self) -> bool {
        matches!(
            self,
            Format::Jpeg | Format::Webp | Format::Avif | Format::Heic | Format::Jxl | Format::Tiff
        )
    }

    /// The largest side the format can store; results are scaled down to fit (imgproxy's
    /// `fixSize`).
    pub fn max_side(self) -> u32 {
        match self {
            Format::Webp => 16383,
            Format::Ico => 256,
            Format::Avif | Format::Heic => 65536,
            // libjpeg's JPEG_MAX_DIMENSION: the format's 16-bit fields would allow 65535.
            Format::Jpeg => 65500,
            Format::Gif | Format::Png | Format::Bmp | Format::Tiff => 65535,
            Format::Svg | Format::Jxl => 1 << 18,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.ext())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in Format::ALL {
            assert_eq!(Format::from_name(f.ext()), Some(f));
        }
        assert_eq!(Format::from_name("jpeg"), Some(Format::Jpeg));
        assert_eq!(Format::from_name("JPG"), None);
        assert_eq!(Format::from_name("best"), None);
    }
}
