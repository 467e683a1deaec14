//! The engine's configuration: limits and defaults that come from the server (or the CLI),
//! the autoquality defaults and the per-format default quality.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::types::{EncoderConfig, JpegMode};
use crate::format::Format;
use crate::request::options::{AutoQualityMethod, Options};

/// Encodes one `max_bytes` result may cost, the first included.
pub const MAX_BYTES_ENCODES: u32 = 8;

/// Default frame cap of animated results.
pub const DEFAULT_MAX_ANIMATION_FRAMES: u32 = 500;

/// Engine limits and defaults that come from server configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Largest source, in megapixels (width × height × frames processed), checked from the
    /// header before any decode.
    pub max_src_resolution: f64,
    /// Largest source in bytes; `None`: no limit here (the fetcher enforces its own).
    pub max_src_file_size: Option<u64>,
    /// Largest side of a result; `None`: only the output format's maximum.
    pub max_result_dimension: Option<u32>,
    /// Largest result, in megapixels.
    pub max_result_resolution: f64,
    /// Default quality when neither `q` nor `fq` says.
    pub quality: u8,
    /// Per-format default qualities.
    pub format_quality: BTreeMap<Format, u8>,
    /// JPEG decode keeps at least this factor of the shrink for the Lanczos pass.
    pub jpeg_shrink_margin: f64,
    /// Animations with more frames are refused (422) when the result would be animated;
    /// 1 turns animation off (first frame only, as imgproxy's default).
    pub max_animation_frames: u32,
    /// Largest animation frame (canvas), in megapixels; `None`: `max_src_resolution`. Frames
    /// are streamed, so this is what one frame costs in memory; time is bounded by the frame
    /// count and the request deadline, checked between frames.
    pub max_animation_frame_resolution: Option<f64>,
    pub encoder: EncoderConfig,
    /// The image `wm` draws (decoded once at start); `None`: `wm` is ignored, as imgproxy
    /// does without a configured watermark.
    pub watermark: Option<Arc<image::RgbaImage>>,
    /// Multiplies every `wm` opacity.
    pub watermark_opacity: f64,
    /// `autoquality` when the URL does not say.
    pub autoquality: AutoQualityDefaults,
}

/// Server defaults of `autoquality` (imgproxy's `IMGPROXY_AUTOQUALITY_*`).
#[derive(Debug, Clone, PartialEq)]
pub struct AutoQualityDefaults {
    /// `none`, `dssim` or `size`.
    pub method: AutoQualityMethod,
    /// DSSIM the result may not exceed (`dssim`).
    pub target: f64,
    pub min_quality: u8,
    pub max_quality: u8,
    /// The search stops early once the DSSIM is within this of the target (below it).
    pub allowed_error: f64,
}

impl Default for AutoQualityDefaults {
    fn default() -> Self {
        AutoQualityDefaults {
            method: AutoQualityMethod::None,
            target: DEFAULT_AUTOQUALITY_TARGET,
            min_quality: 40,
            max_quality: 90,
            allowed_error: 0.001,
        }
    }
}

/// Default DSSIM target of `aq:dssim`: imgproxy's default; on pixgate's metric it keeps
/// photos free of visible artefacts (see README for the figures).
pub const DEFAULT_AUTOQUALITY_TARGET: f64 = 0.02;

/// Encodes (each followed by a decode and a comparison) one `autoquality` search may cost:
/// enough for a bisection to converge on any range of qualities (1..=100 needs 7), so the
/// answer is exact, not the best of an unfinished search.
pub const AUTOQUALITY_ENCODES: u32 = 7;

/// `autoquality`, resolved against the server's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AutoQuality {
    /// The lowest quality whose DSSIM against the unencoded result is ≤ `target`.
    Dssim {
        target: f64,
        allowed_error: f64,
        min: u8,
        max: u8,
    },
    /// The highest quality whose result is ≤ `bytes` (else `min`).
    Size { bytes: u64, min: u8, max: u8 },
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_src_resolution: 50.0,
            max_src_file_size: None,
            max_result_dimension: None,
            max_result_resolution: 50.0,
            quality: 80,
            format_quality: BTreeMap::from([
                (Format::Webp, 79),
                (Format::Avif, 63),
                (Format::Jxl, 77),
            ]),
            jpeg_shrink_margin: 1.5,
            max_animation_frames: DEFAULT_MAX_ANIMATION_FRAMES,
            max_animation_frame_resolution: None,
            encoder: EncoderConfig::default(),
            watermark: None,
            watermark_opacity: 1.0,
            autoquality: AutoQualityDefaults::default(),
        }
    }
}

impl EngineConfig {
    /// libvips-like fast mode: decode closer to the target size and encode like libjpeg-turbo.
    pub fn fast() -> Self {
        EngineConfig {
            jpeg_shrink_margin: 1.0,
            encoder: EncoderConfig {
                jpeg_mode: JpegMode::Fast,
                ..EncoderConfig::default()
            },
            ..EngineConfig::default()
        }
    }
}

/// The quality for `format`: `q`, then `fq`, then the server's per-format default, then the
/// server's default.
pub fn quality_for(o: &Options, format: Format, cfg: &EngineConfig) -> u8 {
    if o.quality > 0 {
        return o.quality;
    }
    o.format_quality
        .get(&format)
        .or_else(|| cfg.format_quality.get(&format))
        .copied()
        .unwrap_or(cfg.quality)
}
