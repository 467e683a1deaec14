//! Pixel operations, executed in the order a [`Plan`] lays down: orientation, crop + resize
//! (Lanczos3 through fast_image_resize, premultiplied alpha), flips, result crop, blur and
//! sharpen, canvas embeds (extend, padding), flatten. Geometry is never decided here.

use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, GenericImage, GenericImageView, Rgba};

use crate::plan::{Plan, Rect};
use crate::request::options::Rgb;

/// Why a pixel operation failed (an invariant of the plan broken: our bug, a 500).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OpsError {
    #[error("resize failed: {0}")]
    Resize(String),
}

/// How canvas areas and transparency are filled.
#[derive(Debug, Clone, Copy)]
pub struct Fill {
    /// The output format keeps alpha.
    pub keep_alpha: bool,
    /// `bg` from the URL: flatten onto it even when alpha could be kept.
    pub background: Option<Rgb>,
}

impl Fill {
    fn color(&self) -> Rgb {
        self.background.unwrap_or(Rgb::WHITE)
    }
    fn transparent_canvas(&self) -> bool {
        self.keep_alpha && self.background.is_none()
    }
}

/// Applies the EXIF orientation and the user's rotation.
pub fn orient(img: DynamicImage, angle: u16, mirror: bool, rotate: u16) -> DynamicImage {
    let rot = |img: DynamicImage, a: u16| match a % 360 {
        90 => img.rotate90(),
        180 => img.rotate180(),
        270 => img.rotate270(),
        _ => img,
    };
    let mut img = rot(img, angle);
    if mirror {
        img = img.fliph();
    }
    rot(img, rotate)
}

/// Runs the plan on decoded pixels. `decoded_scale` is decoded size / source size (below 1
/// when the decoder already shrank the image), used to map the plan's source-space crop.
pub fn apply(
    img: DynamicImage,
    plan: &Plan,
    decoded_scale: (f64, f64),
    fill: Fill,
) -> Result<DynamicImage, OpsError> {
    let img = orient(img, plan.exif_angle, plan.exif_flip, plan.rotate);
    // Orientation may have swapped the axes of the decoder's scale.
    let (sx, sy) = if (plan.exif_angle + plan.rotate) % 180 != 0 {
        (decoded_scale.1, decoded_scale.0)
    } else {
        decoded_scale
    };
    let mut img = crop_and_resize(img, plan, sx, sy)?;
    if plan.flip_horizontal {
        img = img.fliph();
    }
    if plan.flip_vertical {
        img = img.flipv();
    }
    let mut rc = plan.result_crop;
    if plan.smart_crop && (rc.width < img.width() || rc.height < img.height()) {
        (rc.x, rc.y) = super::smart::position(&img, rc.width, rc.height);
    }
    if rc.x != 0 || rc.y != 0 || rc.width != img.width() || rc.height != img.height() {
        img = img.crop_imm(rc.x, rc.y, rc.width, rc.height);
    }
    if plan.blur_sigma > 0.0 {
        img = img.blur(plan.blur_sigma as f32);
    }
    if plan.sharpen_sigma > 0.0 {
        img = img.unsharpen(plan.sharpen_sigma as f32, 0);
    }
    if plan.pixelate > 1 {
        img = pixelate(img, plan.pixelate);
    }
    if !plan.adjust.is_identity() {
        img = adjust(img, &plan.adjust);
    }
    for e in &plan.embeds {
        img = embed(img, e.width, e.height, e.x, e.y, fill);
    }
    Ok(flatten(img, fill))
}

