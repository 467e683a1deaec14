//! Decoders: source bytes → 8-bit pixels (`DynamicImage` in L8, LA8, RGB8 or RGBA8) plus the
//! metadata the encoder may carry over. JPEG goes through libjpeg (mozjpeg's build) with
//! DCT-domain downscaling; PNG, GIF, BMP, TIFF and ICO through the `image` crate with allocation
//! limits; WebP through libwebp. Callers must have checked the header limits (`probe`) first;
//! the limits here are a second line of defence, not the first.

use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};

use image::{DynamicImage, ImageDecoder, ImageFormat};

use super::deadline::Deadline;
use super::metadata::{assemble_icc, webp_exif, webp_icc};
pub use super::types::{DecodeError, Decoded};
use super::types::{MAX_DECODER_ALLOC, SourceInfo};
use crate::format::Format;

/// Picks libjpeg's DCT scale denominator (1, 2, 4 or 8) for an overall shrink factor.
///
/// libjpeg's scaled IDCT is a real frequency-domain downscale, not a block average, but at 1/8
/// it keeps only the DC coefficient. Leaving at least a factor of `margin` for the Lanczos pass
/// keeps edges as sharp as a full decode would give (see `benches/pipeline.rs` for figures).
pub fn jpeg_scale_denominator(shrink: f64, margin: f64) -> u32 {
    [8u32, 4, 2]
        .into_iter()
        .find(|&d| shrink >= f64::from(d) * margin)
        .unwrap_or(1)
}

/// Decodes `data` whose header facts are `info`. `jpeg_denominator` asks the JPEG decoder for
/// a 1/n-scaled result. JPEG rows are read in bands between deadline checks; the other
/// decoders run as one call, bounded by the header-checked size.
pub fn decode(
    data: &[u8],
    info: &SourceInfo,
    jpeg_denominator: u32,
    deadline: &Deadline,
) -> Result<Decoded, DecodeError> {
    match info.format {
        Format::Jpeg => decode_jpeg(data, info, jpeg_denominator, deadline),
        Format::Webp => decode_webp(data, info),
        Format::Avif => super::avif::decode(data, info, 0),
        Format::Png => decode_with_image(data, info, ImageFormat::Png),
        Format::Gif => decode_gif(data, info, deadline),
        Format::Bmp => decode_with_image(data, info, ImageFormat::Bmp),
        Format::Tiff => decode_with_image(data, info, ImageFormat::Tiff),
        Format::Ico => decode_with_image(data, info, ImageFormat::Ico),
        other => Err(DecodeError::Unsupported(other)),
    }
}

/// Reduces any decoded sample layout to the four 8-bit layouts the pipeline works in.
pub fn to_8bit(img: DynamicImage) -> DynamicImage {
    match img {
        DynamicImage::ImageLuma8(_)
        | DynamicImage::ImageLumaA8(_)
        | DynamicImage::ImageRgb8(_)
        | DynamicImage::ImageRgba8(_) => img,
        DynamicImage::ImageLuma16(_) => DynamicImage::ImageLuma8(img.to_luma8()),
        DynamicImage::ImageLumaA16(_) => DynamicImage::ImageLumaA8(img.to_luma_alpha8()),
        ref i if i.color().has_alpha() => DynamicImage::ImageRgba8(img.to_rgba8()),
        _ => DynamicImage::ImageRgb8(img.to_rgb8()),
    }
}

/// [`decode_image_crate`] with a panic inside a third-party decoder turned into a corrupt
/// image (hostile input reaching a library bug is the input's fault as far as the client
/// is concerned), logged so the bug can be reported.
fn decode_with_image(
    data: &[u8],
    info: &SourceInfo,
    format: ImageFormat,
) -> Result<Decoded, DecodeError> {
    catch_unwind(AssertUnwindSafe(|| decode_image_crate(data, info, format))).unwrap_or_else(
        |panic| {
            let msg = panic_message(&panic);
            tracing::warn!(format = %info.format, panic = %msg, "decoder panicked: refused as corrupt");
            Err(DecodeError::Corrupt(info.format, format!("decoder failure: {msg}")))
        },
    )
}

