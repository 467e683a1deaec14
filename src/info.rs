//! `/info/{signature}/{options}/{source}`: what pixgate reads from a source's header and
//! what the options would produce, as JSON. Nothing is decoded: sizes, orientation,
//! frames, profile and EXIF come from container structures, the result from the plan.

use serde::Serialize;

use crate::pixels::{self, EngineConfig, PixelError, color, metadata, probe};
use crate::request::options::Options;

/// The `/info` answer (schema in README, "`/info`").
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Info {
    /// Format name as the URL API spells it (`jpg`, `png`, `webp`, `avif`, `gif`, `svg`, ...).
    pub format: &'static str,
    pub mime: &'static str,
    /// Displayed size: after the EXIF (or AVIF irot/imir) orientation.
    pub width: u32,
    pub height: u32,
    /// EXIF orientation 1..=8 as stored.
    pub orientation: u8,
    pub has_alpha: bool,
    pub frames: u32,
    pub bytes: u64,
    /// The embedded ICC profile's description, `null` without one.
    pub color_profile: Option<String>,
    pub exif: metadata::ExifSummary,
    /// What the URL's options give; `null` when they cannot (with `result_error` saying why).
    pub result: Option<ResultInfo>,
    pub result_error: Option<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResultInfo {
    pub width: u32,
    pub height: u32,
    pub format: &'static str,
    pub animated: bool,
}

/// Describes `src`. Fails only when the source itself is unusable (not an image, corrupt
/// header); option problems go into `result_error`.
pub fn describe(src: &[u8], opts: &Options, cfg: &EngineConfig) -> Result<Info, PixelError> {
    let info = probe::probe(src)?;
    let (width, height) = if info.orientation >= 5 {
        (info.height, info.width)
    } else {
        (info.width, info.height)
    };
    let (icc, exif) = probe::header_metadata(src, info.format);
    let (result, result_error) = match pixels::prepare(src, opts, cfg) {
        Ok(job) => {
            let (w, h) = job
                .plan
                .as_ref()
                .map_or((width, height), |p| (p.width, p.height));
            (
                Some(ResultInfo {
                    width: w,
                    height: h,
                    format: job.format.ext(),
                    animated: job.is_animated(),
                }),
                None,
            )
        }
        Err(e) => (None, Some(crate::error::Error::from(e).code())),
    };
    Ok(Info {
        format: info.format.ext(),
        mime: info.format.mime(),
        width,
        height,
        orientation: info.orientation,
        has_alpha: info.has_alpha,
        frames: info.frames,
        bytes: src.len() as u64,
        color_profile: icc.as_deref().and_then(color::profile_name),
        exif: exif.as_deref().map(metadata::summary).unwrap_or_default(),
        result,
        result_error,
    })
}

impl Info {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}