fn crop_and_resize(
    img: DynamicImage,
    plan: &Plan,
    sx: f64,
    sy: f64,
) -> Result<DynamicImage, OpsError> {
    let c: Rect = plan.crop;
    // The crop in decoded pixels; fractional edges are kept (fast_image_resize samples them).
    let (cx, cy) = (f64::from(c.x) * sx, f64::from(c.y) * sy);
    let cw = (f64::from(c.width) * sx).min(f64::from(img.width()) - cx);
    let ch = (f64::from(c.height) * sy).min(f64::from(img.height()) - cy);
    let (tw, th) = (plan.scaled_width, plan.scaled_height);
    let whole =
        cx == 0.0 && cy == 0.0 && cw == f64::from(img.width()) && ch == f64::from(img.height());
    if whole && tw == img.width() && th == img.height() {
        return Ok(img);
    }
    let exact_crop =
        cx.fract() == 0.0 && cy.fract() == 0.0 && cw.fract() == 0.0 && ch.fract() == 0.0;
    if exact_crop && tw as f64 == cw && th as f64 == ch {
        return Ok(img.crop_imm(cx as u32, cy as u32, tw, th));
    }
    let mut dst = DynamicImage::new(tw, th, img.color());
    let opts = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3))
        .crop(cx, cy, cw, ch);
    Resizer::new()
        .resize(&img, &mut dst, &opts)
        .map_err(|e| OpsError::Resize(e.to_string()))?;
    Ok(dst)
}

/// Replaces every `n`×`n` block (anchored at the top left; edge blocks are smaller) by its
/// mean, alpha-weighted so transparent pixels do not darken their block.
fn pixelate(img: DynamicImage, n: u32) -> DynamicImage {
    let had_alpha = img.color().has_alpha();
    let gray = !img.color().has_color();
    let mut rgba = img.into_rgba8();
    let (w, h) = rgba.dimensions();
    for by in (0..h).step_by(n as usize) {
        for bx in (0..w).step_by(n as usize) {
            let (bw, bh) = (n.min(w - bx), n.min(h - by));
            let mut sum = [0u64; 4];
            for y in by..by + bh {
                for x in bx..bx + bw {
                    let p = rgba.get_pixel(x, y);
                    let a = u64::from(p[3]);
                    for c in 0..3 {
                        sum[c] += u64::from(p[c]) * a;
                    }
                    sum[3] += a;
                }
            }
            let count = u64::from(bw * bh);
            let mean = |c: usize| (sum[c] + sum[3] / 2).checked_div(sum[3]).unwrap_or(0) as u8;
            let px = Rgba([
                mean(0),
                mean(1),
                mean(2),
                ((sum[3] + count / 2) / count) as u8,
            ]);
            for y in by..by + bh {
                for x in bx..bx + bw {
                    rgba.put_pixel(x, y, px);
                }
            }
        }
    }
    in_layout(rgba, had_alpha, gray)
}

/// Brightness, contrast, saturation, then monochrome, per pixel on the sRGB values (as
/// imgproxy's libvips `linear` operations do); alpha untouched.
fn adjust(img: DynamicImage, a: &crate::plan::Adjust) -> DynamicImage {
    let tinted = a
        .monochrome
        .is_some_and(|(_, c)| !(c.0 == c.1 && c.1 == c.2));
    let keep_gray = !img.color().has_color() && !tinted;
    let had_alpha = img.color().has_alpha();
    let mut rgba = img.into_rgba8();
    let luma = |r: f64, g: f64, b: f64| 0.2126 * r + 0.7152 * g + 0.0722 * b;
    let mono = a.monochrome.map(|(k, c)| {
        let (r, g, b) = (f64::from(c.0), f64::from(c.1), f64::from(c.2));
        // The colour scaled so that its own luma is white: the image's luma keeps the
        // brightness, the colour gives the hue (b3b3b3, the default, is plain grey).
        let l = luma(r, g, b).max(1.0);
        (k, [r / l, g / l, b / l])
    });
    for p in rgba.pixels_mut() {
        let mut v = [f64::from(p[0]), f64::from(p[1]), f64::from(p[2])];
        for c in &mut v {
            *c = (*c + f64::from(a.brightness) - 128.0) * a.contrast + 128.0;
        }
        if a.saturation != 1.0 {
            let y = luma(v[0], v[1], v[2]);
            for c in &mut v {
                *c = y + (*c - y) * a.saturation;
            }
        }
        if let Some((k, tint)) = mono {
            let y = luma(v[0], v[1], v[2]).clamp(0.0, 255.0);
            for (c, t) in v.iter_mut().zip(tint) {
                *c = *c * (1.0 - k) + y * t * k;
            }
        }
        for (i, c) in v.into_iter().enumerate() {
            p[i] = c.round().clamp(0.0, 255.0) as u8;
        }
    }
    in_layout(rgba, had_alpha, keep_gray)
}

