//! Pixel operations, executed in the order a [`Plan`] lays down: orientation, crop + resize
//! (Lanczos3 through fast_image_resize, premultiplied alpha), flips, result crop, blur and
//! sharpen, canvas embeds (extend, padding), flatten. Geometry is never decided here.

use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, GenericImage, GenericImageView, Rgba};

use super::deadline::{Deadline, Expired};
pub use super::types::OpsError;
use super::types::PixelError;
use crate::plan::{Plan, Rect};
use crate::request::options::{Gravity, GravityType, Rgb, Trim};

/// How canvas areas and transparency are filled.
#[derive(Debug, Clone, Copy)]
pub struct Fill {
    /// The output format keeps alpha.
    pub keep_alpha: bool,
    /// `bg` from the URL: flatten onto it even when alpha could be kept.
    pub background: Option<Rgb>,
    /// `bga`: the background's own opacity (0..=1) where the output keeps alpha.
    pub background_alpha: f64,
}

impl Fill {
    fn color(&self) -> Rgb {
        self.background.unwrap_or(Rgb::WHITE)
    }
    fn transparent_canvas(&self) -> bool {
        self.keep_alpha && self.background.is_none()
    }
    /// The background's alpha when it is see-through (`bg` with `bga` < 1 and an output
    /// that keeps alpha).
    fn translucent_background(&self) -> Option<u8> {
        (self.keep_alpha && self.background.is_some() && self.background_alpha < 1.0)
            .then(|| (self.background_alpha.clamp(0.0, 1.0) * 255.0).round() as u8)
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
/// The deadline is checked between operations and inside the long ones (rows), so a job
/// stops within one resize of its deadline.
pub fn apply(
    img: DynamicImage,
    plan: &Plan,
    decoded_scale: (f64, f64),
    fill: Fill,
    deadline: &Deadline,
) -> Result<DynamicImage, PixelError> {
    let img = orient(img, plan.exif_angle, plan.exif_flip, plan.rotate);
    // Orientation may have swapped the axes of the decoder's scale.
    let (sx, sy) = if (plan.exif_angle + plan.rotate) % 180 != 0 {
        (decoded_scale.1, decoded_scale.0)
    } else {
        decoded_scale
    };
    let mut crop = plan.crop;
    if plan.crop_smart {
        // Positioned on the decoded pixels, mapped back to source coordinates.
        let (dw, dh) = (
            ((f64::from(crop.width) * sx).round() as u32).clamp(1, img.width()),
            ((f64::from(crop.height) * sy).round() as u32).clamp(1, img.height()),
        );
        let (x, y) = super::smart::position(&img, dw, dh);
        crop.x = ((f64::from(x) / sx).round() as u32)
            .min(plan.oriented_width.saturating_sub(crop.width));
        crop.y = ((f64::from(y) / sy).round() as u32)
            .min(plan.oriented_height.saturating_sub(crop.height));
    }
    deadline.check()?;
    let mut img = crop_and_resize(img, crop, plan, sx, sy)?;
    deadline.check()?;
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
        super::blur::gaussian(&mut img, plan.blur_sigma, deadline)?;
    }
    if plan.sharpen_sigma > 0.0 {
        img = super::blur::unsharpen(img, plan.sharpen_sigma, deadline)?;
    }
    if plan.pixelate > 1 {
        img = pixelate(img, plan.pixelate, deadline)?;
    }
    if !plan.adjust.is_identity() {
        img = adjust(img, &plan.adjust, deadline)?;
    }
    for e in &plan.embeds {
        deadline.check()?;
        img = embed(img, e.width, e.height, e.x, e.y, fill);
    }
    deadline.check()?;
    Ok(flatten(img, fill))
}

fn crop_and_resize(
    img: DynamicImage,
    c: Rect,
    plan: &Plan,
    sx: f64,
    sy: f64,
) -> Result<DynamicImage, OpsError> {
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
fn pixelate(img: DynamicImage, n: u32, deadline: &Deadline) -> Result<DynamicImage, Expired> {
    let had_alpha = img.color().has_alpha();
    let gray = !img.color().has_color();
    let mut rgba = img.into_rgba8();
    let (w, h) = rgba.dimensions();
    for by in (0..h).step_by(n as usize) {
        deadline.check()?;
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
    Ok(in_layout(rgba, had_alpha, gray))
}

/// Brightness, contrast, saturation, then monochrome, per pixel on the sRGB values (as
/// imgproxy's libvips `linear` operations do); alpha untouched.
fn adjust(
    img: DynamicImage,
    a: &crate::plan::Adjust,
    deadline: &Deadline,
) -> Result<DynamicImage, Expired> {
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
    let row = rgba.width().max(1) as usize;
    for (i, p) in rgba.pixels_mut().enumerate() {
        if i % (64 * row) == 0 {
            deadline.check()?;
        }
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
    Ok(in_layout(rgba, had_alpha, keep_gray))
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
    // A translucent background is laid under everything once, by `flatten`.
    let mut canvas = if fill.transparent_canvas() || fill.translucent_background().is_some() {
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
    if let Some(ba) = fill.translucent_background() {
        // Porter-Duff "over" onto the translucent background: alpha stays.
        let mut rgba = img.into_rgba8();
        let bga = f64::from(ba) / 255.0;
        for p in rgba.pixels_mut() {
            let a = f64::from(p[3]) / 255.0;
            let out_a = a + bga * (1.0 - a);
            if out_a <= 0.0 {
                *p = Rgba([0, 0, 0, 0]);
                continue;
            }
            let mix = |c: u8, b: u8| {
                ((f64::from(c) * a + f64::from(b) * bga * (1.0 - a)) / out_a).round() as u8
            };
            *p = Rgba([
                mix(p[0], bg.0),
                mix(p[1], bg.1),
                mix(p[2], bg.2),
                (out_a * 255.0).round() as u8,
            ]);
        }
        return DynamicImage::ImageRgba8(rgba);
    }
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

/// `trim`: the box that holds everything differing from the border colour by more than
/// `threshold` in some channel (libvips `find_trim`). The border colour is `color`, else the
/// top-left pixel; transparency counts as magenta (FF00FF), as in imgproxy. `None` when the
/// whole image is border (nothing to keep, so nothing is trimmed).
pub fn find_trim(
    img: &DynamicImage,
    t: &Trim,
    deadline: &Deadline,
) -> Result<Option<Rect>, Expired> {
    // The common layouts are read in place: a full-size decode is already the largest
    // buffer of the request, an RGBA copy of it would be a third more.
    match img {
        DynamicImage::ImageRgb8(b) => trim_box(b.width(), b.height(), t, deadline, |x, y| {
            let p = b.get_pixel(x, y);
            [p[0], p[1], p[2], 255]
        }),
        DynamicImage::ImageRgba8(b) => trim_box(b.width(), b.height(), t, deadline, |x, y| {
            b.get_pixel(x, y).0
        }),
        DynamicImage::ImageLuma8(b) => trim_box(b.width(), b.height(), t, deadline, |x, y| {
            let v = b.get_pixel(x, y)[0];
            [v, v, v, 255]
        }),
        other => {
            let b = other.to_rgba8();
            trim_box(b.width(), b.height(), t, deadline, |x, y| {
                b.get_pixel(x, y).0
            })
        }
    }
}

fn trim_box(
    w: u32,
    h: u32,
    t: &Trim,
    deadline: &Deadline,
    pixel: impl Fn(u32, u32) -> [u8; 4],
) -> Result<Option<Rect>, Expired> {
    if w == 0 || h == 0 {
        return Ok(None);
    }
    let flat = |p: [u8; 4]| -> [i32; 3] {
        let a = i32::from(p[3]);
        let m = [255, 0, 255];
        std::array::from_fn(|c| (i32::from(p[c]) * a + m[c] * (255 - a) + 127) / 255)
    };
    let bg = match t.color {
        Some(c) => [i32::from(c.0), i32::from(c.1), i32::from(c.2)],
        None => flat(pixel(0, 0)),
    };
    let (mut left, mut right, mut top, mut bottom) = (w, 0u32, h, 0u32);
    for y in 0..h {
        if y % 64 == 0 {
            deadline.check()?;
        }
        let mut first = None;
        let mut last = 0;
        for x in 0..w {
            let v = flat(pixel(x, y));
            let diff = (0..3).map(|c| (v[c] - bg[c]).abs()).max().unwrap_or(0);
            if f64::from(diff) > t.threshold {
                first.get_or_insert(x);
                last = x;
            }
        }
        if let Some(f) = first {
            left = left.min(f);
            right = right.max(last);
            top = top.min(y);
            bottom = y;
        }
    }
    if left > right {
        return Ok(None);
    }
    let (mut x0, mut x1, mut y0, mut y1) = (left, right + 1, top, bottom + 1);
    if t.equal_hor {
        let cut = x0.min(w - x1);
        (x0, x1) = (cut, w - cut);
    }
    if t.equal_ver {
        let cut = y0.min(h - y1);
        (y0, y1) = (cut, h - cut);
    }
    Ok(Some(Rect {
        x: x0,
        y: y0,
        width: x1 - x0,
        height: y1 - y0,
    }))
}

/// A watermark scaled and faded for one result size, with where it goes.
pub struct PlacedWatermark<'a> {
    /// Borrowed when drawn at its own size: no copy of the configured image per request.
    mark: std::borrow::Cow<'a, image::RgbaImage>,
    /// Applied while compositing, for the same reason.
    opacity: f64,
    layout: Layout,
}

/// One mark at a position, or a grid of them (`re`) with this pitch.
enum Layout {
    Single(i64, i64),
    Tiled { step_x: u32, step_y: u32 },
}

/// Where and how a watermark is drawn (`wm` after the server's opacity is applied).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WatermarkSpec {
    pub opacity: f64,
    pub position: GravityType,
    pub x: f64,
    pub y: f64,
    /// Relative to the result's size; 0 = the watermark's own size.
    pub scale: f64,
}

impl<'a> PlacedWatermark<'a> {
    /// Scales the watermark (to `scale` of the result, and never larger than it), fades it
    /// by the opacity and lays out its positions (one, or a grid for `re`). `dpr` scales
    /// pixel offsets as it does for gravity.
    pub fn new(
        wm: &'a image::RgbaImage,
        spec: &WatermarkSpec,
        width: u32,
        height: u32,
        dpr: f64,
    ) -> Result<PlacedWatermark<'a>, OpsError> {
        let (ww, wh) = (f64::from(wm.width().max(1)), f64::from(wm.height().max(1)));
        let (bw, bh) = if spec.scale > 0.0 {
            (
                f64::from(width) * spec.scale,
                f64::from(height) * spec.scale,
            )
        } else {
            (ww, wh)
        };
        let k = (bw / ww)
            .min(bh / wh)
            .min(f64::from(width) / ww)
            .min(f64::from(height) / wh);
        let (tw, th) = (
            ((ww * k).round() as u32).max(1),
            ((wh * k).round() as u32).max(1),
        );
        let mark = if (tw, th) == wm.dimensions() {
            std::borrow::Cow::Borrowed(wm)
        } else {
            let mut dst = image::RgbaImage::new(tw, th);
            Resizer::new()
                .resize(
                    wm,
                    &mut dst,
                    &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3)),
                )
                .map_err(|e| OpsError::Resize(e.to_string()))?;
            std::borrow::Cow::Owned(dst)
        };
        let opacity = spec.opacity.clamp(0.0, 1.0);
        let layout = if spec.position == GravityType::Replicate {
            // Offsets are the gaps between tiles.
            let gap = |v: f64, size: u32| -> u32 {
                let px = if v.abs() >= 1.0 {
                    v * dpr
                } else {
                    v * f64::from(size)
                };
                px.round().clamp(0.0, f64::from(size)) as u32
            };
            Layout::Tiled {
                step_x: tw + gap(spec.x, width),
                step_y: th + gap(spec.y, height),
            }
        } else {
            let g = Gravity {
                kind: spec.position,
                x: spec.x,
                y: spec.y,
            };
            let (x, y) = crate::plan::position(width, height, tw, th, &g, dpr);
            Layout::Single(i64::from(x), i64::from(y))
        };
        Ok(PlacedWatermark {
            mark,
            opacity,
            layout,
        })
    }

    /// Draws the watermark over `img` ("over" compositing; the image keeps its layout
    /// unless the mark brings colour to a grey image).
    pub fn apply(&self, img: DynamicImage) -> DynamicImage {
        let had_alpha = img.color().has_alpha();
        let gray =
            !img.color().has_color() && self.mark.pixels().all(|p| p[0] == p[1] && p[1] == p[2]);
        let mut out = img.into_rgba8();
        let (w, h) = out.dimensions();
        let (mw, mh) = self.mark.dimensions();
        let opacity = self.opacity;
        let over = |d: &mut Rgba<u8>, m: &Rgba<u8>| {
            // The mark's alpha as an 8-bit value after the opacity, as if stored so.
            let ma = (f64::from(m[3]) * opacity).round() / 255.0;
            if ma == 0.0 {
                return;
            }
            let da = f64::from(d[3]) / 255.0;
            let oa = ma + da * (1.0 - ma);
            for c in 0..3 {
                let v = (f64::from(m[c]) * ma + f64::from(d[c]) * da * (1.0 - ma)) / oa;
                d[c] = v.round() as u8;
            }
            d[3] = (oa * 255.0).round() as u8;
        };
        match self.layout {
            Layout::Single(sx, sy) => {
                for (mx, my, m) in self.mark.enumerate_pixels() {
                    let (x, y) = (sx + i64::from(mx), sy + i64::from(my));
                    if (0..i64::from(w)).contains(&x) && (0..i64::from(h)).contains(&y) {
                        over(out.get_pixel_mut(x as u32, y as u32), m);
                    }
                }
            }
            // Every image pixel once, whatever the tile size: the work is bounded by the
            // result, never by how small the mark was scaled.
            Layout::Tiled { step_x, step_y } => {
                for (x, y, d) in out.enumerate_pixels_mut() {
                    let (mx, my) = (x % step_x, y % step_y);
                    if mx < mw && my < mh {
                        over(d, self.mark.get_pixel(mx, my));
                    }
                }
            }
        }
        in_layout(out, had_alpha, gray)
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
            background_alpha: 1.0,
        };
        let out = flatten(DynamicImage::ImageRgba8(img), fill).to_rgb8();
        assert_eq!(out.get_pixel(0, 0).0, [127, 0, 0]);
    }
}
