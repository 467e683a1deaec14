//! Job preparation: every check that needs no pixels (probe, source limits, option support,
//! output format, geometry and result limits), cheapest rejection first, into a [`Job`] that
//! `run` executes and `search` sizes (max_bytes, autoquality).

mod run;
mod search;

use std::sync::Arc;

use super::engine::{AutoQuality, EngineConfig, quality_for};
use super::types::{EncoderConfig, PixelError, SourceInfo, WebpMode};
use super::{anim, decode, encode, ops, probe};
use crate::format::Format;
use crate::plan::{self, Plan, ResultLimits, SourceGeometry};
use crate::request::options::{AutoQualityMethod, Options};

/// AVIF results smaller than this on a side are written as PNG (alpha) or JPEG.
pub const MIN_AVIF_SIDE: u32 = 16;

/// A checked, planned transform, ready to run on the CPU.
#[derive(Debug, Clone)]
pub struct Job {
    pub info: SourceInfo,
    pub format: Format,
    pub quality: u8,
    /// `None`: the source is returned unchanged (`skip_processing`).
    pub plan: Option<Plan>,
    keep_alpha: bool,
    background: Option<crate::request::options::Rgb>,
    keep_icc: bool,
    keep_exif: bool,
    /// With metadata stripped: keep the source's EXIF Copyright and Artist.
    keep_copyright: bool,
    jpeg_denominator: u32,
    encoder: EncoderConfig,
    /// Every frame goes through the plan and the result is animated.
    animate: bool,
    /// SVG → SVG: the result is the sanitised document.
    sanitize_svg: bool,
    /// SVG → raster: the whole document is drawn at this size, then the plan runs on it.
    render_size: (u32, u32),
    /// The source pixel limit this job was checked against.
    max_pixels: u64,
    /// `max_bytes`: 0 = none.
    max_bytes: u64,
    background_alpha: f64,
    /// `trim`: found on the decoded pixels, then the geometry is planned again.
    trim: Option<Box<Retrim>>,
    watermark: Option<(Arc<image::RgbaImage>, ops::WatermarkSpec)>,
    autoquality: Option<AutoQuality>,
}

/// What planning again after `trim` needs.
#[derive(Debug, Clone)]
struct Retrim {
    spec: crate::request::options::Trim,
    options: Options,
    limits: ResultLimits,
}

/// Output formats whose encoder here embeds an ICC profile.
fn carries_icc(format: Format) -> bool {
    matches!(
        format,
        Format::Jpeg | Format::Png | Format::Webp | Format::Avif
    )
}

/// Formats this build decodes.
pub fn can_read(format: Format) -> bool {
    matches!(
        format,
        Format::Jpeg
            | Format::Png
            | Format::Gif
            | Format::Webp
            | Format::Avif
            | Format::Svg
            | Format::Bmp
            | Format::Tiff
            | Format::Ico
    )
}

/// The output format when the URL names none and no `Accept` negotiation applies: the
/// source's own format when it can be written, else PNG for alpha and JPEG otherwise.
pub fn default_format(info: &SourceInfo) -> Format {
    // SVG stays SVG (sanitised): vectors scale in the browser at no cost in bytes.
    if info.format == Format::Svg || (encode::can_write(info.format) && info.format != Format::Ico)
    {
        info.format
    } else if info.has_alpha {
        Format::Png
    } else {
        Format::Jpeg
    }
}

