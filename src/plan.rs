//! Geometry planning: (Options + facts read from the source header) → [`Plan`], imgproxy's
//! sizing algorithm (v3 `processing/prepare.go`). Pure and deterministic: no pixels, no I/O.
//! Every rectangle the pixel stage will use is decided here, so limits are checked before any
//! decode and property tests can run over the whole input space.

use crate::format::Format;
use crate::request::options::{Gravity, GravityType, Options, ResizingType};

/// What the planner needs to know about the source, all from its header.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SourceGeometry {
    /// Stored (un-oriented) size.
    pub width: u32,
    pub height: u32,
    /// EXIF orientation 1..=8 (anything else is treated as 1).
    pub orientation: u8,
    /// Vector sources always scale, even without `enlarge`.
    pub is_vector: bool,
}

/// Server-side limits that bound the result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResultLimits {
    /// Largest side of the result; `None`: only the output format's own maximum.
    pub max_result_dimension: Option<u32>,
    /// Largest result in pixels (width × height).
    pub max_result_pixels: u64,
}

impl Default for ResultLimits {
    fn default() -> Self {
        ResultLimits {
            max_result_dimension: None,
            max_result_pixels: 50_000_000,
        }
    }
}

/// Why a plan cannot be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("source has a zero dimension ({0}x{1})")]
    EmptySource(u32, u32),
    #[error("result would be {width}x{height}, over the limit of {limit} pixels")]
    ResultTooLarge { width: u64, height: u64, limit: u64 },
}

/// An axis-aligned rectangle in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// Placing the current image at (`x`, `y`) on a `width`×`height` canvas (extend, padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Embed {
    pub width: u32,
    pub height: u32,
    pub x: u32,
    pub y: u32,
}

/// The geometry of one transform, step by step in pipeline order.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Clockwise rotation from EXIF (0, 90, 180, 270), applied first.
    pub exif_angle: u16,
    /// Horizontal mirror from EXIF, applied after `exif_angle`.
    pub exif_flip: bool,
    /// The user's rotation (`rot`), applied after the EXIF orientation.
    pub rotate: u16,
    /// Source size after all orientation steps.
    pub oriented_width: u32,
    pub oriented_height: u32,
    /// Region of the oriented source that is scaled (the whole image without `crop`).
    pub crop: Rect,
    /// Size after scaling `crop`.
    pub scaled_width: u32,
    pub scaled_height: u32,
    /// The user's flips (`fl`), applied after scaling.
    pub flip_horizontal: bool,
    pub flip_vertical: bool,
    /// Region of the scaled image kept (fill, fill-down, min sizes).
    pub result_crop: Rect,
    /// `g:sm`: the result crop's position is chosen from the pixels (`result_crop` holds
    /// the centred fallback).
    pub smart_crop: bool,
    /// `c:W:H:sm`: the same for `crop` (before the resize), on the oriented source.
    pub crop_smart: bool,
    /// Canvas steps after the result crop: extend, extend-aspect-ratio, padding, in order.
    pub embeds: Vec<Embed>,
    /// Final size.
    pub width: u32,
    pub height: u32,
    /// Effective device pixel ratio (capped when not enlarging).
    pub dpr: f64,
    pub blur_sigma: f64,
    pub sharpen_sigma: f64,
    /// Block size of `pixelate` in result pixels (0: off), after blur and sharpen.
    pub pixelate: u32,
    /// Colour adjustments, after pixelate.
    pub adjust: Adjust,
}

/// `brightness`, `contrast`, `saturation` (`adjust`) and `monochrome`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adjust {
    /// Added to every colour channel, -255..=255.
    pub brightness: i32,
    /// Scale of the distance from mid-grey; 1 = unchanged.
    pub contrast: f64,
    /// Scale of the distance from the pixel's luma; 1 = unchanged, 0 = grey.
    pub saturation: f64,
    /// Blend (0..=1) towards a one-colour rendering in `color`.
    pub monochrome: Option<(f64, crate::request::options::Rgb)>,
}