/// Back from the RGBA working copy to the smallest of the four layouts that holds it.
fn in_layout(rgba: image::RgbaImage, alpha: bool, gray: bool) -> DynamicImage {
    let out = DynamicImage::ImageRgba8(rgba);
    match (alpha, gray) {
        (true, false) => out,
        (true, true) => DynamicImage::ImageLumaA8(out.to_luma_alpha8()),
        (false, false) => DynamicImage::ImageRgb8(out.to_rgb8()),
        (false, true) => DynamicImage::ImageLuma8(out.to_luma8()),
    }
}

/// Places `img` at (`x`, `y`) on a `w`×`h` canvas.
fn embed(img: DynamicImage, w: u32, h: u32, x: u32, y: u32, fill: Fill) -> DynamicImage {
    let bg = fill.color();
    let mut canvas = if fill.transparent_canvas() {
        DynamicImage::new_rgba8(w, h)
    } else if img.color().has_alpha() {
        DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
            w,
            h,
            Rgba([bg.0, bg.1, bg.2, 255]),
        ))
    } else {
        DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
            w,
            h,
            image::Rgb([bg.0, bg.1, bg.2]),
        ))
    };
    let src = if canvas.color().has_alpha() {
        DynamicImage::ImageRgba8(img.to_rgba8())
    } else {
        DynamicImage::ImageRgb8(img.to_rgb8())
    };
    // Plan guarantees the image fits; `copy_from` would report otherwise.
    if canvas.copy_from(&src, x, y).is_err() {
        return src;
    }
    let gray_bg = bg.0 == bg.1 && bg.1 == bg.2;
    if img.color().has_color() || canvas.color().has_alpha() || !gray_bg {
        canvas
    } else {
        DynamicImage::ImageLuma8(canvas.to_luma8())
    }
}

/// Composites alpha onto the background when the output cannot keep it or `bg` asks for it.
pub fn flatten(img: DynamicImage, fill: Fill) -> DynamicImage {
    if !img.color().has_alpha() || fill.transparent_canvas() {
        return img;
    }
    let bg = fill.color();
    let gray = !img.color().has_color();
    let (w, h) = img.dimensions();
    let rgba = img.into_rgba8();
    let mut out = image::RgbImage::new(w, h);
    for (o, p) in out.pixels_mut().zip(rgba.pixels()) {
        let a = u32::from(p[3]);
        let mix = |c: u8, b: u8| ((u32::from(c) * a + u32::from(b) * (255 - a) + 127) / 255) as u8;
        *o = image::Rgb([mix(p[0], bg.0), mix(p[1], bg.1), mix(p[2], bg.2)]);
    }
    let out = DynamicImage::ImageRgb8(out);
    if gray && bg.0 == bg.1 && bg.1 == bg.2 {
        DynamicImage::ImageLuma8(out.to_luma8())
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orientation_5_is_a_transpose() {
        let mut img = image::RgbImage::new(3, 2);
        img.put_pixel(2, 0, image::Rgb([255, 0, 0]));
        let out = orient(DynamicImage::ImageRgb8(img), 90, true, 0).to_rgb8();
        assert_eq!(out.dimensions(), (2, 3));
        assert_eq!(out.get_pixel(0, 2)[0], 255);
    }

    #[test]
    fn flatten_blends_onto_background() {
        let mut img = image::RgbaImage::new(1, 1);
        img.put_pixel(0, 0, Rgba([0, 0, 0, 128]));
        let fill = Fill {
            keep_alpha: false,
            background: Some(Rgb(255, 0, 0)),
        };
        let out = flatten(DynamicImage::ImageRgba8(img), fill).to_rgb8();
        assert_eq!(out.get_pixel(0, 0).0, [127, 0, 0]);
    }
}