fn decode_image_crate(
    data: &[u8],
    info: &SourceInfo,
    format: ImageFormat,
) -> Result<Decoded, DecodeError> {
    let corrupt = |e: image::ImageError| DecodeError::Corrupt(info.format, e.to_string());
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_DECODER_ALLOC);
    // The header was checked against our limits; a decoder that finds a different size
    // (a lying container) is refused rather than trusted.
    limits.max_image_width = Some(info.width.max(1));
    limits.max_image_height = Some(info.height.max(1));
    let data = if format == ImageFormat::Png {
        super::metadata::png_within_limits(data)
    } else {
        std::borrow::Cow::Borrowed(data)
    };
    let mut reader = image::ImageReader::with_format(Cursor::new(&data[..]), format);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(corrupt)?;
    let icc = super::metadata::bounded_icc(decoder.icc_profile().ok().flatten());
    let exif = super::metadata::bounded_exif(decoder.exif_metadata().ok().flatten());
    let image = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    Ok(Decoded {
        image: to_8bit(image),
        icc,
        exif,
    })
}

/// Reads every scanline of a started decompression into one buffer, `ROWS` at a time with a
/// deadline check in between; `Ok(None)` when the deadline passed.
fn read_rows<R>(
    s: &mut mozjpeg::decompress::DecompressStarted<R>,
    channels: usize,
    deadline: &Deadline,
) -> std::io::Result<Option<Vec<u8>>> {
    const ROWS: usize = 64;
    let row = s.width() * channels;
    let mut px = Vec::new();
    px.try_reserve_exact(row * s.height())
        .map_err(|_| std::io::ErrorKind::OutOfMemory)?;
    px.resize(row * s.height(), 0);
    for band in px.chunks_mut((ROWS * row).max(1)) {
        if deadline.check().is_err() {
            return Ok(None);
        }
        s.read_scanlines_into::<u8>(band)?;
    }
    Ok(Some(px))
}

fn decode_jpeg(
    data: &[u8],
    info: &SourceInfo,
    denominator: u32,
    deadline: &Deadline,
) -> Result<Decoded, DecodeError> {
    use mozjpeg::{ColorSpace, Marker};
    let denominator = match denominator {
        2 | 4 | 8 => denominator,
        _ => 1,
    };
    let cmyk = info.cmyk;
    let adobe = info.adobe;
    TRUNCATED_SCAN.set(false);
    let mut expired = false;
    // Fatal libjpeg errors unwind out of the C code (see `jpeg_error_mgr`). Warnings about
    // corrupt entropy data are tolerated (libjpeg substitutes), but data that ends inside a
    // scan is refused: a grey-filled image cached for a year is worse than a 422 that the
    // next request (after the upload finished) gets right. A missing EOI after complete scans
    // is fine.
    let result = catch_unwind(AssertUnwindSafe(|| -> std::io::Result<Decoded> {
        let mut d = mozjpeg::Decompress::builder()
            .with_err(jpeg_error_mgr())
            .with_markers(&[Marker::APP(1), Marker::APP(2)])
            .from_mem(data)?;
        d.scale((8 / denominator) as u8);
        let mut exif = None;
        let mut icc_chunks: Vec<(u8, u8, &[u8])> = Vec::new();
        for m in d.markers() {
            match m.marker {
                Marker::APP(1) if exif.is_none() && m.data.starts_with(b"Exif\0\0") => {
                    exif = Some(m.data[6..].to_vec());
                }
                Marker::APP(2) if m.data.len() > 14 && m.data.starts_with(b"ICC_PROFILE\0") => {
                    icc_chunks.push((m.data[12], m.data[13], &m.data[14..]));
                }
                _ => {}
            }
        }
        let mut icc = assemble_icc(icc_chunks);
        let mut rows = |s: &mut mozjpeg::decompress::DecompressStarted<_>, channels| {
            let px = read_rows(s, channels, deadline)?;
            expired = px.is_none();
            px.ok_or_else(|| std::io::Error::from(std::io::ErrorKind::TimedOut))
        };
        let image = if cmyk {
            let mut s = d.to_colorspace(ColorSpace::JCS_CMYK)?;
            let (w, h) = (s.width() as u32, s.height() as u32);
            let px = rows(&mut s, 4)?;
            let _ = s.finish();
            // The CMYK profile is used up here: the result is sRGB either way, and a CMYK
            // profile must never be attached to RGB output.
            let managed = icc
                .take()
                .and_then(|p| super::color::cmyk_to_srgb(&px, &p, adobe))
                .and_then(|rgb| image::RgbImage::from_raw(w, h, rgb));
            DynamicImage::ImageRgb8(managed.unwrap_or_else(|| cmyk_to_rgb(w, h, &px, adobe)))
        } else if d.color_space() == ColorSpace::JCS_GRAYSCALE {
            let mut s = d.grayscale()?;
            let (w, h) = (s.width() as u32, s.height() as u32);
            let px = rows(&mut s, 1)?;
            let _ = s.finish();
            DynamicImage::ImageLuma8(
                image::GrayImage::from_raw(w, h, px).ok_or(std::io::ErrorKind::InvalidData)?,
            )
        } else {
            let mut s = d.rgb()?;
            let (w, h) = (s.width() as u32, s.height() as u32);
            let px = rows(&mut s, 3)?;
            let _ = s.finish();
            DynamicImage::ImageRgb8(
                image::RgbImage::from_raw(w, h, px).ok_or(std::io::ErrorKind::InvalidData)?,
            )
        };
        Ok(Decoded { image, icc, exif })
    }));
    if expired {
        return Err(DecodeError::Deadline);
    }
    if TRUNCATED_SCAN.get() {
        return Err(DecodeError::Corrupt(
            Format::Jpeg,
            "data ends inside a scan".into(),
        ));
    }
    match result {
        Ok(Ok(d)) => Ok(d),
        Ok(Err(e)) => Err(DecodeError::Corrupt(Format::Jpeg, e.to_string())),
        Err(panic) => Err(DecodeError::Corrupt(Format::Jpeg, panic_message(&panic))),
    }
}

