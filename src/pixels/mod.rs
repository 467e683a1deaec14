//! The pixel engine: (source bytes, [`Options`]) → encoded image. `prepare` does every cheap
//! check (header probe, limits, option support, output format, geometry) without touching
//! pixels; `Job::run` does the CPU work (decode → ops → encode) and is what the server puts
//! behind its CPU gate.

pub mod anim;
pub mod avif;
pub mod blur;
pub mod color;
pub mod deadline;
pub mod decode;
pub mod encode;
pub mod engine;
mod job;
pub mod metadata;
pub mod ops;
pub mod probe;
pub mod quality;
pub mod smart;
pub mod svg;
pub mod types;

use crate::format::Format;
use crate::request::options::Options;
pub use deadline::Deadline;
pub use engine::{
    AUTOQUALITY_ENCODES, AutoQuality, AutoQualityDefaults, DEFAULT_AUTOQUALITY_TARGET,
    DEFAULT_MAX_ANIMATION_FRAMES, EngineConfig, MAX_BYTES_ENCODES, quality_for,
};
pub use job::{Job, MIN_AVIF_SIDE, can_read, default_format, prepare};
pub use types::{
    DEFAULT_AVIF_SPEED, DecodeError, Decoded, EncodeError, Encoded, EncoderConfig, JpegMode,
    Metadata, OpsError, PixelError, ProbeError, SourceInfo, Timings, WebpMode,
};

/// Changes whenever the same (source, options) would give different output bytes; part of
/// every ETag, so caches everywhere revalidate after an engine change.
pub const ENGINE_REVISION: &str = concat!(env!("CARGO_PKG_VERSION"), "/1");

/// Largest watermark accepted, in pixels: it is kept decoded for the life of the process.
pub const MAX_WATERMARK_PIXELS: u64 = 16_000_000;

/// Decodes a watermark image (any readable format; SVG drawn at its own size) to RGBA, with
/// the same checks as a source.
pub fn decode_watermark(src: &[u8]) -> Result<image::RgbaImage, PixelError> {
    let cfg = EngineConfig {
        max_src_resolution: MAX_WATERMARK_PIXELS as f64 / 1_000_000.0,
        ..EngineConfig::default()
    };
    let o = Options {
        format: Some(Format::Png),
        ..Options::default()
    };
    let png = transform(src, &o, &cfg)?;
    image::load_from_memory(&png.bytes)
        .map(|i| i.into_rgba8())
        .map_err(|e| DecodeError::Corrupt(Format::Png, e.to_string()).into())
}

/// Runs the whole engine: `prepare` then `run`.
pub fn transform(src: &[u8], o: &Options, cfg: &EngineConfig) -> Result<Encoded, PixelError> {
    prepare(src, o, cfg)?.run(src)
}
