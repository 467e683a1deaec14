//! The typed result of the option grammar: [`Options`] with imgproxy's built-in defaults, and
//! the value types of its options (resizing type, gravity, crop, colours, watermark, ...).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::format::Format;

use super::fmt_f;

/// How the result size is derived from the requested width and height.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResizingType {
    #[default]
    Fit,
    Fill,
    FillDown,
    Force,
    Auto,
}

impl ResizingType {
    pub(super) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "fit" => Self::Fit,
            "fill" => Self::Fill,
            "fill-down" => Self::FillDown,
            "force" => Self::Force,
            "auto" => Self::Auto,
            _ => return None,
        })
    }
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Fit => "fit",
            Self::Fill => "fill",
            Self::FillDown => "fill-down",
            Self::Force => "force",
            Self::Auto => "auto",
        }
    }
}

/// Anchor of a crop or placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GravityType {
    #[default]
    Center,
    North,
    South,
    East,
    West,
    NorthEast,
    NorthWest,
    SouthEast,
    SouthWest,
    /// Content-aware ("attention") crop.
    Smart,
    /// Focal point given as fractions of the image size.
    FocusPoint,
    /// Tiling; watermark positions only.
    Replicate,
}

impl GravityType {
    pub(super) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ce" => Self::Center,
            "no" => Self::North,
            "so" => Self::South,
            "ea" => Self::East,
            "we" => Self::West,
            "noea" => Self::NorthEast,
            "nowe" => Self::NorthWest,
            "soea" => Self::SouthEast,
            "sowe" => Self::SouthWest,
            "sm" => Self::Smart,
            "fp" => Self::FocusPoint,
            "re" => Self::Replicate,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Center => "ce",
            Self::North => "no",
            Self::South => "so",
            Self::East => "ea",
            Self::West => "we",
            Self::NorthEast => "noea",
            Self::NorthWest => "nowe",
            Self::SouthEast => "soea",
            Self::SouthWest => "sowe",
            Self::Smart => "sm",
            Self::FocusPoint => "fp",
            Self::Replicate => "re",
        }
    }
}

/// A gravity with its offsets. Offsets ≥ 1 in magnitude are pixels, smaller ones fractions of
/// the image; for `FocusPoint` they are the point itself, in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Gravity {
    pub kind: GravityType,
    pub x: f64,
    pub y: f64,
}

impl Gravity {
    pub(super) fn canonical(&self, out: &mut String) {
        out.push_str(self.kind.name());
        match self.kind {
            GravityType::Smart => {}
            _ if self.x == 0.0 && self.y == 0.0 && self.kind != GravityType::FocusPoint => {}
            _ => {
                let _ = write!(out, ":{}:{}", fmt_f(self.x), fmt_f(self.y));
            }
        }
    }
}

/// Which gravity types an option accepts.
#[derive(Clone, Copy)]
pub(super) enum GravityUse {
    Main,
    Extend,
}

/// `extend` and `extend_aspect_ratio`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Extend {
    pub enabled: bool,
    pub gravity: Gravity,
}

/// `crop`: width and height (≥ 1 pixels, < 1 fractions, 0 full size) and its own gravity.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Crop {
    pub width: f64,
    pub height: f64,
    /// `None` means: use the main gravity.
    pub gravity: Option<Gravity>,
}

/// `trim`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trim {
    pub threshold: f64,
    pub color: Option<Rgb>,
    pub equal_hor: bool,
    pub equal_ver: bool,
}

/// `padding`, CSS order, in CSS pixels (multiplied by dpr when applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Padding {
    pub top: u32,
    pub right: u32,
    pub bottom: u32,
    pub left: u32,
}

impl Padding {
    pub fn is_zero(&self) -> bool {
        self.top == 0 && self.right == 0 && self.bottom == 0 && self.left == 0
    }
}

/// An sRGB colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl Rgb {
    pub const WHITE: Rgb = Rgb(255, 255, 255);

    pub(super) fn parse_hex(s: &str) -> Option<Rgb> {
        if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let digit = |i: usize| u8::from_str_radix(&s[i..i + 1], 16).ok();
        match s.len() {
            3 => Some(Rgb(digit(0)? * 17, digit(1)? * 17, digit(2)? * 17)),
            6 => {
                let byte = |i: usize| u8::from_str_radix(&s[i..i + 2], 16).ok();
                Some(Rgb(byte(0)?, byte(2)?, byte(4)?))
            }
            _ => None,
        }
    }
    pub(super) fn hex(&self) -> String {
        format!("{:02x}{:02x}{:02x}", self.0, self.1, self.2)
    }
}

/// `watermark`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Watermark {
    pub opacity: f64,
    pub position: GravityType,
    pub x: f64,
    pub y: f64,
    pub scale: f64,
}

/// `monochrome`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Monochrome {
    pub intensity: f64,
    pub color: Rgb,
}

/// How `autoquality` picks a quality.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoQualityMethod {
    /// Off (a URL's `aq:none` turns a server default off).
    None,
    /// The highest quality under a byte budget.
    Size,
    /// The lowest quality within a DSSIM target.
    Dssim,
    /// imgproxy Pro's model: parsed, refused as not supported.
    Ml,
}