thread_local! {
    /// Set by the libjpeg warning hook when the data ran out inside a scan.
    static TRUNCATED_SCAN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn jpeg_error_mgr() -> mozjpeg_sys::jpeg_error_mgr {
    use mozjpeg_sys as sys;
    // SAFETY: jpeg_std_error fills every field of a zeroed manager with libjpeg's defaults
    // (static message tables); we then replace the two hooks.
    let mut err: sys::jpeg_error_mgr = unsafe { std::mem::zeroed() };
    unsafe { sys::jpeg_std_error(&mut err) };
    err.error_exit = Some(jpeg_error_exit);
    err.emit_message = Some(jpeg_emit_message);
    err
}

extern "C-unwind" fn jpeg_error_exit(cinfo: &mut mozjpeg_sys::jpeg_common_struct) {
    // SAFETY: libjpeg always sets `err` before it can report an error.
    let code = unsafe { cinfo.err.as_ref() }.map_or(-1, |e| e.msg_code);
    let msg = match code {
        // JERR_BAD_PRECISION and friends: the format is fine, this build does not read it.
        16 => "unsupported data precision".to_string(),
        _ => format!("libjpeg error {code}"),
    };
    std::panic::resume_unwind(Box::new(msg));
}

extern "C-unwind" fn jpeg_emit_message(cinfo: &mut mozjpeg_sys::jpeg_common_struct, level: i32) {
    // SAFETY: `err` is set (see above); a decompressor's common struct is the first field of
    // its `jpeg_decompress_struct`, so the cast reads the object libjpeg is working on.
    let code = unsafe { cinfo.err.as_ref() }.map_or(-1, |e| e.msg_code);
    if level != -1 || code != mozjpeg_sys::JWRN_JPEG_EOF || cinfo.is_decompressor == 0 {
        return;
    }
    let state = cinfo.global_state;
    let d = unsafe { &*(cinfo as *mut _ as *const mozjpeg_sys::jpeg_decompress_struct) };
    let max_v = if d.comp_info.is_null() {
        1
    } else {
        // SAFETY: comp_info holds num_components entries once the header is read.
        let comps = unsafe { std::slice::from_raw_parts(d.comp_info, d.num_components as usize) };
        comps
            .iter()
            .map(|c| c.v_samp_factor)
            .max()
            .unwrap_or(1)
            .max(1) as u32
    };
    let total_rows = d.image_height.div_ceil(8 * max_v);
    // The Huffman decoder reads ahead while decoding the last row, so a file that only lacks
    // its EOI marker runs out of data there; earlier than that, the scan itself is cut.
    if state > 0 && d.input_iMCU_row + 1 < total_rows {
        TRUNCATED_SCAN.set(true);
    }
}

/// First frame of a GIF, composited on the logical screen. The `gif` crate directly (rather
/// than through `image`) so unknown extension blocks are skipped, as browsers do, and the
/// frame is read row by row onto the screen whatever size it claims.
fn decode_gif(data: &[u8], info: &SourceInfo, deadline: &Deadline) -> Result<Decoded, DecodeError> {
    let mut dec = super::anim::gif_decoder(data)?;
    let frame = super::anim::GifFrameHeader::next(&mut dec)?
        .ok_or_else(|| DecodeError::Corrupt(Format::Gif, "no frame".into()))?;
    let mut canvas = image::RgbaImage::new(info.width, info.height);
    frame.paint(&mut dec, &mut canvas, false, deadline)?;
    let image = if info.has_alpha || canvas.pixels().any(|p| p[3] != 255) {
        DynamicImage::ImageRgba8(canvas)
    } else {
        DynamicImage::ImageRgb8(DynamicImage::ImageRgba8(canvas).to_rgb8())
    };
    Ok(Decoded {
        image,
        icc: None,
        exif: None,
    })
}

/// Naive CMYK → RGB. Adobe writers store CMYK inverted (APP14); without colour management
/// this matches what browsers and libjpeg-based tools show for untagged CMYK.
fn cmyk_to_rgb(w: u32, h: u32, px: &[u8], adobe_inverted: bool) -> image::RgbImage {
    let mut out = Vec::with_capacity(px.len() / 4 * 3);
    for p in px.chunks_exact(4) {
        let (c, m, y, k) = if adobe_inverted {
            (p[0], p[1], p[2], p[3])
        } else {
            (255 - p[0], 255 - p[1], 255 - p[2], 255 - p[3])
        };
        // With inverted values, c = 255 - C, so R = 255 (1 - C)(1 - K) = c·k / 255.
        let mul = |a: u8, b: u8| ((u16::from(a) * u16::from(b) + 127) / 255) as u8;
        out.extend_from_slice(&[mul(c, k), mul(m, k), mul(y, k)]);
    }
    image::RgbImage::from_raw(w, h, out).unwrap_or_else(|| image::RgbImage::new(w, h))
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "decoder failure".into())
}