impl Default for Adjust {
    fn default() -> Self {
        Adjust {
            brightness: 0,
            contrast: 1.0,
            saturation: 1.0,
            monochrome: None,
        }
    }
}

impl Adjust {
    pub fn is_identity(&self) -> bool {
        *self == Adjust::default()
    }
}

impl Plan {
    /// How much smaller than the oriented source the scaled image is, per axis (≥ 1 when
    /// shrinking); decoders may use it to decode at a reduced size.
    pub fn shrink(&self) -> f64 {
        let sx = f64::from(self.crop.width) / f64::from(self.scaled_width);
        let sy = f64::from(self.crop.height) / f64::from(self.scaled_height);
        sx.min(sy)
    }

    /// Whether the plan changes nothing: decoded pixels can be encoded as they are.
    pub fn is_identity(&self) -> bool {
        self.exif_angle == 0
            && !self.exif_flip
            && self.rotate == 0
            && !self.flip_horizontal
            && !self.flip_vertical
            && self.crop.x == 0
            && self.crop.y == 0
            && self.crop.width == self.oriented_width
            && self.crop.height == self.oriented_height
            && self.scaled_width == self.crop.width
            && self.scaled_height == self.crop.height
            && self.result_crop.width == self.scaled_width
            && self.result_crop.height == self.scaled_height
            && self.embeds.is_empty()
            && self.blur_sigma == 0.0
            && self.sharpen_sigma == 0.0
            && self.pixelate <= 1
            && self.adjust.is_identity()
    }
}

/// `imath.Scale`: round half away from zero, 0 stays 0.
fn scale(a: u32, s: f64) -> u32 {
    if a == 0 {
        return 0;
    }
    let v = (f64::from(a) * s).round();
    if v >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        v.max(0.0) as u32
    }
}

/// `imath.ScaleToEven`: round half to even.
fn scale_to_even(a: u32, s: f64) -> i64 {
    round_to_even(f64::from(a) * s)
}

fn round_to_even(v: f64) -> i64 {
    let r = v.round();
    // f64::round rounds half away from zero; fix the exact halves.
    if (v - v.trunc()).abs() == 0.5 {
        (2.0 * (v / 2.0).round()) as i64
    } else {
        r as i64
    }
}

fn min_non_zero(a: u32, b: u32) -> u32 {
    match (a, b) {
        (0, b) => b,
        (a, 0) => a,
        (a, b) => a.min(b),
    }
}

/// imgproxy's `calcPosition` with overflow disallowed: top-left of an `inner` box inside an
/// `outer` box for a gravity. Offsets ≥ 1 are pixels (× `offset_scale`), smaller ones fractions.
pub fn position(
    outer_w: u32,
    outer_h: u32,
    inner_w: u32,
    inner_h: u32,
    g: &Gravity,
    offset_scale: f64,
) -> (u32, u32) {
    let (ow, oh, iw, ih) = (
        i64::from(outer_w),
        i64::from(outer_h),
        i64::from(inner_w),
        i64::from(inner_h),
    );
    let (mut left, mut top);
    if g.kind == GravityType::FocusPoint {
        left = scale_to_even(outer_w, g.x) - iw / 2;
        top = scale_to_even(outer_h, g.y) - ih / 2;
    } else {
        let off = |v: f64, size: u32| -> i64 {
            if v.abs() >= 1.0 {
                round_to_even(v * offset_scale)
            } else {
                scale_to_even(size, v)
            }
        };
        // Offsets past the whole box only clamp below; bounding them first keeps the
        // arithmetic from overflowing on absurd values (`wm:1:ea:-1e300`).
        let (ox, oy) = (
            off(g.x, outer_w).clamp(-(ow + iw), ow + iw),
            off(g.y, outer_h).clamp(-(oh + ih), oh + ih),
        );
        // Go's integer division truncates toward zero; `(ow - iw + 1) / 2` is never negative
        // here except when the inner box is larger, where clamping below fixes it anyway.
        left = round_to_even((ow - iw + 1) as f64 / 2.0) + ox;
        top = round_to_even((oh - ih + 1) as f64 / 2.0) + oy;
        use GravityType::*;
        if matches!(g.kind, North | NorthEast | NorthWest) {
            top = oy;
        }
        if matches!(g.kind, East | NorthEast | SouthEast) {
            left = ow - iw - ox;
        }
        if matches!(g.kind, South | SouthEast | SouthWest) {
            top = oh - ih - oy;
        }
        if matches!(g.kind, West | NorthWest | SouthWest) {
            left = ox;
        }
    }
    let left = left.clamp(0, (ow - iw).max(0));
    let top = top.clamp(0, (oh - ih).max(0));
    (left as u32, top as u32)
}

