//! Animated GIF and WebP: source frames come out of the decoder one composited canvas at a
//! time and go straight into a streaming animated encoder (GIF or WebP), so memory holds one
//! source canvas and one result frame, never the whole animation. Timing is carried over
//! frame by frame; disposal is resolved into what each frame shows, and the GIF writer
//! re-derives the smallest sub-rectangles and disposal for its own output.

use std::io::Cursor;

use image::{DynamicImage, RgbaImage};

use super::deadline::Deadline;
use super::types::{
    DecodeError, EncodeError, EncoderConfig, MAX_DECODER_ALLOC, SourceInfo, WebpMode,
};
use crate::format::Format;

/// One composited frame: what a browser shows, and for how long.
pub struct Frame {
    pub image: RgbaImage,
    pub delay_ms: u32,
}

/// Yields the frames of an animated GIF or WebP, in order.
pub enum Frames<'a> {
    Gif(Box<GifFrames<'a>>),
    Webp(WebpFrames<'a>),
}

impl<'a> Frames<'a> {
    pub fn new(
        data: &'a [u8],
        info: &SourceInfo,
        deadline: &Deadline,
    ) -> Result<Self, DecodeError> {
        match info.format {
            Format::Gif => Ok(Frames::Gif(Box::new(GifFrames::new(
                data, info, *deadline,
            )?))),
            Format::Webp => Ok(Frames::Webp(WebpFrames::new(data)?)),
            other => Err(DecodeError::Unsupported(other)),
        }
    }

    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        match self {
            Frames::Gif(g) => g.next_frame(),
            Frames::Webp(w) => w.next_frame(),
        }
    }
}

/// How the previous GIF frame leaves the canvas before the next one is drawn.
enum Dispose {
    Keep,
    Clear(Area),
    Restore(Area, Vec<u8>),
}

#[derive(Clone, Copy)]
struct Area {
    x: u32,
    y: u32,
    w: u32,
    h: u32,
}

pub struct GifFrames<'a> {
    dec: gif::Decoder<Cursor<&'a [u8]>>,
    canvas: RgbaImage,
    dispose: Dispose,
    deadline: Deadline,
}

/// A GIF decoder that skips unknown extension blocks, as browsers do.
pub(crate) fn gif_decoder(data: &[u8]) -> Result<gif::Decoder<Cursor<&[u8]>>, DecodeError> {
    let mut opts = gif::DecodeOptions::new();
    opts.set_color_output(gif::ColorOutput::RGBA);
    opts.allow_unknown_blocks(true);
    opts.set_memory_limit(gif::MemoryLimit::Bytes(
        std::num::NonZeroU64::new(MAX_DECODER_ALLOC).unwrap_or(std::num::NonZeroU64::MIN),
    ));
    opts.read_info(Cursor::new(data)).map_err(gif_corrupt)
}

/// The descriptor of a GIF frame, read before any of its pixels.
pub(crate) struct GifFrameHeader {
    left: u32,
    top: u32,
    width: u32,
    height: u32,
    interlaced: bool,
    dispose: gif::DisposalMethod,
    delay: u16,
}

impl GifFrameHeader {
    /// The next frame's descriptor; the rest of the current frame's data, if any was left
    /// unread, is skipped without being decompressed.
    pub(crate) fn next(
        dec: &mut gif::Decoder<Cursor<&[u8]>>,
    ) -> Result<Option<GifFrameHeader>, DecodeError> {
        Ok(dec
            .next_frame_info()
            .map_err(gif_corrupt)?
            .map(|f| GifFrameHeader {
                left: u32::from(f.left),
                top: u32::from(f.top),
                width: u32::from(f.width),
                height: u32::from(f.height),
                interlaced: f.interlaced,
                dispose: f.dispose,
                delay: f.delay,
            }))
    }

