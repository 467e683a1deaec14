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
    let rc = plan.result_crop;
    if rc.x != 0 || rc.y != 0 || rc.width != img.width() || rc.height != img.height() {
        img = img.crop_imm(rc.x, rc.y, rc.width, rc.height);
    }
    if plan.blur_sigma > 0.0 {
        img = img.blur(plan.blur_sigma as f32);
    }
    if plan.sharpen_sigma > 0.0 {
        img = img.unsharpen(plan.sharpen_sigma as f32, 0);
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