/// EXIF orientation → (clockwise angle, mirror) as imgproxy's `extractMeta`.
pub fn orientation_steps(orientation: u8) -> (u16, bool) {
    match orientation {
        2 => (0, true),
        3 => (180, false),
        4 => (180, true),
        5 => (90, true),
        6 => (90, false),
        7 => (270, true),
        8 => (270, false),
        _ => (0, false),
    }
}

/// `crop_aspect_ratio`: the crop area corrected to `ratio` (width / height), shrinking the
/// longer side, or with `enlarge` growing the shorter one as far as the image allows (then
/// shrinking the other to keep the ratio).
fn crop_to_ratio(
    cw: u32,
    ch: u32,
    max_w: u32,
    max_h: u32,
    ratio: f64,
    enlarge: bool,
) -> (u32, u32) {
    let (w, h) = (f64::from(cw), f64::from(ch));
    let too_wide = w / h > ratio;
    let (mut w, mut h) = match (too_wide, enlarge) {
        (true, false) => (h * ratio, h),
        (false, false) => (w, w / ratio),
        (true, true) => (w, w / ratio),
        (false, true) => (h * ratio, h),
    };
    if w > f64::from(max_w) {
        (w, h) = (f64::from(max_w), f64::from(max_w) / ratio);
    }
    if h > f64::from(max_h) {
        (w, h) = (f64::from(max_h) * ratio, f64::from(max_h));
    }
    let side = |v: f64, max: u32| (v.round() as u32).clamp(1, max);
    (side(w, max_w), side(h, max_h))
}

fn crop_size(orig: u32, crop: f64) -> u32 {
    if crop == 0.0 {
        0
    } else if crop >= 1.0 {
        // Go's int(float) truncates.
        crop.min(f64::from(u32::MAX)) as u32
    } else {
        scale(orig, crop).max(1)
    }
}