    /// The part of the frame on a `cw`×`ch` logical screen; the rest is clipped, as browsers
    /// do.
    fn area(&self, cw: u32, ch: u32) -> Area {
        let (x, y) = (self.left.min(cw), self.top.min(ch));
        Area {
            x,
            y,
            w: (self.left + self.width).min(cw).saturating_sub(x),
            h: (self.top + self.height).min(ch).saturating_sub(y),
        }
    }

    /// Reads the frame's rows onto `canvas`, clipped to it. A frame's declared size is the
    /// file's word (up to 65,535² pixels on a 1×1 screen), so memory is one row, never the
    /// frame; rows below the screen are never decompressed (an interlaced frame is read only
    /// up to its last visible row). `opaque_only` leaves the canvas where the frame is
    /// transparent (compositing over earlier frames).
    pub(crate) fn paint(
        &self,
        dec: &mut gif::Decoder<Cursor<&[u8]>>,
        canvas: &mut RgbaImage,
        opaque_only: bool,
        deadline: &Deadline,
    ) -> Result<(), DecodeError> {
        let (cw, ch) = canvas.dimensions();
        let area = self.area(cw, ch);
        if area.w == 0 || area.h == 0 {
            return Ok(());
        }
        let mut row = vec![0u8; self.width as usize * 4];
        let mut painted = 0;
        for (i, y) in interlaced_rows(self.height, self.interlaced).enumerate() {
            if painted == area.h {
                break;
            }
            if i % 64 == 63 {
                deadline.check().map_err(|_| DecodeError::Deadline)?;
            }
            // Data that ends early leaves the rest of the frame as it was, as browsers do.
            if !dec.fill_buffer(&mut row).map_err(gif_corrupt)? {
                break;
            }
            let sy = self.top + y;
            if sy >= ch {
                continue;
            }
            painted += 1;
            let skip = (area.x - self.left) as usize;
            for (x, p) in (area.x..area.x + area.w).zip(row[skip * 4..].chunks_exact(4)) {
                if !opaque_only || p[3] != 0 {
                    canvas.put_pixel(x, sy, image::Rgba([p[0], p[1], p[2], p[3]]));
                }
            }
        }
        Ok(())
    }
}

/// Frame row indices in the order a GIF stores them: top to bottom, or in the four
/// interlace passes (every 8th row from 0, every 8th from 4, every 4th from 2, every 2nd
/// from 1).
fn interlaced_rows(height: u32, interlaced: bool) -> impl Iterator<Item = u32> {
    let passes: &[(u32, u32)] = if interlaced {
        &[(0, 8), (4, 8), (2, 4), (1, 2)]
    } else {
        &[(0, 1)]
    };
    passes
        .iter()
        .flat_map(move |&(start, step)| (start..height).step_by(step as usize))
}

impl<'a> GifFrames<'a> {
    fn new(data: &'a [u8], info: &SourceInfo, deadline: Deadline) -> Result<Self, DecodeError> {
        Ok(GifFrames {
            dec: gif_decoder(data)?,
            canvas: RgbaImage::new(info.width, info.height),
            dispose: Dispose::Keep,
            deadline,
        })
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        match std::mem::replace(&mut self.dispose, Dispose::Keep) {
            Dispose::Keep => {}
            // Browsers clear to transparent, not to the (ignored) background colour.
            Dispose::Clear(a) => for_area(a, |x, y| self.canvas.put_pixel(x, y, [0; 4].into())),
            Dispose::Restore(a, saved) => {
                let mut px = saved.chunks_exact(4);
                for_area(a, |x, y| {
                    if let Some(p) = px.next() {
                        self.canvas
                            .put_pixel(x, y, image::Rgba([p[0], p[1], p[2], p[3]]));
                    }
                });
            }
        }
        let Some(frame) = GifFrameHeader::next(&mut self.dec)? else {
            return Ok(None);
        };
        let (cw, ch) = self.canvas.dimensions();
        let area = frame.area(cw, ch);
        self.dispose = match frame.dispose {
            gif::DisposalMethod::Background => Dispose::Clear(area),
            gif::DisposalMethod::Previous => {
                let mut saved = Vec::with_capacity((area.w * area.h * 4) as usize);
                for_area(area, |x, y| {
                    saved.extend_from_slice(&self.canvas.get_pixel(x, y).0)
                });
                Dispose::Restore(area, saved)
            }
            _ => Dispose::Keep,
        };
        frame.paint(&mut self.dec, &mut self.canvas, true, &self.deadline)?;
        Ok(Some(Frame {
            image: self.canvas.clone(),
            delay_ms: u32::from(frame.delay) * 10,
        }))
    }
}

