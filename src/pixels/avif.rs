//! AVIF through libavif (bundled, static): container parsing for the probe, dav1d for
//! decoding, libaom for encoding (see `encode` for why libaom).

use std::ffi::CStr;

use image::DynamicImage;
use libavif_sys as sys;

use super::types::{DecodeError, Decoded, EncodeError, Metadata, ProbeError, SourceInfo};
use crate::format::Format;

/// Owns a libavif decoder reading `data` (which must outlive it), and the bytes it reads
/// when they are a rewritten copy.
struct Decoder(*mut sys::avifDecoder, Option<Box<[u8]>>);

/// The boxes in `data[start..end]`: (offset, size, type), stopping at the first malformed one.
fn boxes(data: &[u8], start: usize, end: usize) -> Vec<(usize, usize, [u8; 4])> {
    let mut out = Vec::new();
    let mut pos = start;
    while pos + 8 <= end {
        let size =
            match u32::from_be_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]) {
                0 => end - pos,
                1 => match data.get(pos + 8..pos + 16).and_then(|b| b.try_into().ok()) {
                    Some(b) => usize::try_from(u64::from_be_bytes(b)).unwrap_or(usize::MAX),
                    None => break,
                },
                n => n as usize,
            };
        if size < 8 || size > end - pos {
            break;
        }
        let kind = [data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]];
        out.push((pos, size, kind));
        pos += size;
    }
    out
}

/// A copy of `data` that libavif 1.0 reads, for valid files it refuses; `None` when there
/// is nothing to mend. Sizes never change, so every item offset stays valid:
/// - a top-level box of size 0 ("to the end of the file", allowed by ISOBMFF) gets its
///   explicit size;
/// - tracks that are not picture sequences (audio, say) become `free` boxes.
fn mended(data: &[u8]) -> Option<Vec<u8>> {
    let mut copy: Option<Vec<u8>> = None;
    let top = boxes(data, 0, data.len());
    for &(pos, size, _) in &top {
        if data[pos..pos + 4] == [0, 0, 0, 0] {
            let explicit = u32::try_from(size).ok()?.to_be_bytes();
            copy.get_or_insert_with(|| data.to_vec())[pos..pos + 4].copy_from_slice(&explicit);
        }
    }
    if let Some(&(moov, size, _)) = top.iter().find(|b| &b.2 == b"moov") {
        for (trak, trak_size, kind) in boxes(data, moov + 8, moov + size) {
            if &kind != b"trak" {
                continue;
            }
            let body = &data[trak..trak + trak_size];
            // hdlr: size, "hdlr", version/flags, pre_defined, then the handler type.
            let handler = body
                .windows(4)
                .position(|w| w == b"hdlr")
                .and_then(|at| body.get(at + 12..at + 16));
            if !matches!(handler, Some(b"pict" | b"vide" | b"auxv")) {
                copy.get_or_insert_with(|| data.to_vec())[trak + 4..trak + 8]
                    .copy_from_slice(b"free");
            }
        }
    }
    copy
}

impl Decoder {
    /// Parses the container: sizes, alpha, frames, transforms; no AV1 data is decoded.
    /// `max_pixels` caps every frame the decoder will later accept; 0 keeps libavif's own
    /// limits (16384² pixels, 32768 px a side; it refuses larger ones), far above pixgate's,
    /// which then judge the declared size.
    fn parse(data: &[u8], max_pixels: u32) -> Result<Decoder, String> {
        Self::parse_from(data, max_pixels).or_else(|e| {
            // Valid files libavif 1.0 refuses (audio tracks, size-0 boxes), mended.
            let stills = mended(data).ok_or_else(|| e.clone())?.into_boxed_slice();
            let mut dec = Self::parse_from(&stills, max_pixels).map_err(|_| e)?;
            // The decoder keeps reading these bytes: they live as long as it does.
            dec.1 = Some(stills);
            Ok(dec)
        })
    }

    fn parse_from(data: &[u8], max_pixels: u32) -> Result<Decoder, String> {
        // SAFETY: the decoder is created here and destroyed by Drop; libavif reads `data`
        // through the memory IO only during calls made while the caller's borrow lives (every
        // use of Decoder below is inside functions borrowing `data`).
        unsafe {
            let d = sys::avifDecoderCreate();
            if d.is_null() {
                return Err("out of memory".into());
            }
            let dec = Decoder(d, None);
            (*d).maxThreads = 1;
            (*d).ignoreXMP = 1;
            if max_pixels > 0 {
                (*d).imageSizeLimit = max_pixels;
            }
            // Real files in the wild miss some mandatory boxes (pixi, alpha ispe); browsers
            // show them, so do we.
            (*d).strictFlags = sys::AVIF_STRICT_DISABLED as _;
            check(sys::avifDecoderSetIOMemory(d, data.as_ptr(), data.len()), d)?;
            check(sys::avifDecoderParse(d), d)?;
            Ok(dec)
        }
    }

