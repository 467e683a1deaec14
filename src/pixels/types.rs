//! The engine's shared vocabulary, which every stage and codec speaks and none owns: header
//! facts ([`SourceInfo`]), decoded pixels ([`Decoded`]), metadata to embed ([`Metadata`]),
//! encoder settings, results ([`Encoded`], [`Timings`]) and the errors of each stage.

use image::DynamicImage;

use super::deadline::Expired;
use crate::format::Format;
use crate::plan::PlanError;

/// A header reader, handed to codecs that meet images inside images (SVG's embedded
/// rasters) so they need not depend on the probe.
pub type Prober = fn(&[u8]) -> Result<SourceInfo, ProbeError>;

/// Why a source could not be probed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProbeError {
    #[error("the source is empty")]
    Empty,
    #[error("the source is not an image")]
    NotAnImage,
    #[error("corrupt {0} header: {1}")]
    Corrupt(Format, &'static str),
    #[error("{0} variant not supported: {1}")]
    Unsupported(Format, &'static str),
}

/// Header facts.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceInfo {
    pub format: Format,
    /// Stored size, before orientation; for animations the canvas (logical screen).
    pub width: u32,
    pub height: u32,
    /// EXIF orientation, 1..=8 (1 when absent or invalid).
    pub orientation: u8,
    /// Number of frames (1 for still images).
    pub frames: u32,
    /// How many times an animation plays, normalised across containers: 0 = forever
    /// (GIF without a NETSCAPE2.0 block plays once; with a count n it repeats n times more).
    pub plays: u32,
    pub has_alpha: bool,
    pub has_icc: bool,
    /// JPEG only: CMYK/YCCK, and whether Adobe's APP14 says values are stored inverted.
    pub cmyk: bool,
    pub adobe: bool,
}

impl SourceInfo {
    pub(crate) fn new(format: Format, width: u32, height: u32) -> Self {
        SourceInfo {
            format,
            width,
            height,
            orientation: 1,
            frames: 1,
            plays: 1,
            has_alpha: false,
            has_icc: false,
            cmyk: false,
            adobe: false,
        }
    }

    pub fn pixels(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }
}

/// Why decoding failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("corrupt {0} data: {1}")]
    Corrupt(Format, String),
    #[error("decoding {0} is not supported")]
    Unsupported(Format),
    /// A valid file using a feature this build does not decode.
    #[error("{0} variant not supported: {1}")]
    UnsupportedVariant(Format, String),
    /// The deadline passed while decoding.
    #[error("the request deadline passed during decoding")]
    Deadline,
}

/// Decoded pixels and the metadata worth keeping.
pub struct Decoded {
    pub image: DynamicImage,
    /// Embedded ICC profile, when the source had a complete one.
    pub icc: Option<Vec<u8>>,
    /// Raw EXIF (TIFF structure), when the source had one.
    pub exif: Option<Vec<u8>>,
}

/// Largest allocation any decoder may make, beyond the header-checked pixel buffer.
pub(crate) const MAX_DECODER_ALLOC: u64 = 1 << 30;

/// Why encoding failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    #[error("this build cannot write {0}")]
    Unsupported(Format),
    #[error("{0} encoder failed: {1}")]
    Failed(Format, String),
    /// The deadline passed while encoding (or the encode could not finish before it).
    #[error("the request deadline passed during encoding")]
    Deadline,
}

impl From<Expired> for EncodeError {
    fn from(_: Expired) -> Self {
        EncodeError::Deadline
    }
}

/// Which JPEG encoder settings to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JpegMode {
    /// mozjpeg: trellis quantisation and optimised Huffman tables, baseline scans (measured
    /// on an 800x450 photo at q80: 34.9 KB in 12.5 ms, 15% smaller than `Fast`'s 41.0 KB in
    /// 2.1 ms). With `jpeg_progressive`, mozjpeg's searched progressive scans: 34.8 KB in
    /// 22.6 ms.
    #[default]
    Small,
    /// libjpeg-turbo-equivalent settings (baseline unless progressive is asked for, optimised
    /// Huffman tables, no trellis): fastest.
    Fast,
}

/// WebP compression mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WebpMode {
    #[default]
    Lossy,
    Lossless,
}

/// Encoder settings that are server configuration rather than per-request options.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderConfig {
    pub jpeg_mode: JpegMode,
    /// Progressive JPEG (imgproxy's `IMGPROXY_JPEG_PROGRESSIVE`; off by default as there).
    pub jpeg_progressive: bool,
    pub webp_mode: WebpMode,
    /// libwebp `method`, 0 (fast) ..= 6 (small).
    pub webp_effort: u8,
    /// libaom speed, 0 (slow, small) ..= 10 (fast).
    pub avif_speed: u8,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        EncoderConfig {
            jpeg_mode: JpegMode::Small,
            jpeg_progressive: false,
            webp_mode: WebpMode::Lossy,
            webp_effort: 4,
            avif_speed: DEFAULT_AVIF_SPEED,
        }
    }
}

/// libaom speed by default: an 800 px photo encodes in 52.8 ms here (`benches/formats.rs`);
/// speed 9 takes 16.3 ms but needs about 6% more bytes for the same PSNR.
pub const DEFAULT_AVIF_SPEED: u8 = 8;

/// Metadata to embed in the output.
#[derive(Debug, Clone, Copy, Default)]
pub struct Metadata<'a> {
    pub icc: Option<&'a [u8]>,
    /// TIFF-structured EXIF (without the `Exif\0\0` prefix).
    pub exif: Option<&'a [u8]>,
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

impl From<Expired> for PixelError {
    fn from(_: Expired) -> Self {
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

/// Why a pixel operation failed (an invariant of the plan broken: our bug, a 500).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OpsError {
    #[error("resize failed: {0}")]
    Resize(String),
}