/// Scale factors and effective dpr (imgproxy's `calcScale`).
fn calc_scale(src_w: u32, src_h: u32, o: &Options, is_vector: bool) -> (f64, f64, f64) {
    let (sw, sh) = (f64::from(src_w), f64::from(src_h));
    let dst_w = if o.width == 0 { sw } else { f64::from(o.width) };
    let dst_h = if o.height == 0 {
        sh
    } else {
        f64::from(o.height)
    };
    let mut wshrink = if dst_w == sw { 1.0 } else { sw / dst_w };
    let mut hshrink = if dst_h == sh { 1.0 } else { sh / dst_h };

    if wshrink != 1.0 || hshrink != 1.0 {
        let mut rt = o.resizing_type;
        if rt == ResizingType::Auto {
            let same = (sw - sh >= 0.0) == (dst_w - dst_h >= 0.0);
            rt = if same {
                ResizingType::Fill
            } else {
                ResizingType::Fit
            };
        }
        if o.width == 0 && rt != ResizingType::Force {
            wshrink = hshrink;
        } else if o.height == 0 && rt != ResizingType::Force {
            hshrink = wshrink;
        } else if rt == ResizingType::Fit {
            wshrink = wshrink.max(hshrink);
            hshrink = wshrink;
        } else if matches!(rt, ResizingType::Fill | ResizingType::FillDown) {
            wshrink = wshrink.min(hshrink);
            hshrink = wshrink;
        }
    }

    wshrink /= o.zoom_x;
    hshrink /= o.zoom_y;

    let mut dpr = o.dpr;
    if !o.enlarge && !is_vector {
        let min_shrink = wshrink.min(hshrink);
        if min_shrink < 1.0 {
            wshrink /= min_shrink;
            hshrink /= min_shrink;
            if !o.extend.enabled {
                dpr /= min_shrink;
            }
        }
        // The smaller shrink is the largest dpr that does not enlarge.
        dpr = dpr.min(wshrink.min(hshrink));
    }

    if o.min_width > 0 {
        let min_shrink = sw / f64::from(o.min_width);
        if min_shrink < wshrink {
            hshrink /= wshrink / min_shrink;
            wshrink = min_shrink;
        }
    }
    if o.min_height > 0 {
        let min_shrink = sh / f64::from(o.min_height);
        if min_shrink < hshrink {
            wshrink /= hshrink / min_shrink;
            hshrink = min_shrink;
        }
    }

    wshrink /= dpr;
    hshrink /= dpr;
    // Never below one pixel.
    wshrink = wshrink.min(sw);
    hshrink = hshrink.min(sh);
    (1.0 / wshrink, 1.0 / hshrink, dpr)
}

struct Sizes {
    target_w: u32,
    target_h: u32,
    scaled_w: u32,
    scaled_h: u32,
    result_crop_w: u32,
    result_crop_h: u32,
    exar_w: u32,
    exar_h: u32,
}

fn calc_sizes(wts: u32, hts: u32, wscale: f64, hscale: f64, dpr: f64, o: &Options) -> Sizes {
    let target_w = scale(o.width, dpr * o.zoom_x);
    let target_h = scale(o.height, dpr * o.zoom_y);
    let scaled_w = scale(wts, wscale).max(1);
    let scaled_h = scale(hts, hscale).max(1);
    let (mut rcw, mut rch) = (target_w, target_h);
    if o.resizing_type == ResizingType::FillDown && !o.enlarge && target_w > 0 && target_h > 0 {
        let diff_w = f64::from(target_w) / f64::from(scaled_w);
        let diff_h = f64::from(target_h) / f64::from(scaled_h);
        if diff_w > diff_h && diff_w > 1.0 {
            rch = scale(scaled_w, f64::from(target_h) / f64::from(target_w));
            rcw = scaled_w;
        } else if diff_h > diff_w && diff_h > 1.0 {
            rcw = scale(scaled_h, f64::from(target_w) / f64::from(target_h));
            rch = scaled_h;
        }
    }
    let (mut exar_w, mut exar_h) = (0, 0);
    if o.extend_aspect_ratio.enabled && target_w > 0 && target_h > 0 {
        let out_w = min_non_zero(scaled_w, rcw);
        let out_h = min_non_zero(scaled_h, rch);
        let diff_w = f64::from(target_w) / f64::from(out_w);
        let diff_h = f64::from(target_h) / f64::from(out_h);
        if diff_h > diff_w {
            exar_h = scale(out_w, f64::from(target_h) / f64::from(target_w));
            exar_w = out_w;
        } else if diff_w > diff_h {
            exar_w = scale(out_h, f64::from(target_w) / f64::from(target_h));
            exar_h = out_h;
        }
    }
    Sizes {
        target_w,
        target_h,
        scaled_w,
        scaled_h,
        result_crop_w: rcw,
        result_crop_h: rch,
        exar_w,
        exar_h,
    }
}

