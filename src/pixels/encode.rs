//! Encoders: 8-bit pixels → bytes of the output format. JPEG through mozjpeg (trellis
//! quantisation and optimised progressive scans by default: the smallest files at equal
//! quality), WebP through libwebp, PNG/GIF/BMP/TIFF/ICO through the `image` crate. Metadata is
//! never copied unless the caller passes it in.

use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};

use image::{DynamicImage, ExtendedColorType, ImageEncoder};

use super::deadline::Deadline;
pub use super::types::{
    DEFAULT_AVIF_SPEED, EncodeError, EncoderConfig, JpegMode, Metadata, WebpMode,
};
use crate::format::Format;

/// Rows handed to a row-fed encoder between deadline checks.
const ROWS_PER_CHECK: usize = 64;

/// Whether this build can write `format`.
pub fn can_write(format: Format) -> bool {
    matches!(
        format,
        Format::Jpeg
            | Format::Png
            | Format::Webp
            | Format::Avif
            | Format::Gif
            | Format::Bmp
            | Format::Tiff
            | Format::Ico
    )
}

/// Encodes `img` as `format` at `quality` (1..=100; ignored by lossless formats). JPEG and
/// PNG are fed in row bands and WebP reports progress, each checking `deadline`; AVIF (one
/// libaom call) is refused up front when its measured cost would not fit in the time left.
pub fn encode(
    img: &DynamicImage,
    format: Format,
    quality: u8,
    cfg: &EncoderConfig,
    meta: Metadata<'_>,
    deadline: &Deadline,
) -> Result<Vec<u8>, EncodeError> {
    deadline.check()?;
    match format {
        Format::Jpeg => encode_jpeg(img, quality, cfg, meta, deadline),
        Format::Webp => encode_webp(img, quality, cfg, meta, deadline),
        Format::Png => encode_png(img, meta, deadline),
        Format::Avif => {
            if let Some(left) = deadline.remaining() {
                let cost = super::avif::encode_cost(img.width(), img.height(), cfg.avif_speed);
                if cost > left {
                    return Err(EncodeError::Deadline);
                }
            }
            super::avif::encode(img, quality, cfg.avif_speed, meta)
        }
        Format::Gif | Format::Bmp | Format::Tiff | Format::Ico => encode_with_image(img, format),
        other => Err(EncodeError::Unsupported(other)),
    }
}

fn encode_jpeg(
    img: &DynamicImage,
    quality: u8,
    cfg: &EncoderConfig,
    meta: Metadata<'_>,
    deadline: &Deadline,
) -> Result<Vec<u8>, EncodeError> {
    use mozjpeg::{ColorSpace, Compress, Marker};
    let gray;
    let rgb;
    let (cs, data) = match img {
        DynamicImage::ImageLuma8(g) => (ColorSpace::JCS_GRAYSCALE, g.as_raw().as_slice()),
        DynamicImage::ImageLumaA8(_) => {
            gray = img.to_luma8();
            (ColorSpace::JCS_GRAYSCALE, gray.as_raw().as_slice())
        }
        DynamicImage::ImageRgb8(i) => (ColorSpace::JCS_RGB, i.as_raw().as_slice()),
        _ => {
            rgb = img.to_rgb8();
            (ColorSpace::JCS_RGB, rgb.as_raw().as_slice())
        }
    };
    let (w, h) = (img.width() as usize, img.height() as usize);
    let row_bytes = data.len() / h.max(1);
    let mut expired = false;
    let result = catch_unwind(AssertUnwindSafe(|| -> std::io::Result<Vec<u8>> {
        let mut c = Compress::new(cs);
        match cfg.jpeg_mode {
            // mozjpeg's defaults search progressive scan scripts; without that search the
            // output is baseline.
            JpegMode::Small if !cfg.jpeg_progressive => c.set_optimize_scans(false),
            JpegMode::Small => {}
            JpegMode::Fast => {
                c.set_fastest_defaults();
                c.set_optimize_coding(true);
                if cfg.jpeg_progressive {
                    c.set_progressive_mode();
                }
            }
        }
        c.set_size(w, h);
        c.set_quality(f32::from(quality.clamp(1, 100)));
        let mut s = c.start_compress(Vec::with_capacity(w * h / 8 + 1024))?;
        if let Some(exif) = meta.exif {
            if exif.len() + 6 <= 65533 {
                let mut seg = b"Exif\0\0".to_vec();
                seg.extend_from_slice(exif);
                s.write_marker(Marker::APP(1), &seg);
            }
        }
        if let Some(icc) = meta.icc {
            s.write_icc_profile(icc);
        }
        // In bands: DCT and trellis quantisation happen as rows arrive, so the deadline is
        // seen while most of the work is still ahead.
        for band in data.chunks((ROWS_PER_CHECK * row_bytes).max(1)) {
            if deadline.check().is_err() {
                expired = true;
                return Err(std::io::ErrorKind::TimedOut.into());
            }
            s.write_scanlines(band)?;
        }
        s.finish()
    }));
    if expired {
        return Err(EncodeError::Deadline);
    }
    match result {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(EncodeError::Failed(Format::Jpeg, e.to_string())),
        Err(_) => Err(EncodeError::Failed(Format::Jpeg, "libjpeg error".into())),
    }
}