fn decode_webp(data: &[u8], info: &SourceInfo) -> Result<Decoded, DecodeError> {
    let corrupt = |m: &str| DecodeError::Corrupt(Format::Webp, m.to_string());
    let image = if info.frames > 1 {
        first_webp_frame(data).ok_or_else(|| corrupt("undecodable animation frame"))?
    } else {
        let img = webp::Decoder::new(data)
            .decode()
            .ok_or_else(|| corrupt("undecodable bitstream"))?;
        let (w, h) = (img.width(), img.height());
        let px = img.to_vec();
        if img.is_alpha() {
            DynamicImage::ImageRgba8(
                image::RgbaImage::from_raw(w, h, px).ok_or_else(|| corrupt("short buffer"))?,
            )
        } else {
            DynamicImage::ImageRgb8(
                image::RgbImage::from_raw(w, h, px).ok_or_else(|| corrupt("short buffer"))?,
            )
        }
    };
    Ok(Decoded {
        image,
        icc: webp_icc(data),
        exif: webp_exif(data),
    })
}

/// The first frame of an animated WebP, composited on its canvas.
fn first_webp_frame(data: &[u8]) -> Option<DynamicImage> {
    let mut frames = super::anim::WebpFrames::new(data).ok()?;
    frames
        .next_frame()
        .ok()
        .flatten()
        .map(|f| DynamicImage::ImageRgba8(f.image))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dct_denominator_leaves_a_margin() {
        assert_eq!(jpeg_scale_denominator(1.0, 1.5), 1);
        assert_eq!(jpeg_scale_denominator(2.9, 1.5), 1);
        assert_eq!(jpeg_scale_denominator(3.0, 1.5), 2);
        assert_eq!(jpeg_scale_denominator(6.1, 1.5), 4);
        assert_eq!(jpeg_scale_denominator(12.0, 1.5), 8);
        assert_eq!(jpeg_scale_denominator(100.0, 1.0), 8);
    }

    #[test]
    fn icc_chunks_must_be_complete() {
        let mut p = vec![0u8; 200];
        p[36..40].copy_from_slice(b"acsp");
        assert!(assemble_icc(vec![(1, 1, &p[..])]).is_some());
        assert!(assemble_icc(vec![(1, 255, &p[..])]).is_none());
        assert!(assemble_icc(vec![(2, 2, &p[..100]), (1, 2, &p[100..])]).is_none());
        let (a, b) = p.split_at(100);
        assert_eq!(assemble_icc(vec![(2, 2, b), (1, 2, a)]), Some(p.clone()));
    }
}