fn padding_px(v: u32, dpr: f64) -> u32 {
    scale_to_even(v, dpr).clamp(0, i64::from(u32::MAX)) as u32
}

/// Size of the result before the format limit, given the sizes (imgproxy's `limitScale`).
fn out_size(s: &Sizes, o: &Options, dpr: f64) -> (u64, u64) {
    let mut w = u64::from(min_non_zero(s.scaled_w, s.result_crop_w));
    let mut h = u64::from(min_non_zero(s.scaled_h, s.result_crop_h));
    // Both canvases apply in turn (imgproxy counts only the first here, which lets
    // extend + extend-aspect-ratio overshoot the limit).
    if o.extend.enabled {
        w = w.max(u64::from(s.target_w));
        h = h.max(u64::from(s.target_h));
    }
    if o.extend_aspect_ratio.enabled {
        w = w.max(u64::from(s.exar_w));
        h = h.max(u64::from(s.exar_h));
    }
    if !o.padding.is_zero() {
        let p = o.padding;
        w += u64::from(padding_px(p.left, dpr)) + u64::from(padding_px(p.right, dpr));
        h += u64::from(padding_px(p.top, dpr)) + u64::from(padding_px(p.bottom, dpr));
    }
    (w, h)
}

/// Builds the plan. `format` is the output format (its maximum side caps the result).
pub fn build(
    o: &Options,
    src: &SourceGeometry,
    limits: &ResultLimits,
    format: Format,
) -> Result<Plan, PlanError> {
    if src.width == 0 || src.height == 0 {
        return Err(PlanError::EmptySource(src.width, src.height));
    }
    let (exif_angle, exif_flip) = if o.auto_rotate {
        orientation_steps(src.orientation)
    } else {
        (0, false)
    };
    let (mut src_w, mut src_h) = (src.width, src.height);
    if (exif_angle + o.rotate) % 180 != 0 {
        std::mem::swap(&mut src_w, &mut src_h);
    }

    let (mut cw, mut ch, crop_gravity) = match &o.crop {
        Some(c) => (
            min_non_zero(crop_size(src_w, c.width), src_w),
            min_non_zero(crop_size(src_h, c.height), src_h),
            c.gravity.unwrap_or(o.gravity),
        ),
        None => (src_w, src_h, o.gravity),
    };
    if let Some((ratio, enlarge)) = o.crop_aspect_ratio {
        (cw, ch) = crop_to_ratio(cw, ch, src_w, src_h, ratio, enlarge);
    }
    let crop_smart = crop_gravity.kind == GravityType::Smart && (cw < src_w || ch < src_h);
    let crop = if (cw, ch) == (src_w, src_h) {
        Rect {
            x: 0,
            y: 0,
            width: src_w,
            height: src_h,
        }
    } else {
        let (x, y) = position(src_w, src_h, cw, ch, &crop_gravity, 1.0);
        Rect {
            x,
            y,
            width: cw,
            height: ch,
        }
    };
    let (wts, hts) = (crop.width, crop.height);

    let (mut wscale, mut hscale, mut dpr) = calc_scale(wts, hts, o, src.is_vector);
    let mut sizes = calc_sizes(wts, hts, wscale, hscale, dpr, o);

    let format_max = format.max_side();
    // `mrd:0` in a URL lifts the server's limit, as in imgproxy.
    let max_dim = match o
        .security
        .max_result_dimension
        .or(limits.max_result_dimension)
    {
        None | Some(0) => format_max,
        Some(m) => m.min(format_max),
    };
    // imgproxy rescales once; with asymmetric zoom, fill-down or extend-aspect-ratio the
    // recomputed sizes can still overshoot (a 1-px step of a tiny side may move a canvas by
    // dozens of pixels), so repeat, pushing harder while the size does not move.
    let mut last = (u64::MAX, u64::MAX);
    let mut push = 1.0;
    for _ in 0..24 {
        let (ow, oh) = out_size(&sizes, o, dpr);
        if ow <= u64::from(max_dim) && oh <= u64::from(max_dim) {
            break;
        }
        if (ow, oh) == last {
            push *= 0.97;
        }
        last = (ow, oh);
        let down = f64::from(max_dim) / ow.max(oh) as f64 * push;
        wscale *= down;
        hscale *= down;
        // Never below one pixel.
        wscale = wscale.max(1.0 / f64::from(wts));
        hscale = hscale.max(1.0 / f64::from(hts));
        dpr *= down;
        sizes = calc_sizes(wts, hts, wscale, hscale, dpr, o);
    }

    let (scaled_w, scaled_h) = (sizes.scaled_w, sizes.scaled_h);
    let rc_w = min_non_zero(sizes.result_crop_w, scaled_w).min(scaled_w);
    let rc_h = min_non_zero(sizes.result_crop_h, scaled_h).min(scaled_h);
    let (rx, ry) = position(scaled_w, scaled_h, rc_w, rc_h, &o.gravity, dpr);
    let result_crop = Rect {
        x: rx,
        y: ry,
        width: rc_w,
        height: rc_h,
    };

    let (mut w, mut h) = (rc_w, rc_h);
    let mut embeds = Vec::new();
    let mut extend_to = |tw: u32, th: u32, g: &Gravity, w: &mut u32, h: &mut u32| {
        if tw <= *w && th <= *h {
            return;
        }
        let cw = tw.max(*w);
        let ch = th.max(*h);
        let (x, y) = position(cw, ch, *w, *h, g, dpr);
        embeds.push(Embed {
            width: cw,
            height: ch,
            x,
            y,
        });
        (*w, *h) = (cw, ch);
    };
    if o.extend.enabled {
        extend_to(
            sizes.target_w,
            sizes.target_h,
            &o.extend.gravity,
            &mut w,
            &mut h,
        );
    }
    if o.extend_aspect_ratio.enabled && sizes.exar_w > 0 && sizes.exar_h > 0 {
        extend_to(
            sizes.exar_w,
            sizes.exar_h,
            &o.extend_aspect_ratio.gravity,
            &mut w,
            &mut h,
        );
    }
    if !o.padding.is_zero() {
        let p = o.padding;
        let (t, r, b, l) = (
            padding_px(p.top, dpr),
            padding_px(p.right, dpr),
            padding_px(p.bottom, dpr),
            padding_px(p.left, dpr),
        );
        let cw = w.saturating_add(l).saturating_add(r);
        let ch = h.saturating_add(t).saturating_add(b);
        embeds.push(Embed {
            width: cw,
            height: ch,
            x: l,
            y: t,
        });
        (w, h) = (cw, ch);
    }

    let pixels = u64::from(w) * u64::from(h);
    if pixels > limits.max_result_pixels || w > max_dim || h > max_dim {
        return Err(PlanError::ResultTooLarge {
            width: u64::from(w),
            height: u64::from(h),
            limit: limits.max_result_pixels,
        });
    }

    Ok(Plan {
        exif_angle,
        exif_flip,
        rotate: o.rotate,
        oriented_width: src_w,
        oriented_height: src_h,
        crop,
        scaled_width: scaled_w,
        scaled_height: scaled_h,
        flip_horizontal: o.flip_horizontal,
        flip_vertical: o.flip_vertical,
        result_crop,
        smart_crop: o.gravity.kind == GravityType::Smart,
        crop_smart,
        embeds,
        width: w,
        height: h,
        dpr,
        blur_sigma: o.blur,
        sharpen_sigma: o.sharpen,
        pixelate: o.pixelate,
        adjust: Adjust {
            brightness: o.brightness,
            contrast: o.contrast,
            saturation: o.saturation,
            monochrome: o.monochrome.as_ref().map(|m| (m.intensity, m.color)),
        },
    })
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