fn encode_webp(
    img: &DynamicImage,
    quality: u8,
    cfg: &EncoderConfig,
    meta: Metadata<'_>,
    deadline: &Deadline,
) -> Result<Vec<u8>, EncodeError> {
    let fail = |m: String| EncodeError::Failed(Format::Webp, m);
    let rgba;
    let rgb;
    let (px, alpha) = if img.color().has_alpha() {
        rgba = img.to_rgba8();
        (rgba.as_raw().as_slice(), true)
    } else {
        rgb = img.to_rgb8();
        (rgb.as_raw().as_slice(), false)
    };
    let mut wc = webp::WebPConfig::new().map_err(|_| fail("config".into()))?;
    wc.quality = f32::from(quality.clamp(1, 100));
    wc.method = i32::from(cfg.webp_effort.min(6));
    wc.lossless = i32::from(cfg.webp_mode == WebpMode::Lossless);
    let bytes = webp_encode(px, alpha, img.width(), img.height(), &wc, deadline)?;
    let chunks: Vec<(&std::ffi::CStr, &[u8])> = [(c"ICCP", meta.icc), (c"EXIF", meta.exif)]
        .into_iter()
        .filter_map(|(name, data)| Some((name, data?)))
        .collect();
    if chunks.is_empty() {
        return Ok(bytes);
    }
    webp_with_chunks(&bytes, &chunks).ok_or_else(|| fail("metadata muxing".into()))
}

/// libwebp's progress hook: 0 (abort) once the deadline in `user_data` has passed.
unsafe extern "C" fn webp_progress(_percent: i32, picture: *const libwebp_sys::WebPPicture) -> i32 {
    // SAFETY: `user_data` is set to a `Deadline` that outlives the WebPEncode call.
    let deadline = unsafe { &*((*picture).user_data as *const Deadline) };
    i32::from(deadline.check().is_ok())
}

/// One still WebP from 8-bit RGB(A) with `config`, stopping when `deadline` passes. The
/// same calls the `webp` crate makes, plus the progress hook it does not expose.
pub(crate) fn webp_encode(
    px: &[u8],
    alpha: bool,
    width: u32,
    height: u32,
    config: &libwebp_sys::WebPConfig,
    deadline: &Deadline,
) -> Result<Vec<u8>, EncodeError> {
    use libwebp_sys as sys;
    let fail = |m: String| EncodeError::Failed(Format::Webp, m);
    let channels = if alpha { 4 } else { 3 };
    if px.len() < width as usize * height as usize * channels {
        return Err(fail("short pixel buffer".into()));
    }
    // SAFETY: the picture is initialised by WebPPictureInit, imports copy `px` (whose length
    // was checked above), the memory writer collects the output, and both are freed on every
    // path; `deadline` outlives WebPEncode, the only call that reads `user_data`.
    unsafe {
        if sys::WebPValidateConfig(config) == 0 {
            return Err(fail("invalid configuration".into()));
        }
        let mut picture: sys::WebPPicture = std::mem::zeroed();
        if !sys::WebPPictureInit(&mut picture) {
            return Err(fail("picture init".into()));
        }
        picture.use_argb = 1;
        picture.width = width as i32;
        picture.height = height as i32;
        let imported = if alpha {
            sys::WebPPictureImportRGBA(&mut picture, px.as_ptr(), width as i32 * 4)
        } else {
            sys::WebPPictureImportRGB(&mut picture, px.as_ptr(), width as i32 * 3)
        };
        if imported == 0 {
            sys::WebPPictureFree(&mut picture);
            return Err(fail("out of memory".into()));
        }
        let mut writer: sys::WebPMemoryWriter = std::mem::zeroed();
        sys::WebPMemoryWriterInit(&mut writer);
        picture.writer = Some(sys::WebPMemoryWrite);
        picture.custom_ptr = (&mut writer as *mut sys::WebPMemoryWriter).cast();
        picture.progress_hook = Some(webp_progress);
        picture.user_data = (deadline as *const Deadline).cast_mut().cast();
        let ok = sys::WebPEncode(config, &mut picture) != 0;
        let code = picture.error_code;
        let out = if ok {
            Ok(std::slice::from_raw_parts(writer.mem, writer.size).to_vec())
        } else if code == sys::WebPEncodingError::VP8_ENC_ERROR_USER_ABORT {
            Err(EncodeError::Deadline)
        } else {
            Err(fail(format!("{code:?}")))
        };
        sys::WebPMemoryWriterClear(&mut writer);
        sys::WebPPictureFree(&mut picture);
        out
    }
}

