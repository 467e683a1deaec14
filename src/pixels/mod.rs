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
pub mod metadata;
pub mod ops;
pub mod probe;
pub mod quality;
pub mod smart;
pub mod svg;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use image::DynamicImage;

use crate::format::Format;
use crate::plan::{self, Plan, PlanError, ResultLimits, SourceGeometry};
use crate::request::options::Options;
pub use deadline::Deadline;
pub use decode::DecodeError;
pub use encode::{EncodeError, EncoderConfig, JpegMode, WebpMode};
pub use ops::OpsError;
pub use probe::{ProbeError, SourceInfo};

/// Changes whenever the same (source, options) would give different output bytes; part of
/// every ETag, so caches everywhere revalidate after an engine change.
pub const ENGINE_REVISION: &str = concat!(env!("CARGO_PKG_VERSION"), "/1");

/// Encodes one `max_bytes` result may cost, the first included.
pub const MAX_BYTES_ENCODES: u32 = 8;

/// AVIF results smaller than this on a side are written as PNG (alpha) or JPEG.
pub const MIN_AVIF_SIDE: u32 = 16;

/// Default frame cap of animated results.
pub const DEFAULT_MAX_ANIMATION_FRAMES: u32 = 500;

/// Engine limits and defaults that come from server configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Largest source, in megapixels (width × height × frames processed), checked from the
    /// header before any decode.
    pub max_src_resolution: f64,
    /// Largest source in bytes; 0 = no limit here (the fetcher enforces its own).
    pub max_src_file_size: u64,
    /// Largest side of a result; 0 = only the output format's maximum.
    pub max_result_dimension: u32,
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
    /// Largest animation frame (canvas), in megapixels; 0 = `max_src_resolution`. Frames
    /// are streamed, so this is what one frame costs in memory; time is bounded by the frame
    /// count and the request deadline, checked between frames.
    pub max_animation_frame_resolution: f64,
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
    pub method: String,
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
            method: "none".into(),
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
            max_src_file_size: 0,
            max_result_dimension: 0,
            max_result_resolution: 50.0,
            quality: 80,
            format_quality: BTreeMap::from([
                (Format::Webp, 79),
                (Format::Avif, 63),
                (Format::Jxl, 77),
            ]),
            jpeg_shrink_margin: 1.5,
            max_animation_frames: DEFAULT_MAX_ANIMATION_FRAMES,
            max_animation_frame_resolution: 0.0,
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

/// Everything that can go wrong in the engine, by module.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PixelError {
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error("source is {pixels} pixels, over the limit of {limit}")]
    SourceTooManyPixels { pixels: u64, limit: u64 },
    #[error("no quality brings the result under {limit} bytes (smallest: {smallest})")]
    MaxBytesUnreachable { smallest: u64, limit: u64 },
    #[error("the animation has {frames} frames, over the limit of {limit}")]
    TooManyFrames { frames: u32, limit: u32 },
    #[error("source is {bytes} bytes, over the limit of {limit}")]
    SourceTooManyBytes { bytes: u64, limit: u64 },
    #[error("option `{0}` is not supported yet")]
    UnsupportedOption(&'static str),
    #[error("reading {0} sources is not supported")]
    UnsupportedInput(Format),
    #[error("writing {0} is not supported")]
    UnsupportedOutput(Format),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Decode(DecodeError),
    #[error(transparent)]
    Ops(#[from] OpsError),
    #[error(transparent)]
    Encode(EncodeError),
    #[error("the request deadline passed during processing")]
    Deadline,
}

impl From<deadline::Expired> for PixelError {
    fn from(_: deadline::Expired) -> Self {
        PixelError::Deadline
    }
}

impl From<DecodeError> for PixelError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::Deadline => PixelError::Deadline,
            other => PixelError::Decode(other),
        }
    }
}

impl From<EncodeError> for PixelError {
    fn from(e: EncodeError) -> Self {
        match e {
            EncodeError::Deadline => PixelError::Deadline,
            other => PixelError::Encode(other),
        }
    }
}

/// An encoded result.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub format: Format,
    pub width: u32,
    pub height: u32,
    pub timings: Timings,
}

/// Where a job's time went.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    pub decode: std::time::Duration,
    pub transform: std::time::Duration,
    pub encode: std::time::Duration,
    /// Encoder runs (more than one with `mb` or `aq`).
    pub encodes: u32,
}

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