impl AutoQualityMethod {
    pub fn parse(s: &str) -> Option<AutoQualityMethod> {
        Some(match s {
            "none" => AutoQualityMethod::None,
            "size" => AutoQualityMethod::Size,
            "dssim" => AutoQualityMethod::Dssim,
            "ml" => AutoQualityMethod::Ml,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            AutoQualityMethod::None => "none",
            AutoQualityMethod::Size => "size",
            AutoQualityMethod::Dssim => "dssim",
            AutoQualityMethod::Ml => "ml",
        }
    }
}

/// `autoquality`.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoQuality {
    pub method: AutoQualityMethod,
    pub target: Option<f64>,
    pub min_quality: Option<u8>,
    pub max_quality: Option<u8>,
    pub allowed_error: Option<f64>,
}

/// Per-request overrides of the server's security limits (`msr`, `msfs`, `maf`, `mafr`, `mrd`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SecurityOverrides {
    pub max_src_resolution: Option<f64>,
    pub max_src_file_size: Option<u64>,
    pub max_animation_frames: Option<u32>,
    pub max_animation_frame_resolution: Option<f64>,
    pub max_result_dimension: Option<u32>,
}

impl SecurityOverrides {
    /// The largest source allowed: the server's limit, lowered (never raised) by `msfs`;
    /// `None` and `msfs:0` mean no limit.
    pub fn source_size_limit(&self, server: Option<u64>) -> Option<u64> {
        let url = self.max_src_file_size.filter(|v| *v > 0);
        match (server, url) {
            (Some(s), Some(u)) => Some(s.min(u)),
            (s, u) => s.or(u),
        }
    }
}

/// Every processing option of a request, after defaults, presets and left-to-right overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub resizing_type: ResizingType,
    pub width: u32,
    pub height: u32,
    pub min_width: u32,
    pub min_height: u32,
    pub zoom_x: f64,
    pub zoom_y: f64,
    pub dpr: f64,
    pub enlarge: bool,
    pub extend: Extend,
    pub extend_aspect_ratio: Extend,
    pub gravity: Gravity,
    pub crop: Option<Crop>,
    pub trim: Option<Trim>,
    pub padding: Padding,
    pub auto_rotate: bool,
    /// Normalised to 0, 90, 180 or 270.
    pub rotate: u16,
    pub flip_horizontal: bool,
    pub flip_vertical: bool,
    /// `Some` = flatten onto this colour (`bg`).
    pub background: Option<Rgb>,
    pub blur: f64,
    pub sharpen: f64,
    pub pixelate: u32,
    pub watermark: Option<Watermark>,
    pub strip_metadata: bool,
    pub keep_copyright: bool,
    pub strip_color_profile: bool,
    pub enforce_thumbnail: bool,
    /// 0 = use `format_quality`, then the server default.
    pub quality: u8,
    pub format_quality: BTreeMap<Format, u8>,
    pub max_bytes: u64,
    pub format: Option<Format>,
    /// Set by `Accept` negotiation, never by the URL (so not part of the canonical form,
    /// the negotiation decision is in the cache key): `Some` when `format` was negotiated,
    /// holding the format for an animated result (`None` inside: the source's default).
    pub animated_format: Option<Option<Format>>,
    pub skip_processing: Vec<Format>,
    pub raw: bool,
    pub cachebuster: String,
    pub expires: Option<i64>,
    pub filename: Option<String>,
    pub return_attachment: bool,
    pub security: SecurityOverrides,
    pub crop_aspect_ratio: Option<(f64, bool)>,
    pub brightness: i32,
    pub contrast: f64,
    pub saturation: f64,
    pub monochrome: Option<Monochrome>,
    pub background_alpha: f64,
    pub autoquality: Option<AutoQuality>,
}

impl Default for Options {
    /// imgproxy's built-in defaults (before any server configuration).
    fn default() -> Self {
        Options {
            resizing_type: ResizingType::Fit,
            width: 0,
            height: 0,
            min_width: 0,
            min_height: 0,
            zoom_x: 1.0,
            zoom_y: 1.0,
            dpr: 1.0,
            enlarge: false,
            extend: Extend::default(),
            extend_aspect_ratio: Extend::default(),
            gravity: Gravity::default(),
            crop: None,
            trim: None,
            padding: Padding::default(),
            auto_rotate: true,
            rotate: 0,
            flip_horizontal: false,
            flip_vertical: false,
            background: None,
            blur: 0.0,
            sharpen: 0.0,
            pixelate: 0,
            watermark: None,
            strip_metadata: true,
            keep_copyright: true,
            strip_color_profile: true,
            enforce_thumbnail: false,
            quality: 0,
            format_quality: BTreeMap::new(),
            max_bytes: 0,
            format: None,
            animated_format: None,
            skip_processing: Vec::new(),
            raw: false,
            cachebuster: String::new(),
            expires: None,
            filename: None,
            return_attachment: false,
            security: SecurityOverrides::default(),
            crop_aspect_ratio: None,
            brightness: 0,
            contrast: 1.0,
            saturation: 1.0,
            monochrome: None,
            background_alpha: 1.0,
            autoquality: None,
        }
    }
}