    fn image(&self) -> &sys::avifImage {
        // SAFETY: after a successful parse `image` points at the decoder's own image.
        unsafe { &*(*self.0).image }
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        // SAFETY: created by avifDecoderCreate, destroyed once.
        unsafe { sys::avifDecoderDestroy(self.0) }
    }
}

/// Turns a libavif result into an error naming what went wrong.
fn check(r: sys::avifResult, d: *mut sys::avifDecoder) -> Result<(), String> {
    if r == sys::AVIF_RESULT_OK {
        return Ok(());
    }
    // SAFETY: libavif returns static strings; the diagnostics buffer is NUL-terminated.
    let what = unsafe { CStr::from_ptr(sys::avifResultToString(r)) }.to_string_lossy();
    let diag = if d.is_null() {
        String::new()
    } else {
        unsafe { CStr::from_ptr((*d).diag.error.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    };
    Err(if diag.is_empty() {
        what.into_owned()
    } else {
        format!("{what}: {diag}")
    })
}

/// The EXIF orientation (1..=8) equal to the image's irot and imir properties.
fn orientation(img: &sys::avifImage) -> u8 {
    let flags = img.transformFlags;
    // irot counts anti-clockwise quarter turns; the plan turns clockwise first, then mirrors
    // left-right. A top-bottom mirror is a half turn plus a left-right one.
    let mut angle = if flags & sys::AVIF_TRANSFORM_IROT != 0 {
        (4 - u16::from(img.irot.angle & 3)) % 4 * 90
    } else {
        0
    };
    let mirror = flags & sys::AVIF_TRANSFORM_IMIR != 0;
    if mirror && img.imir.axis == 0 {
        angle = (angle + 180) % 360;
    }
    (1..=8)
        .find(|&o| crate::plan::orientation_steps(o) == (angle, mirror))
        .unwrap_or(1)
}

pub fn probe(data: &[u8]) -> Result<SourceInfo, ProbeError> {
    let dec = Decoder::parse(data, 0)
        .map_err(|_| ProbeError::Corrupt(Format::Avif, "unreadable container"))?;
    let img = dec.image();
    let mut info = SourceInfo::new(Format::Avif, img.width, img.height);
    // SAFETY: parse succeeded, so the decoder fields are initialised.
    let (count, alpha) = unsafe { ((*dec.0).imageCount, (*dec.0).alphaPresent) };
    info.frames = u32::try_from(count).unwrap_or(1).max(1);
    info.has_alpha = alpha != 0;
    info.has_icc = img.icc.size > 0;
    info.orientation = orientation(img);
    Ok(info)
}

/// The ICC profile and EXIF block from the container (no AV1 data decoded).
pub fn metadata(data: &[u8]) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let Ok(dec) = Decoder::parse(data, 0) else {
        return (None, None);
    };
    let img = dec.image();
    (icc_of(img), exif_of(img))
}

/// A metadata buffer libavif holds, when it is within `max` bytes (larger ones are dropped,
/// never copied).
fn rw_bytes(d: &sys::avifRWData, max: usize) -> Option<Vec<u8>> {
    // SAFETY: libavif keeps `size` bytes at `data` while the image lives.
    (d.size > 0 && d.size <= max && !d.data.is_null())
        .then(|| unsafe { std::slice::from_raw_parts(d.data, d.size) }.to_vec())
}

fn icc_of(img: &sys::avifImage) -> Option<Vec<u8>> {
    rw_bytes(&img.icc, super::metadata::MAX_ICC_BYTES)
}

fn exif_of(img: &sys::avifImage) -> Option<Vec<u8>> {
    rw_bytes(&img.exif, super::metadata::MAX_EXIF_BYTES)
}

/// An 8-bit RGB or RGBA description matching `image`'s size, with no pixel buffer yet.
///
/// # Safety
/// `image` must point at a live libavif image.
unsafe fn rgb8_view(image: *const sys::avifImage, alpha: bool) -> sys::avifRGBImage {
    // SAFETY: a zeroed avifRGBImage is valid input for SetDefaults, which fills every field
    // from the (live, per the caller) image.
    let mut rgb: sys::avifRGBImage = unsafe { std::mem::zeroed() };
    unsafe { sys::avifRGBImageSetDefaults(&mut rgb, image) };
    rgb.depth = 8;
    rgb.format = if alpha {
        sys::AVIF_RGB_FORMAT_RGBA
    } else {
        sys::AVIF_RGB_FORMAT_RGB
    };
    rgb
}

/// Decodes the first frame to 8-bit RGB(A). `max_pixels` bounds what dav1d will decode
/// (0: libavif's default); a bitstream whose size differs from the container's is refused.
pub fn decode(data: &[u8], info: &SourceInfo, max_pixels: u64) -> Result<Decoded, DecodeError> {
    let corrupt = |m: String| DecodeError::Corrupt(Format::Avif, m);
    // The limit is the request's, not the declared size: dav1d logs to stderr when a frame
    // exceeds its limit, so a container that understates its size is caught by the size
    // comparison below instead, within the same memory bound as any honest source.
    let limit = u32::try_from(max_pixels.max(info.pixels())).unwrap_or(u32::MAX);
    let dec = Decoder::parse(data, limit).map_err(corrupt)?;
    // SAFETY: `dec` is live; NextImage fills `image` with the first frame's planes; the RGB
    // buffer is allocated by libavif for exactly width × height × channels and freed below
    // after copying.
    unsafe {
        check(sys::avifDecoderNextImage(dec.0), dec.0).map_err(corrupt)?;
        let img = (*dec.0).image;
        if ((*img).width, (*img).height) != (info.width, info.height) {
            return Err(corrupt("decoded size differs from the container's".into()));
        }
        // Constant-luminance and ICtCp matrices are valid AV1 that libavif does not convert
        // to RGB: a format variant, not damage.
        let matrix = (*img).matrixCoefficients;
        if matches!(matrix, 10 | 11 | 13 | 14) {
            return Err(DecodeError::UnsupportedVariant(
                Format::Avif,
                format!("colour matrix {matrix} (constant luminance or ICtCp)"),
            ));
        }
        let alpha = !(*img).alphaPlane.is_null();
        let mut rgb = rgb8_view(img, alpha);
        rgb.maxThreads = 1;
        check(
            sys::avifRGBImageAllocatePixels(&mut rgb),
            std::ptr::null_mut(),
        )
        .map_err(corrupt)?;
        let converted = check(sys::avifImageYUVToRGB(img, &mut rgb), std::ptr::null_mut());
        let (w, h) = (rgb.width, rgb.height);
        let channels = if alpha { 4 } else { 3 };
        let mut px = Vec::with_capacity((w * h * channels) as usize);
        if converted.is_ok() {
            for row in 0..h {
                let start = rgb.pixels.add((row * rgb.rowBytes) as usize);
                px.extend_from_slice(std::slice::from_raw_parts(start, (w * channels) as usize));
            }
        }
        sys::avifRGBImageFreePixels(&mut rgb);
        converted.map_err(corrupt)?;
        let image = if alpha {
            image::RgbaImage::from_raw(w, h, px).map(DynamicImage::ImageRgba8)
        } else {
            image::RgbImage::from_raw(w, h, px).map(DynamicImage::ImageRgb8)
        }
        .ok_or_else(|| corrupt("short buffer".into()))?;
        Ok(Decoded {
            image,
            icc: icc_of(&*img),
            exif: exif_of(&*img),
        })
    }
}

/// What encoding `width × height` at `speed` should take here. libaom runs as one call that
/// cannot be stopped, so the caller compares this with the time left before starting. The
/// rate is measured once per speed, on this machine, from a 256×256 noisy gradient (about
/// as costly per pixel as a photo; libaom's per-pixel cost is flat from there up).
pub fn encode_cost(width: u32, height: u32, speed: u8) -> std::time::Duration {
    use std::sync::{Mutex, OnceLock};
    static RATES: OnceLock<Mutex<[Option<f64>; 11]>> = OnceLock::new();
    let speed = speed.min(10);
    let rates = RATES.get_or_init(|| Mutex::new([None; 11]));
    let known = rates.lock().ok().and_then(|r| r[usize::from(speed)]);
    let ns_per_pixel = known.unwrap_or_else(|| {
        const SIDE: u32 = 256;
        let mut seed = 0x2545_F491u32;
        let img = image::RgbImage::from_fn(SIDE, SIDE, |x, y| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let n = seed & 15;
            image::Rgb([(x + n) as u8, (y + n) as u8, ((x ^ y) / 2 + n) as u8])
        });
        let t = std::time::Instant::now();
        let _ = encode(
            &DynamicImage::ImageRgb8(img),
            60,
            speed,
            Metadata::default(),
        );
        let rate = t.elapsed().as_nanos() as f64 / f64::from(SIDE * SIDE);
        if let Ok(mut r) = rates.lock() {
            r[usize::from(speed)] = Some(rate);
        }
        rate
    });
    std::time::Duration::from_nanos(
        (ns_per_pixel * f64::from(width) * f64::from(height)).min(1e15) as u64,
    )
}

