//! Sizing a result: the `max_bytes` bisection and the `autoquality` search (DSSIM or size
//! targets), each a bounded number of encodes.

use image::DynamicImage;

use super::{Job, quality_matters};
use crate::format::Format;
use crate::pixels::engine::{AUTOQUALITY_ENCODES, AutoQuality, MAX_BYTES_ENCODES};
use crate::pixels::types::{EncodeError, PixelError};
use crate::pixels::{Deadline, avif, decode, encode, probe, quality};

impl Job {
    /// Encodes at the job's quality; with `max_bytes`, lowers the quality by bisection
    /// (at most [`MAX_BYTES_ENCODES`] encodes in all) to the highest that fits.
    pub(super) fn encode_within(
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
}