fn for_area(a: Area, mut f: impl FnMut(u32, u32)) {
    for y in a.y..a.y + a.h {
        for x in a.x..a.x + a.w {
            f(x, y);
        }
    }
}

fn gif_corrupt(e: gif::DecodingError) -> DecodeError {
    DecodeError::Corrupt(Format::Gif, e.to_string())
}

/// libwebp's animation decoder, which composites (blending, disposal) itself.
pub struct WebpFrames<'a> {
    dec: *mut libwebp_sys::WebPAnimDecoder,
    width: u32,
    height: u32,
    last_ts: i32,
    // The decoder reads the caller's bytes until it is deleted.
    _data: std::marker::PhantomData<&'a [u8]>,
}

impl<'a> WebpFrames<'a> {
    pub fn new(data: &'a [u8]) -> Result<Self, DecodeError> {
        use libwebp_sys as sys;
        let corrupt = || DecodeError::Corrupt(Format::Webp, "undecodable animation".into());
        // SAFETY: options are initialised by libwebp before use; `data` outlives the decoder
        // (lifetime 'a on the struct), which is deleted in Drop; a null decoder is never used.
        unsafe {
            let mut opts: sys::WebPAnimDecoderOptions = std::mem::zeroed();
            if sys::WebPAnimDecoderOptionsInit(&mut opts) == 0 {
                return Err(corrupt());
            }
            opts.color_mode = sys::WEBP_CSP_MODE::MODE_RGBA;
            opts.use_threads = 0;
            let wd = sys::WebPData {
                bytes: data.as_ptr(),
                size: data.len(),
            };
            let dec = sys::WebPAnimDecoderNew(&wd, &opts);
            if dec.is_null() {
                return Err(corrupt());
            }
            let mut ai = sys::WebPAnimInfo::default();
            let mut frames = WebpFrames {
                dec,
                width: 0,
                height: 0,
                last_ts: 0,
                _data: std::marker::PhantomData,
            };
            if sys::WebPAnimDecoderGetInfo(dec, &mut ai) == 0 {
                return Err(corrupt());
            }
            frames.width = ai.canvas_width;
            frames.height = ai.canvas_height;
            Ok(frames)
        }
    }

    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        use libwebp_sys as sys;
        // SAFETY: `dec` is live (deleted only in Drop); the returned buffer belongs to the
        // decoder, holds canvas_width × canvas_height RGBA pixels and is copied out before the
        // next call.
        unsafe {
            if sys::WebPAnimDecoderHasMoreFrames(self.dec) == 0 {
                return Ok(None);
            }
            let mut buf: *mut u8 = std::ptr::null_mut();
            let mut ts = 0;
            if sys::WebPAnimDecoderGetNext(self.dec, &mut buf, &mut ts) == 0 || buf.is_null() {
                return Err(DecodeError::Corrupt(
                    Format::Webp,
                    "undecodable animation frame".into(),
                ));
            }
            let len = self.width as usize * self.height as usize * 4;
            let px = std::slice::from_raw_parts(buf, len).to_vec();
            let delay = ts.saturating_sub(self.last_ts).max(0) as u32;
            self.last_ts = ts;
            Ok(
                RgbaImage::from_raw(self.width, self.height, px).map(|image| Frame {
                    image,
                    delay_ms: delay,
                }),
            )
        }
    }
}

impl Drop for WebpFrames<'_> {
    fn drop(&mut self) {
        // SAFETY: created by WebPAnimDecoderNew, deleted once.
        unsafe { libwebp_sys::WebPAnimDecoderDelete(self.dec) }
    }
}