/// Adds ICCP/EXIF chunks (libwebp's mux builds the VP8X header they need).
fn webp_with_chunks(image: &[u8], chunks: &[(&std::ffi::CStr, &[u8])]) -> Option<Vec<u8>> {
    use libwebp_sys as sys;
    // SAFETY: the mux copies both inputs (copy_data = 1); the assembled buffer is libwebp-owned
    // and freed with WebPDataClear after copying it out; the mux is deleted on every path.
    unsafe {
        let mux = sys::WebPMuxNew();
        if mux.is_null() {
            return None;
        }
        let img = sys::WebPData {
            bytes: image.as_ptr(),
            size: image.len(),
        };
        let mut out = None;
        let mut ok = sys::WebPMuxSetImage(mux, &img, 1) == sys::WebPMuxError::WEBP_MUX_OK;
        for (name, data) in chunks {
            let d = sys::WebPData {
                bytes: data.as_ptr(),
                size: data.len(),
            };
            ok = ok
                && sys::WebPMuxSetChunk(mux, name.as_ptr(), &d, 1)
                    == sys::WebPMuxError::WEBP_MUX_OK;
        }
        if ok {
            let mut asm = sys::WebPData {
                bytes: std::ptr::null(),
                size: 0,
            };
            if sys::WebPMuxAssemble(mux, &mut asm) == sys::WebPMuxError::WEBP_MUX_OK {
                out = Some(std::slice::from_raw_parts(asm.bytes, asm.size).to_vec());
                sys::WebPDataClear(&mut asm);
            }
        }
        sys::WebPMuxDelete(mux);
        out
    }
}

fn color_type(img: &DynamicImage) -> ExtendedColorType {
    img.color().into()
}

/// PNG through the `png` crate directly (the settings `image`'s PngEncoder uses by default:
/// balanced compression, adaptive filters), rows streamed in bands between deadline checks.
fn encode_png(
    img: &DynamicImage,
    meta: Metadata<'_>,
    deadline: &Deadline,
) -> Result<Vec<u8>, EncodeError> {
    use std::io::Write;
    let fail = |e: &dyn std::fmt::Display| EncodeError::Failed(Format::Png, e.to_string());
    let rgba;
    let (data, color) = match img {
        DynamicImage::ImageLuma8(b) => (b.as_raw().as_slice(), png::ColorType::Grayscale),
        DynamicImage::ImageLumaA8(b) => (b.as_raw().as_slice(), png::ColorType::GrayscaleAlpha),
        DynamicImage::ImageRgb8(b) => (b.as_raw().as_slice(), png::ColorType::Rgb),
        DynamicImage::ImageRgba8(b) => (b.as_raw().as_slice(), png::ColorType::Rgba),
        other => {
            rgba = other.to_rgba8();
            (rgba.as_raw().as_slice(), png::ColorType::Rgba)
        }
    };
    let (w, h) = (img.width(), img.height());
    let mut info = png::Info::with_size(w, h);
    if let Some(icc) = meta.icc {
        info.icc_profile = Some(std::borrow::Cow::Borrowed(icc));
    }
    let mut out = Vec::new();
    let mut enc = png::Encoder::with_info(&mut out, info).map_err(|e| fail(&e))?;
    enc.set_color(color);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Balanced);
    enc.set_filter(png::Filter::Adaptive);
    let mut writer = enc.write_header().map_err(|e| fail(&e))?;
    let mut stream = writer.stream_writer().map_err(|e| fail(&e))?;
    let row_bytes = data.len() / (h as usize).max(1);
    for band in data.chunks((ROWS_PER_CHECK * row_bytes).max(1)) {
        deadline.check()?;
        stream.write_all(band).map_err(|e| fail(&e))?;
    }
    stream.finish().map_err(|e| fail(&e))?;
    writer.finish().map_err(|e| fail(&e))?;
    Ok(out)
}

