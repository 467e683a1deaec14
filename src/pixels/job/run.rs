//! Running a job: decode → transform → encode for stills, frame by frame for animations,
//! with the deadline checked between stages and inside the long ones.

use std::borrow::Cow;

use image::DynamicImage;

use super::{Job, MIN_AVIF_SIDE, small_avif_fallback};
use crate::format::Format;
use crate::pixels::types::{DecodeError, Encoded, PixelError, Timings};
use crate::pixels::{Deadline, anim, avif, color, decode, encode, metadata, ops, probe, svg};
use crate::plan::{self, Plan, SourceGeometry};

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
            let bytes = svg::sanitize(src, probe::probe)?;
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
            svg::render(src, self.render_size.0, self.render_size.1, probe::probe)?
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
            .then(|| metadata::webp_icc(src))
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