/// All checks that need no pixels: probe, source limits, option support, output format,
/// geometry and result limits. Cheapest rejection first.
pub fn prepare(src: &[u8], o: &Options, cfg: &EngineConfig) -> Result<Job, PixelError> {
    if let Some(limit) = o.security.source_size_limit(cfg.max_src_file_size)
        && src.len() as u64 > limit
    {
        return Err(PixelError::SourceTooManyBytes {
            bytes: src.len() as u64,
            limit,
        });
    }
    let info = probe::probe(src)?;
    if let Some(name) = o.unsupported() {
        return Err(PixelError::UnsupportedOption(name));
    }
    let mut requested = o.format;
    if info.format == Format::Svg && o.animated_format.is_some() {
        // Negotiation never turns a vector into a bitmap; an explicit format does.
        requested = None;
    }
    let svg_out = info.format == Format::Svg && requested.is_none_or(|f| f == Format::Svg);
    if svg_out
        || (o.skip_processing.contains(&info.format) && requested.is_none_or(|f| f == info.format))
    {
        return Ok(Job {
            format: info.format,
            quality: 0,
            plan: None,
            keep_alpha: true,
            background: None,
            keep_icc: true,
            keep_exif: true,
            keep_copyright: true,
            jpeg_denominator: 1,
            encoder: cfg.encoder.clone(),
            animate: false,
            // Even `skp:svg` never passes a document through unsanitised.
            sanitize_svg: info.format == Format::Svg,
            render_size: (0, 0),
            max_pixels: 0,
            max_bytes: 0,
            background_alpha: 1.0,
            trim: None,
            watermark: None,
            autoquality: None,
            info,
        });
    }
    if !can_read(info.format) {
        return Err(PixelError::UnsupportedInput(info.format));
    }
    // Frames are decoded one at a time, so the pixel limit applies per frame (the canvas).
    let limit_mp = o
        .security
        .max_src_resolution
        .unwrap_or(cfg.max_src_resolution);
    let limit = (limit_mp * 1_000_000.0) as u64;
    // A vector's declared size costs nothing; what it is drawn at is bounded below.
    if info.pixels() > limit && info.format != Format::Svg {
        return Err(PixelError::SourceTooManyPixels {
            pixels: info.pixels(),
            limit,
        });
    }
    let max_frames = o
        .security
        .max_animation_frames
        .unwrap_or(cfg.max_animation_frames);
    let animated_source = info.frames > 1 && anim::can_read(info.format) && max_frames > 1;
    let mut format = requested.unwrap_or_else(|| default_format(&info));
    if let Some(fallback) = o.animated_format
        && animated_source
        && !anim::can_write(format)
    {
        // A negotiated still-only format (AVIF) must not turn an animation static.
        format = fallback.unwrap_or_else(|| default_format(&info));
    }
    if !encode::can_write(format) {
        return Err(PixelError::UnsupportedOutput(format));
    }
    let animate = animated_source && anim::can_write(format);
    if animate {
        if info.frames > max_frames {
            return Err(PixelError::TooManyFrames {
                frames: info.frames,
                limit: max_frames,
            });
        }
        // `mafr:0` in a URL means the source limit, as in imgproxy.
        let frame_mp = o
            .security
            .max_animation_frame_resolution
            .or(cfg.max_animation_frame_resolution)
            .unwrap_or(0.0);
        let frame_limit = (frame_mp * 1_000_000.0) as u64;
        if frame_limit > 0 && info.pixels() > frame_limit {
            return Err(PixelError::SourceTooManyPixels {
                pixels: info.pixels(),
                limit: frame_limit,
            });
        }
    }
    let geometry = SourceGeometry {
        width: info.width,
        height: info.height,
        orientation: info.orientation,
        is_vector: info.format == Format::Svg,
    };
    let limits = ResultLimits {
        max_result_dimension: cfg.max_result_dimension,
        max_result_pixels: (cfg.max_result_resolution * 1_000_000.0) as u64,
    };
    let mut plan = plan::build(o, &geometry, &limits, format)?;
    if format == Format::Avif && plan.width.min(plan.height) < MIN_AVIF_SIDE {
        format = small_avif_fallback(&info, o.background);
        plan = plan::build(o, &geometry, &limits, format)?;
    }
    if animate {
        // Frames positioned one by one would make the window jump between frames; an
        // animation keeps the centred crop.
        plan.smart_crop = false;
        plan.crop_smart = false;
    }
    // Trim needs every source pixel, and is for stills (as in imgproxy); a vector has
    // no border to find before it is drawn at a size.
    let trim = o
        .trim
        .filter(|_| !animate && info.format != Format::Svg)
        .map(|spec| {
            Box::new(Retrim {
                spec,
                options: o.clone(),
                limits,
            })
        });
    let watermark = match (&o.watermark, &cfg.watermark) {
        (Some(w), Some(image)) => Some((
            image.clone(),
            ops::WatermarkSpec {
                opacity: w.opacity * cfg.watermark_opacity,
                position: w.position,
                x: w.x,
                y: w.y,
                scale: w.scale,
            },
        )),
        _ => None,
    };
    let render_size = if info.format == Format::Svg {
        svg_render_size(&plan, limit)
    } else {
        (0, 0)
    };
    let jpeg_denominator = if info.format == Format::Jpeg && trim.is_none() {
        // Orientation does not matter: the shrink is the smaller of the two axes.
        decode::jpeg_scale_denominator(plan.shrink(), cfg.jpeg_shrink_margin)
    } else {
        1
    };
    Ok(Job {
        quality: quality_for(o, format, cfg),
        keep_alpha: format.supports_alpha(),
        background: o.background,
        // `strip_color_profile` (default) converts to sRGB and drops the profile; otherwise
        // the profile travels with the pixels, where the output format can carry one.
        keep_icc: !o.strip_color_profile && carries_icc(format),
        keep_exif: !o.strip_metadata,
        keep_copyright: o.strip_metadata && o.keep_copyright,
        jpeg_denominator,
        encoder: cfg.encoder.clone(),
        animate,
        sanitize_svg: false,
        render_size,
        max_pixels: limit,
        max_bytes: o.max_bytes,
        background_alpha: o.background_alpha,
        trim,
        watermark,
        autoquality: resolve_autoquality(o, format, cfg),
        plan: Some(plan),
        format,
        info,
    })
}