fn encode_with_image(img: &DynamicImage, format: Format) -> Result<Vec<u8>, EncodeError> {
    let fail = |e: image::ImageError| EncodeError::Failed(format, e.to_string());
    let mut out = Cursor::new(Vec::new());
    match format {
        Format::Gif => {
            let rgba = img.to_rgba8();
            let mut enc = image::codecs::gif::GifEncoder::new_with_speed(&mut out, 10);
            enc.encode_frame(image::Frame::new(rgba)).map_err(fail)?;
        }
        Format::Bmp => {
            let rgb;
            let (bytes, ct) = if matches!(img, DynamicImage::ImageLuma8(_)) {
                (img.as_bytes(), ExtendedColorType::L8)
            } else {
                rgb = img.to_rgb8();
                (rgb.as_raw().as_slice(), ExtendedColorType::Rgb8)
            };
            image::codecs::bmp::BmpEncoder::new(&mut out)
                .write_image(bytes, img.width(), img.height(), ct)
                .map_err(fail)?;
        }
        Format::Tiff => {
            // The TIFF encoder has no grey+alpha layout.
            let rgba;
            let (bytes, ct) = if matches!(img, DynamicImage::ImageLumaA8(_)) {
                rgba = img.to_rgba8();
                (rgba.as_raw().as_slice(), ExtendedColorType::Rgba8)
            } else {
                (img.as_bytes(), color_type(img))
            };
            image::codecs::tiff::TiffEncoder::new(&mut out)
                .write_image(bytes, img.width(), img.height(), ct)
                .map_err(fail)?;
        }
        Format::Ico => {
            let rgba = img.to_rgba8();
            image::codecs::ico::IcoEncoder::new(&mut out)
                .write_image(
                    rgba.as_raw(),
                    img.width(),
                    img.height(),
                    ExtendedColorType::Rgba8,
                )
                .map_err(fail)?;
        }
        other => return Err(EncodeError::Unsupported(other)),
    }
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// mozjpeg and libjpeg-turbo both export the libjpeg API; if a second libjpeg were linked,
    /// the linker could silently keep the other one and trellis quantisation would vanish
    /// (mozjpeg's `Small` output then comes out byte-identical to `Fast`). A real photo at
    /// 800 px must come out clearly smaller with trellis (measured: 34.8 KB vs 41.6 KB).
    #[test]
    fn the_linked_libjpeg_is_mozjpeg() {
        let src = std::fs::read(crate::test_support::fixture(
            "photos/lomiri16_seeding_baseline.jpg",
        ))
        .unwrap();
        let info = crate::pixels::probe::probe(&src).unwrap();
        let img = crate::pixels::decode::decode(&src, &info, 4, &Deadline::none())
            .unwrap()
            .image;
        let img = img.resize(800, 800, image::imageops::FilterType::Triangle);
        let size = |mode| {
            let cfg = EncoderConfig {
                jpeg_mode: mode,
                ..EncoderConfig::default()
            };
            encode(
                &img,
                Format::Jpeg,
                80,
                &cfg,
                Metadata::default(),
                &Deadline::none(),
            )
            .unwrap()
            .len()
        };
        let (small, fast) = (size(JpegMode::Small), size(JpegMode::Fast));
        assert!(
            (small as f64) < fast as f64 * 0.92,
            "trellis output {small} B is not clearly below baseline {fast} B"
        );
    }
}