/// Source formats whose animations are kept (animated AVIF gives its first frame).
pub fn can_read(format: Format) -> bool {
    matches!(format, Format::Gif | Format::Webp)
}

/// Output formats that keep an animation.
pub fn can_write(format: Format) -> bool {
    matches!(format, Format::Gif | Format::Webp)
}

/// Settings of an animated result.
#[derive(Debug, Clone, Copy)]
pub struct Settings<'a> {
    pub format: Format,
    pub quality: u8,
    pub encoder: &'a EncoderConfig,
    /// As [`SourceInfo::plays`]: 0 = forever.
    pub plays: u32,
    /// Frames may be partly transparent (otherwise every pixel is drawn opaque).
    pub transparent: bool,
}

/// A streaming animated encoder.
pub enum Writer {
    Gif(Box<GifWriter>),
    Webp(WebpWriter),
}

impl Writer {
    pub fn new(s: Settings<'_>, width: u32, height: u32) -> Result<Self, EncodeError> {
        match s.format {
            Format::Gif => Ok(Writer::Gif(Box::new(GifWriter::new(s, width, height)?))),
            Format::Webp => Ok(Writer::Webp(WebpWriter::new(s, width, height)?)),
            other => Err(EncodeError::Unsupported(other)),
        }
    }

    /// Adds a frame shown for `delay_ms`. Every frame must have the first frame's size.
    pub fn add(&mut self, img: &DynamicImage, delay_ms: u32) -> Result<(), EncodeError> {
        match self {
            Writer::Gif(g) => g.add(img, delay_ms),
            Writer::Webp(w) => w.add(img, delay_ms),
        }
    }

    pub fn finish(self) -> Result<Vec<u8>, EncodeError> {
        match self {
            Writer::Gif(g) => g.finish(),
            Writer::Webp(w) => w.finish(),
        }
    }
}

/// NeuQuant speed for GIF frames (1 best .. 30 fastest); 10 is image's still-GIF default.
const GIF_QUANT_SPEED: i32 = 10;

/// GIF output. Opaque animations are written as the bounding box of what changed since the
/// previous frame (disposal "keep"); transparent ones as whole frames cleared between
/// frames, since a sub-rectangle cannot make a pixel transparent again. Consecutive
/// identical frames are merged into one with the summed delay.
pub struct GifWriter {
    enc: gif::Encoder<Vec<u8>>,
    transparent: bool,
    /// What the viewer shows after the pending frame.
    shown: Option<RgbaImage>,
    pending: Option<gif::Frame<'static>>,
}

impl GifWriter {
    fn new(s: Settings<'_>, width: u32, height: u32) -> Result<Self, EncodeError> {
        let (w, h) = (side(width)?, side(height)?);
        let mut enc = gif::Encoder::new(Vec::new(), w, h, &[]).map_err(gif_fail)?;
        match s.plays {
            // No NETSCAPE block: browsers play once.
            1 => {}
            0 => enc.set_repeat(gif::Repeat::Infinite).map_err(gif_fail)?,
            n => enc
                .set_repeat(gif::Repeat::Finite(
                    u16::try_from(n - 1).unwrap_or(u16::MAX),
                ))
                .map_err(gif_fail)?,
        }
        Ok(GifWriter {
            enc,
            transparent: s.transparent,
            shown: None,
            pending: None,
        })
    }