/// Encodes 8-bit pixels (4:2:0, full range, sRGB signalled) with libaom at `speed` (0..=10).
///
/// libaom rather than rav1e: on the same 800 px photo, single-threaded, libaom takes 52.8 ms
/// at speed 8 and 16.3 ms at speed 9 (`benches/formats.rs`); rav1e (ravif 0.13, measured
/// once outside the tree) took 922 ms at speed 8 and 337 ms at speed 10.
pub fn encode(
    img: &DynamicImage,
    quality: u8,
    speed: u8,
    meta: Metadata<'_>,
) -> Result<Vec<u8>, EncodeError> {
    let fail = |m: String| EncodeError::Failed(Format::Avif, m);
    let alpha = img.color().has_alpha();
    let rgba;
    let rgb;
    let (px, channels) = if alpha {
        rgba = img.to_rgba8();
        (rgba.as_raw(), 4)
    } else {
        rgb = img.to_rgb8();
        (rgb.as_raw(), 3)
    };
    let (w, h) = (img.width(), img.height());
    // SAFETY: the image and encoder are created here and destroyed on every path; the RGB
    // view borrows `px` (width × channels bytes per row) only for the conversion call; the
    // output buffer is libavif's, copied out then freed.
    unsafe {
        let image = sys::avifImageCreate(w, h, 8, sys::AVIF_PIXEL_FORMAT_YUV420);
        if image.is_null() {
            return Err(fail("out of memory".into()));
        }
        (*image).yuvRange = sys::AVIF_RANGE_FULL;
        // sRGB: BT.709 primaries, sRGB transfer, BT.601 matrix (what browsers assume).
        (*image).colorPrimaries = 1;
        (*image).transferCharacteristics = 13;
        (*image).matrixCoefficients = 6;
        let mut view = rgb8_view(image, alpha);
        view.pixels = px.as_ptr().cast_mut();
        view.rowBytes = w * channels;
        let mut result = check(sys::avifImageRGBToYUV(image, &view), std::ptr::null_mut());
        if let (Ok(()), Some(icc)) = (&result, meta.icc) {
            result = check(
                sys::avifImageSetProfileICC(image, icc.as_ptr(), icc.len()),
                std::ptr::null_mut(),
            );
        }
        if let (Ok(()), Some(exif)) = (&result, meta.exif) {
            result = check(
                sys::avifImageSetMetadataExif(image, exif.as_ptr(), exif.len()),
                std::ptr::null_mut(),
            );
        }
        let mut out = Vec::new();
        if result.is_ok() {
            let enc = sys::avifEncoderCreate();
            if enc.is_null() {
                result = Err("out of memory".into());
            } else {
                (*enc).codecChoice = sys::AVIF_CODEC_CHOICE_AOM;
                (*enc).maxThreads = 1;
                (*enc).speed = i32::from(speed.min(10));
                (*enc).quality = i32::from(quality.clamp(1, 100));
                (*enc).qualityAlpha = i32::from(quality.clamp(1, 100));
                let mut data = sys::avifRWData {
                    data: std::ptr::null_mut(),
                    size: 0,
                };
                result = check(
                    sys::avifEncoderWrite(enc, image, &mut data),
                    std::ptr::null_mut(),
                );
                if result.is_ok() && !data.data.is_null() {
                    out = std::slice::from_raw_parts(data.data, data.size).to_vec();
                }
                sys::avifRWDataFree(&mut data);
                sys::avifEncoderDestroy(enc);
            }
        }
        sys::avifImageDestroy(image);
        result.map_err(fail)?;
        Ok(out)
    }
}
