//! The pixel engine: (source bytes, [`Options`]) → encoded image. `prepare` does every cheap
//! check (header probe, limits, option support, output format, geometry) without touching
//! pixels; `Job::run` does the CPU work (decode → ops → encode) and is what the server puts
//! behind its CPU gate.

pub mod color;
pub mod decode;
pub mod encode;
pub mod metadata;
pub mod ops;
pub mod probe;

use std::collections::BTreeMap;

use crate::format::Format;
use crate::plan::{self, Plan, PlanError, ResultLimits, SourceGeometry};
use crate::request::options::Options;
pub use decode::DecodeError;
pub use encode::{EncodeError, EncoderConfig, JpegMode, WebpMode};
pub use ops::OpsError;
pub use probe::{ProbeError, SourceInfo};

/// Changes whenever the same (source, options) would give different output bytes; part of
/// every ETag, so caches everywhere revalidate after an engine change.
pub const ENGINE_REVISION: &str = concat!(env!("CARGO_PKG_VERSION"), "/1");

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
    pub encoder: EncoderConfig,
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
            encoder: EncoderConfig::default(),
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
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Ops(#[from] OpsError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("the request deadline passed during processing")]
    Deadline,
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
}

/// Output formats whose encoder here embeds an ICC profile.
fn carries_icc(format: Format) -> bool {
    matches!(format, Format::Jpeg | Format::Png | Format::Webp)
}

/// Formats this build decodes.
pub fn can_read(format: Format) -> bool {
    matches!(
        format,
        Format::Jpeg
            | Format::Png
            | Format::Gif
            | Format::Webp
            | Format::Bmp
            | Format::Tiff
            | Format::Ico
    )
}

/// The output format when the URL names none and no `Accept` negotiation applies: the
/// source's own format when it can be written, else PNG for alpha and JPEG otherwise.
pub fn default_format(info: &SourceInfo) -> Format {
    if encode::can_write(info.format) && info.format != Format::Ico {
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
    let requested = o.format;
    if o.skip_processing.contains(&info.format) && requested.is_none_or(|f| f == info.format) {
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
            info,
        });
    }
    if !can_read(info.format) {
        return Err(PixelError::UnsupportedInput(info.format));
    }
    // Only the first frame is processed for now, so frames do not multiply the pixel count.
    let limit_mp = o
        .security
        .max_src_resolution
        .unwrap_or(cfg.max_src_resolution);
    let limit = (limit_mp * 1_000_000.0) as u64;
    if info.pixels() > limit {
        return Err(PixelError::SourceTooManyPixels {
            pixels: info.pixels(),
            limit,
        });
    }
    let format = requested.unwrap_or_else(|| default_format(&info));
    if !encode::can_write(format) {
        return Err(PixelError::UnsupportedOutput(format));
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
    let plan = plan::build(o, &geometry, &limits, format)?;
    let jpeg_denominator = if info.format == Format::Jpeg {
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
        plan: Some(plan),
        format,
        info,
    })
}

impl Job {
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
        let check = || match deadline {
            Some(d) if std::time::Instant::now() >= d => Err(PixelError::Deadline),
            _ => Ok(()),
        };
        let Some(plan) = &self.plan else {
            return Ok(Encoded {
                bytes: src.to_vec(),
                format: self.info.format,
                width: self.info.width,
                height: self.info.height,
                timings: Timings::default(),
            });
        };
        let mut timings = Timings::default();
        let t = std::time::Instant::now();
        let decoded = decode::decode(src, &self.info, self.jpeg_denominator)?;
        timings.decode = t.elapsed();
        check()?;
        let (dw, dh) = (decoded.image.width(), decoded.image.height());
        let scale = (
            f64::from(dw) / f64::from(self.info.width),
            f64::from(dh) / f64::from(self.info.height),
        );
        let fill = ops::Fill {
            keep_alpha: self.keep_alpha,
            background: self.background,
        };
        let t = std::time::Instant::now();
        let img = ops::apply(decoded.image, plan, scale, fill)?;
        // Colour conversion after the resize: the same result for these smooth transfer
        // functions at a fraction of the pixels (libvips' thumbnail does the same).
        let (img, icc) = match decoded.icc {
            Some(p) if !self.keep_icc => (color::rgb_to_srgb(&img, &p).unwrap_or(img), None),
            other => (img, other),
        };
        timings.transform = t.elapsed();
        check()?;
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
        let bytes = encode::encode(&img, self.format, self.quality, &self.encoder, meta)?;
        timings.encode = t.elapsed();
        Ok(Encoded {
            bytes,
            format: self.format,
            width: img.width(),
            height: img.height(),
            timings,
        })
    }
}

/// Runs the whole engine: `prepare` then `run`.
pub fn transform(src: &[u8], o: &Options, cfg: &EngineConfig) -> Result<Encoded, PixelError> {
    prepare(src, o, cfg)?.run(src)
}