/// All checks that need no pixels: probe, source limits, option support, output format,
/// geometry and result limits. Cheapest rejection first.
pub fn prepare(src: &[u8], o: &Options, cfg: &EngineConfig) -> Result<Job, PixelError> {
    let max_bytes = o
        .security
        .max_src_file_size
        .unwrap_or(cfg.max_src_file_size);
    if max_bytes > 0 && src.len() as u64 > max_bytes {
        return Err(PixelError::SourceTooManyBytes {
            bytes: src.len() as u64,
            limit: max_bytes,
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
        let frame_mp = o
            .security
            .max_animation_frame_resolution
            .unwrap_or(cfg.max_animation_frame_resolution);
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
            a.method.as_str(),
            a.target,
            a.min_quality,
            a.max_quality,
            a.allowed_error,
        ),
        None => (d.method.as_str(), None, None, None, None),
    };
    let min = min.unwrap_or(d.min_quality).max(1);
    let max = max.unwrap_or(d.max_quality).clamp(min, 100);
    match method {
        "dssim" => Some(AutoQuality::Dssim {
            target: target.unwrap_or(d.target),
            allowed_error: err.unwrap_or(d.allowed_error),
            min,
            max,
        }),
        // The parser insists on a target for `size`; a server default has none.
        "size" => target.map(|t| AutoQuality::Size {
            bytes: t as u64,
            min,
            max,
        }),
        _ => None,
    }
}

impl Job {
    /// The most bytes this job is expected to hold at once (decoded source, resize
    /// intermediate, working copies of the result, encoder state), for the gate's memory
    /// budget. Measured peaks (VmHWM of `pixgate transform`) stay below it; see
    /// `tests/it/hardening.rs`.
    pub fn memory_estimate(&self) -> u64 {
        const FIXED: u64 = 8 << 20;
        let Some(plan) = &self.plan else {
            // Passed through or sanitised: the bytes themselves and a copy.
            return FIXED;
        };
        let channels: u64 = if self.info.has_alpha || self.info.format == Format::Svg {
            4
        } else {
            3
        };
        let den = u64::from(self.jpeg_denominator.max(1));
        let (sw, sh) = if self.info.format == Format::Svg {
            (u64::from(self.render_size.0), u64::from(self.render_size.1))
        } else {
            (
                u64::from(self.info.width).div_ceil(den),
                u64::from(self.info.height).div_ceil(den),
            )
        };
        // CMYK decodes to 4 bytes a pixel and converts to 3; decoders hold a second buffer
        // (planes, rows) at most the size of the first.
        let decoded = sw * sh * if self.info.cmyk { 7 } else { channels.max(3) } * 2;
        let (tw, th) = (u64::from(plan.scaled_width), u64::from(plan.scaled_height));
        // fast_image_resize runs one axis after the other: its intermediate has the
        // target's size on one axis and the source's on the other.
        let intermediate = (sw * th).max(tw * sh) * channels;
        let result = u64::from(plan.width) * u64::from(plan.height);
        // The resized image, a blurred copy and a box pass's second buffer, or a canvas
        // and its flattened copy; then the encoder's own state (4 bytes a pixel covers
        // mozjpeg's coefficients, libwebp's ARGB picture, libaom's frames).
        let working = result * channels * 3 + result * 4;
        let frames = if self.animate {
            // One source canvas and one result frame at a time, plus the encoder's
            // previous frames.
            u64::from(self.info.width) * u64::from(self.info.height) * 4 * 2
        } else {
            0
        };
        let trim = if self.trim.is_some() { sw * sh * 4 } else { 0 };
        FIXED + decoded + intermediate + working + frames + trim
    }

    /// Decode → transform → encode. CPU-bound; run it off the async workers.
    pub fn run(&self, src: &[u8]) -> Result<Encoded, PixelError> {
        self.run_until(src, None)
    }

    /// [`Job::run`] that gives up between stages once `deadline` has passed.
    pub fn run_until(
        &self,
        src: &[u8],
        deadline: Option<std::time::Instant>,
    ) -> Result<Encoded, PixelError> {
        let deadline = Deadline::from_option(deadline);
        if self.sanitize_svg {
            let t = std::time::Instant::now();
            let bytes = svg::sanitize(src)?;
            return Ok(Encoded {
                bytes,
                format: Format::Svg,
                width: self.info.width,
                height: self.info.height,
                timings: Timings {
                    decode: t.elapsed(),
                    ..Timings::default()
                },
            });
        }
        let Some(plan) = &self.plan else {
            return Ok(Encoded {
                bytes: src.to_vec(),
                format: self.info.format,
                width: self.info.width,
                height: self.info.height,
                timings: Timings::default(),
            });
        };
        if self.animate {
            return self.run_animated(src, plan, &deadline);
        }
        let mut timings = Timings::default();
        let t = std::time::Instant::now();
        let decoded = if self.info.format == Format::Svg {
            svg::render(src, self.render_size.0, self.render_size.1)?
        } else if self.info.format == Format::Avif {
            avif::decode(src, &self.info, self.max_pixels)?
        } else {
            decode::decode(src, &self.info, self.jpeg_denominator, &deadline)?
        };
        timings.decode = t.elapsed();
        deadline.check()?;
        let t = std::time::Instant::now();
        let mut image = decoded.image;
        let (mut src_w, mut src_h) = (self.info.width, self.info.height);
        let mut plan = Cow::Borrowed(plan);
        if let Some(r) = &self.trim
            && let Some(keep) = ops::find_trim(&image, &r.spec, &deadline)?
            && (keep.width, keep.height) != (image.width(), image.height())
        {
            // Decoded at full size for trim, so decoded and stored pixels coincide.
            image = image.crop_imm(keep.x, keep.y, keep.width, keep.height);
            (src_w, src_h) = (keep.width, keep.height);
            let geometry = SourceGeometry {
                width: src_w,
                height: src_h,
                orientation: self.info.orientation,
                is_vector: false,
            };
            plan = Cow::Owned(plan::build(&r.options, &geometry, &r.limits, self.format)?);
        }
        let format = if self.format == Format::Avif && plan.width.min(plan.height) < MIN_AVIF_SIDE {
            small_avif_fallback(&self.info, self.background)
        } else {
            self.format
        };
        let (dw, dh) = (image.width(), image.height());
        let scale = (
            f64::from(dw) / f64::from(src_w),
            f64::from(dh) / f64::from(src_h),
        );
        let fill = self.fill(format);
        let img = ops::apply(image, &plan, scale, fill, &deadline)?;
        // Colour conversion after the resize: the same result for these smooth transfer
        // functions at a fraction of the pixels (libvips' thumbnail does the same).
        let (img, icc) = match decoded.icc {
            Some(p) if !self.keep_icc => (
                color::rgb_to_srgb(&img, &p, &deadline)?.unwrap_or(img),
                None,
            ),
            other => (img, other),
        };
        // The mark is sRGB: drawn once the pixels are (with `scp:0` and a kept profile it
        // is drawn in the source's space, a shift only wide-gamut marks would show).
        let img = match &self.watermark {
            Some((mark, spec)) => {
                ops::PlacedWatermark::new(mark, spec, img.width(), img.height(), plan.dpr)?
                    .apply(img)
            }
            None => img,
        };
        timings.transform = t.elapsed();
        deadline.check()?;
        let exif = if self.keep_exif {
            // The pixels are upright after the pipeline; a kept EXIF block must say so.
            decoded.exif.map(|mut e| {
                probe::reset_exif_orientation(&mut e);
                e
            })
        } else if self.keep_copyright {
            decoded.exif.and_then(|e| metadata::copyright_only(&e))
        } else {
            None
        };
        let meta = encode::Metadata {
            icc: icc.as_deref(),
            exif: exif.as_deref(),
        };
        let t = std::time::Instant::now();
        let (bytes, encodes) = self.encode_within(&img, format, meta, &deadline)?;
        timings.encode = t.elapsed();
        timings.encodes = encodes;
        Ok(Encoded {
            bytes,
            format,
            width: img.width(),
            height: img.height(),
            timings,
        })
    }
}

impl Job {
    /// Encodes at the job's quality; with `max_bytes`, lowers the quality by bisection
    /// (at most [`MAX_BYTES_ENCODES`] encodes in all) to the highest that fits.
    fn encode_within(
        &self,
        img: &DynamicImage,
        format: Format,
        meta: encode::Metadata<'_>,
        deadline: &Deadline,
    ) -> Result<(Vec<u8>, u32), PixelError> {
        let runs = std::cell::Cell::new(0u32);
        let encode = |q: u8| {
            runs.set(runs.get() + 1);
            encode::encode(img, format, q, &self.encoder, meta, deadline)
        };
        let (quality, first) = match self.autoquality.filter(|_| format == self.format) {
            Some(aq) => self.auto_quality(img, format, aq, &encode, deadline)?,
            None => (self.quality, encode(self.quality)?),
        };
        let limit = self.max_bytes;
        if limit == 0 || first.len() as u64 <= limit {
            return Ok((first, runs.get()));
        }
        if !quality_matters(format, &self.encoder) {
            return Err(PixelError::MaxBytesUnreachable {
                smallest: first.len() as u64,
                limit,
            });
        }
        // Bisection for the highest quality below the job's that fits: 99 candidates take
        // at most 7 encodes.
        let (mut lo, mut hi) = (1u8, quality.saturating_sub(1));
        let mut best = None;
        let mut smallest = first.len() as u64;
        let mut budget = MAX_BYTES_ENCODES - 1;
        while lo <= hi && budget > 0 {
            deadline.check()?;
            let q = lo + (hi - lo).div_ceil(2);
            let out = encode(q)?;
            budget -= 1;
            smallest = smallest.min(out.len() as u64);
            if out.len() as u64 <= limit {
                best = Some(out);
                lo = q + 1;
            } else if q == 1 {
                break;
            } else {
                hi = q - 1;
            }
        }
        best.map(|b| (b, runs.get()))
            .ok_or(PixelError::MaxBytesUnreachable { smallest, limit })
    }

    /// `autoquality`: a bisection over [min, max] (at most [`AUTOQUALITY_ENCODES`]
    /// encodes), returning the chosen quality and its bytes.
    fn auto_quality(
        &self,
        img: &DynamicImage,
        format: Format,
        aq: AutoQuality,
        encode: &dyn Fn(u8) -> Result<Vec<u8>, EncodeError>,
        deadline: &Deadline,
    ) -> Result<(u8, Vec<u8>), PixelError> {
        let (min, max) = match aq {
            AutoQuality::Dssim { min, max, .. } | AutoQuality::Size { min, max, .. } => (min, max),
        };
        // `good(q)` is monotone in q: false below some quality, true from it on. Wanted is
        // the lowest good quality for DSSIM; for size, "good" means over the budget and the
        // answer is the highest quality below the first good one.
        let reference =
            matches!(aq, AutoQuality::Dssim { .. }).then(|| quality::Reference::new(img));
        let good = |bytes: &[u8]| -> Result<(bool, bool), PixelError> {
            Ok(match (aq, &reference) {
                (
                    AutoQuality::Dssim {
                        target,
                        allowed_error,
                        ..
                    },
                    Some(reference),
                ) => {
                    let d = reference.dssim(&self.decode_result(bytes, format)?);
                    (d <= target, d <= target && target - d <= allowed_error)
                }
                (AutoQuality::Size { bytes: limit, .. }, _) => (bytes.len() as u64 > limit, false),
                (AutoQuality::Dssim { .. }, None) => (true, true),
            })
        };
        let (mut lo, mut hi) = (min, max);
        let mut lowest_good: Option<(u8, Vec<u8>)> = None;
        let mut highest_bad: Option<(u8, Vec<u8>)> = None;
        let mut budget = AUTOQUALITY_ENCODES;
        while lo <= hi && budget > 0 {
            deadline.check()?;
            let q = lo + (hi - lo) / 2;
            let bytes = encode(q)?;
            budget -= 1;
            let (ok, close_enough) = good(&bytes)?;
            if ok {
                lowest_good = Some((q, bytes));
                if close_enough || q == lo {
                    break;
                }
                hi = q - 1;
            } else {
                highest_bad = Some((q, bytes));
                lo = q + 1;
            }
        }
        let pick = match aq {
            // Nothing reached the target: the best the range allows.
            AutoQuality::Dssim { .. } => lowest_good.or(highest_bad),
            // Everything was over the budget: the smallest the range allows.
            AutoQuality::Size { .. } => highest_bad.or(lowest_good),
        };
        match pick {
            Some(p) => Ok(p),
            None => Ok((max, encode(max)?)),
        }
    }

    /// Decodes one of our own encodes (for the quality metric).
    fn decode_result(&self, bytes: &[u8], format: Format) -> Result<DynamicImage, PixelError> {
        let info = probe::probe(bytes)?;
        let img = if format == Format::Avif {
            // libavif refuses limits above its default; the result's own size is enough.
            avif::decode(bytes, &info, info.pixels())?.image
        } else {
            decode::decode(bytes, &info, 1, &Deadline::none())?.image
        };
        Ok(img)
    }

    fn fill(&self, format: Format) -> ops::Fill {
        ops::Fill {
            keep_alpha: self.keep_alpha && format.supports_alpha(),
            background: self.background,
            background_alpha: self.background_alpha,
        }
    }

    /// Whether the result will be animated.
    pub fn is_animated(&self) -> bool {
        self.animate
    }

    /// Streams every frame through the plan into an animated encoder.
    fn run_animated(
        &self,
        src: &[u8],
        plan: &Plan,
        deadline: &Deadline,
    ) -> Result<Encoded, PixelError> {
        let mut timings = Timings::default();
        let fill = self.fill(self.format);
        let mut placed: Option<ops::PlacedWatermark> = None;
        // Animations are always converted to sRGB: the animated encoders here carry no profile.
        let icc = (self.info.format == Format::Webp)
            .then(|| decode::webp_icc(src))
            .flatten();
        let mut frames = anim::Frames::new(src, &self.info, deadline)?;
        let mut writer: Option<anim::Writer> = None;
        let mut count = 0u32;
        let (mut width, mut height) = (0, 0);
        loop {
            let t = std::time::Instant::now();
            let Some(frame) = frames.next_frame()? else {
                break;
            };
            timings.decode += t.elapsed();
            count += 1;
            if count > self.info.frames {
                // The decoder found more frames than the header walk: never trust the excess.
                return Err(
                    DecodeError::Corrupt(self.info.format, "frame count changed".into()).into(),
                );
            }
            let t = std::time::Instant::now();
            let img = ops::apply(
                DynamicImage::ImageRgba8(frame.image),
                plan,
                (1.0, 1.0),
                fill,
                deadline,
            )?;
            let img = match &icc {
                Some(p) => color::rgb_to_srgb(&img, p, deadline)?.unwrap_or(img),
                None => img,
            };
            let img = match (&self.watermark, &placed) {
                (Some(_), Some(p)) => p.apply(img),
                (Some((mark, spec)), None) => {
                    // Scaled once: every frame has the plan's size.
                    let p =
                        ops::PlacedWatermark::new(mark, spec, img.width(), img.height(), plan.dpr)?;
                    placed.insert(p).apply(img)
                }
                (None, _) => img,
            };
            timings.transform += t.elapsed();
            let t = std::time::Instant::now();
            let w = match &mut writer {
                Some(w) => w,
                None => {
                    (width, height) = (img.width(), img.height());
                    writer.insert(anim::Writer::new(
                        anim::Settings {
                            format: self.format,
                            quality: self.quality,
                            encoder: &self.encoder,
                            plays: self.info.plays,
                            transparent: self.keep_alpha
                                && self.background.is_none()
                                && (self.info.has_alpha || img.color().has_alpha()),
                        },
                        width,
                        height,
                    )?)
                }
            };
            w.add(&img, frame.delay_ms)?;
            timings.encode += t.elapsed();
            deadline.check()?;
        }
        let writer =
            writer.ok_or_else(|| DecodeError::Corrupt(self.info.format, "no frames".into()))?;
        let t = std::time::Instant::now();
        let bytes = writer.finish()?;
        timings.encode += t.elapsed();
        timings.encodes = 1;
        // Animations are encoded once: over `max_bytes` is refused, not retried.
        if self.max_bytes > 0 && bytes.len() as u64 > self.max_bytes {
            return Err(PixelError::MaxBytesUnreachable {
                smallest: bytes.len() as u64,
                limit: self.max_bytes,
            });
        }
        Ok(Encoded {
            bytes,
            format: self.format,
            width,
            height,
            timings,
        })
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