/// Whether the encoder's output depends on the quality setting (TIFF is written
/// uncompressed here, WebP may be configured lossless).
fn quality_matters(format: Format, encoder: &EncoderConfig) -> bool {
    format.has_quality()
        && format != Format::Tiff
        && !(format == Format::Webp && encoder.webp_mode == WebpMode::Lossless)
}

/// libaom refuses (or mangles) tiny frames; imgproxy falls back the same way.
fn small_avif_fallback(
    info: &SourceInfo,
    background: Option<crate::request::options::Rgb>,
) -> Format {
    if info.has_alpha && background.is_none() {
        Format::Png
    } else {
        Format::Jpeg
    }
}

/// The URL's `aq`, else the server's default method, with unset parts from the server.
/// `None` for formats without a quality setting.
fn resolve_autoquality(o: &Options, format: Format, cfg: &EngineConfig) -> Option<AutoQuality> {
    let d = &cfg.autoquality;
    if !quality_matters(format, &cfg.encoder) {
        return None;
    }
    let (method, target, min, max, err) = match &o.autoquality {
        Some(a) => (
            a.method,
            a.target,
            a.min_quality,
            a.max_quality,
            a.allowed_error,
        ),
        None => (d.method, None, None, None, None),
    };
    let min = min.unwrap_or(d.min_quality).max(1);
    let max = max.unwrap_or(d.max_quality).clamp(min, 100);
    match method {
        AutoQualityMethod::Dssim => Some(AutoQuality::Dssim {
            target: target.unwrap_or(d.target),
            allowed_error: err.unwrap_or(d.allowed_error),
            min,
            max,
        }),
        // The parser insists on a target for `size`; a server default has none.
        AutoQualityMethod::Size => target.map(|t| AutoQuality::Size {
            bytes: t as u64,
            min,
            max,
        }),
        AutoQualityMethod::None | AutoQualityMethod::Ml => None,
    }
}

/// The size to draw a whole SVG at so that the plan's crop comes out at its scaled size
/// (the resize is then close to identity), within `max_pixels`.
fn svg_render_size(plan: &Plan, max_pixels: u64) -> (u32, u32) {
    // SVGs carry no orientation, so oriented = stored size.
    let sx = f64::from(plan.scaled_width) / f64::from(plan.crop.width.max(1));
    let sy = f64::from(plan.scaled_height) / f64::from(plan.crop.height.max(1));
    let (mut w, mut h) = (
        f64::from(plan.oriented_width) * sx,
        f64::from(plan.oriented_height) * sy,
    );
    let pixels = w * h;
    if pixels > max_pixels as f64 {
        let k = (max_pixels as f64 / pixels).sqrt();
        (w, h) = (w * k, h * k);
    }
    (w.round().max(1.0) as u32, h.round().max(1.0) as u32)
}