    fn add(&mut self, img: &DynamicImage, delay_ms: u32) -> Result<(), EncodeError> {
        let mut rgba = img.to_rgba8();
        if !self.transparent {
            // Flatten stray partial alpha onto white: every output pixel is drawn.
            for p in rgba.pixels_mut() {
                if p[3] != 255 {
                    let a = u16::from(p[3]);
                    for c in 0..3 {
                        p[c] = ((u16::from(p[c]) * a + 255 * (255 - a) + 127) / 255) as u8;
                    }
                    p[3] = 255;
                }
            }
        }
        let delay_cs = u16::try_from(delay_ms.div_ceil(10)).unwrap_or(u16::MAX);
        let changed = match &self.shown {
            None => Some((0, 0, rgba.width(), rgba.height())),
            Some(prev) if self.transparent => {
                (prev != &rgba).then_some((0, 0, rgba.width(), rgba.height()))
            }
            Some(prev) => changed_box(prev, &rgba),
        };
        let Some((x, y, w, h)) = changed else {
            if let Some(p) = &mut self.pending {
                p.delay = p.delay.saturating_add(delay_cs);
            }
            return Ok(());
        };
        self.flush()?;
        let mut sub: Vec<u8> = Vec::with_capacity((w * h * 4) as usize);
        for row in y..y + h {
            let start = ((row * rgba.width() + x) * 4) as usize;
            sub.extend_from_slice(&rgba.as_raw()[start..start + (w * 4) as usize]);
        }
        let mut frame = gif::Frame::from_rgba_speed(side(w)?, side(h)?, &mut sub, GIF_QUANT_SPEED);
        frame.left = side(x)?;
        frame.top = side(y)?;
        frame.delay = delay_cs;
        frame.dispose = if self.transparent {
            gif::DisposalMethod::Background
        } else {
            gif::DisposalMethod::Keep
        };
        self.pending = Some(frame);
        self.shown = Some(rgba);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), EncodeError> {
        if let Some(f) = self.pending.take() {
            self.enc.write_frame(&f).map_err(gif_fail)?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<u8>, EncodeError> {
        self.flush()?;
        self.enc.into_inner().map_err(gif_fail)
    }
}

/// The bounding box (x, y, w, h) of the pixels that differ, `None` when none do.
fn changed_box(a: &RgbaImage, b: &RgbaImage) -> Option<(u32, u32, u32, u32)> {
    let (w, h) = b.dimensions();
    let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
    for (y, (ra, rb)) in a
        .as_raw()
        .chunks_exact((w * 4) as usize)
        .zip(b.as_raw().chunks_exact((w * 4) as usize))
        .enumerate()
    {
        if ra == rb {
            continue;
        }
        let y = y as u32;
        let first = ra
            .chunks_exact(4)
            .zip(rb.chunks_exact(4))
            .position(|(p, q)| p != q);
        let last = ra
            .chunks_exact(4)
            .zip(rb.chunks_exact(4))
            .rposition(|(p, q)| p != q);
        if let (Some(f), Some(l)) = (first, last) {
            x0 = x0.min(f as u32);
            x1 = x1.max(l as u32 + 1);
            y0 = y0.min(y);
            y1 = y + 1;
        }
    }
    (x1 > x0).then(|| (x0, y0, x1 - x0, y1 - y0))
}

fn side(v: u32) -> Result<u16, EncodeError> {
    u16::try_from(v).map_err(|_| EncodeError::Failed(Format::Gif, format!("{v} px is too large")))
}

fn gif_fail(e: gif::EncodingError) -> EncodeError {
    EncodeError::Failed(Format::Gif, e.to_string())
}

/// Animated WebP through libwebp's WebPAnimEncoder, which picks sub-rectangles, blending and
/// keyframes itself.
pub struct WebpWriter {
    enc: *mut libwebp_sys::WebPAnimEncoder,
    config: libwebp_sys::WebPConfig,
    width: u32,
    height: u32,
    timestamp: i32,
}

// SAFETY: the encoder is owned by this value alone and libwebp keeps no thread affinity.
unsafe impl Send for WebpWriter {}

impl WebpWriter {
    fn new(s: Settings<'_>, width: u32, height: u32) -> Result<Self, EncodeError> {
        use libwebp_sys as sys;
        let fail = |m: &str| EncodeError::Failed(Format::Webp, m.to_string());
        let mut config = sys::WebPConfig::new().map_err(|_| fail("config"))?;
        config.quality = f32::from(s.quality.clamp(1, 100));
        config.method = i32::from(s.encoder.webp_effort.min(6));
        config.lossless = i32::from(s.encoder.webp_mode == WebpMode::Lossless);
        let (w, h) = (
            i32::try_from(width).map_err(|_| fail("width"))?,
            i32::try_from(height).map_err(|_| fail("height"))?,
        );
        // SAFETY: options initialised by libwebp; the encoder is deleted in Drop.
        let enc = unsafe {
            let mut opts: sys::WebPAnimEncoderOptions = std::mem::zeroed();
            if sys::WebPAnimEncoderOptionsInitInternal(&mut opts, sys::WEBP_MUX_ABI_VERSION as i32)
                == 0
            {
                return Err(fail("options"));
            }
            opts.anim_params.loop_count = i32::try_from(s.plays).unwrap_or(0);
            sys::WebPAnimEncoderNewInternal(w, h, &opts, sys::WEBP_MUX_ABI_VERSION as i32)
        };
        if enc.is_null() {
            return Err(fail("encoder"));
        }
        Ok(WebpWriter {
            enc,
            config,
            width,
            height,
            timestamp: 0,
        })
    }

    fn add(&mut self, img: &DynamicImage, delay_ms: u32) -> Result<(), EncodeError> {
        use libwebp_sys as sys;
        let fail = |m: &str| EncodeError::Failed(Format::Webp, m.to_string());
        if (img.width(), img.height()) != (self.width, self.height) {
            return Err(fail("frame size differs from the first frame"));
        }
        let rgba = img.to_rgba8();
        let mut pic = sys::WebPPicture::new().map_err(|_| fail("picture"))?;
        pic.use_argb = 1;
        pic.width = self.width as i32;
        pic.height = self.height as i32;
        // SAFETY: the picture imports (copies) `rgba`, whose stride is width × 4; the encoder
        // copies what it needs from the picture, which is freed on every path.
        let ok = unsafe {
            let imported =
                sys::WebPPictureImportRGBA(&mut pic, rgba.as_ptr(), self.width as i32 * 4);
            let added = imported != 0
                && sys::WebPAnimEncoderAdd(self.enc, &mut pic, self.timestamp, &self.config) != 0;
            sys::WebPPictureFree(&mut pic);
            added
        };
        if !ok {
            return Err(fail("frame"));
        }
        self.timestamp = self
            .timestamp
            .saturating_add(i32::try_from(delay_ms).unwrap_or(i32::MAX));
        Ok(())
    }

    fn finish(self) -> Result<Vec<u8>, EncodeError> {
        use libwebp_sys as sys;
        // SAFETY: a null frame marks the end (its timestamp sets the last frame's duration);
        // the assembled buffer is libwebp's, copied out then cleared.
        unsafe {
            let mut out = sys::WebPData {
                bytes: std::ptr::null(),
                size: 0,
            };
            let ok = sys::WebPAnimEncoderAdd(
                self.enc,
                std::ptr::null_mut(),
                self.timestamp,
                std::ptr::null(),
            ) != 0
                && sys::WebPAnimEncoderAssemble(self.enc, &mut out) != 0;
            if !ok || out.bytes.is_null() {
                return Err(EncodeError::Failed(Format::Webp, "assembling".into()));
            }
            let bytes = std::slice::from_raw_parts(out.bytes, out.size).to_vec();
            sys::WebPDataClear(&mut out);
            Ok(bytes)
        }
    }
}

impl Drop for WebpWriter {
    fn drop(&mut self) {
        // SAFETY: created by WebPAnimEncoderNew, deleted once.
        unsafe { libwebp_sys::WebPAnimEncoderDelete(self.enc) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_box_is_tight() {
        let a = RgbaImage::new(10, 8);
        let mut b = a.clone();
        assert_eq!(changed_box(&a, &b), None);
        b.put_pixel(3, 2, image::Rgba([1, 0, 0, 0]));
        b.put_pixel(6, 5, image::Rgba([0, 0, 1, 0]));
        assert_eq!(changed_box(&a, &b), Some((3, 2, 4, 4)));
    }
}
