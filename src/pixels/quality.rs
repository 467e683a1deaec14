//! The perceptual distance `autoquality` steers by: DSSIM (1/SSIM − 1) of a multi-scale
//! SSIM over luma and chroma. SSIM windows are 8×8 (Wang et al.'s original block size),
//! evaluated at every position through summed-area tables, so one comparison of two 800 px
//! images costs a few milliseconds and a quality search can afford several.
//!
//! Why not a crate: `dssim-core` (the reference DSSIM) is AGPL, and `ssimulacra2` spends
//! ~100 ms per 800 px comparison in its XYB blur pyramid — too slow to run up to six times
//! per request. The figures this gives are on DSSIM's scale (0 = identical, ~0.01 hard to
//! tell apart, > 0.05 visibly worse) but not numerically equal to `dssim`'s.

use image::DynamicImage;

/// Window side of the local statistics.
const WINDOW: usize = 8;
/// Weights of the scales (full, ½, ¼): fine detail matters most for compression artefacts.
const SCALE_WEIGHTS: [f64; 3] = [0.5, 0.3, 0.2];
/// Chroma matters less to the eye than luma (and is subsampled by every lossy format here).
const CHROMA_WEIGHT: f64 = 0.25;

/// DSSIM between a reference and a candidate of the same size; 0 means identical. Alpha is
/// composited over mid-grey on both sides first, so differences in transparency count.
pub fn dssim(reference: &DynamicImage, candidate: &DynamicImage) -> f64 {
    let a = planes(reference);
    let b = planes(candidate);
    if a.width != b.width || a.height != b.height {
        return f64::INFINITY;
    }
    let mut total = 0.0;
    let mut weights = 0.0;
    let (mut a, mut b) = (a, b);
    for (i, w) in SCALE_WEIGHTS.iter().enumerate() {
        if a.width < WINDOW || a.height < WINDOW {
            break;
        }
        let y = ssim(&a.y, &b.y, a.width, a.height);
        // Chroma from the half-size level: what the encoders keep (4:2:0) and cheaper.
        let chroma = if i == 0 {
            let (ha, hb) = (a.half(), b.half());
            if ha.width >= WINDOW && ha.height >= WINDOW {
                let cb = ssim(&ha.cb, &hb.cb, ha.width, ha.height);
                let cr = ssim(&ha.cr, &hb.cr, ha.width, ha.height);
                Some((cb + cr) / 2.0)
            } else {
                None
            }
        } else {
            None
        };
        let s = match chroma {
            Some(c) => (y + CHROMA_WEIGHT * c) / (1.0 + CHROMA_WEIGHT),
            None => y,
        };
        total += w * s;
        weights += w;
        a = a.half();
        b = b.half();
    }
    if weights == 0.0 {
        // Smaller than one window: compare means (a 1-pixel image has nothing else).
        let mean = |p: &[f32]| p.iter().map(|&v| f64::from(v)).sum::<f64>() / p.len() as f64;
        let d = (mean(&a.y) - mean(&b.y)).abs() / 255.0;
        return d;
    }
    let s = (total / weights).max(1e-6);
    (1.0 / s - 1.0).max(0.0)
}

/// An image as Y, Cb, Cr planes (BT.601, full range).
struct Planes {
    width: usize,
    height: usize,
    y: Vec<f32>,
    cb: Vec<f32>,
    cr: Vec<f32>,
}

fn planes(img: &DynamicImage) -> Planes {
    let rgba = img.to_rgba8();
    let (w, h) = (rgba.width() as usize, rgba.height() as usize);
    let n = w * h;
    let (mut y, mut cb, mut cr) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for p in rgba.pixels() {
        let a = f32::from(p[3]) / 255.0;
        let over = |c: u8| f32::from(c) * a + 128.0 * (1.0 - a);
        let (r, g, b) = (over(p[0]), over(p[1]), over(p[2]));
        y.push(0.299 * r + 0.587 * g + 0.114 * b);
        cb.push(-0.168_736 * r - 0.331_264 * g + 0.5 * b + 128.0);
        cr.push(0.5 * r - 0.418_688 * g - 0.081_312 * b + 128.0);
    }
    Planes {
        width: w,
        height: h,
        y,
        cb,
        cr,
    }
}

impl Planes {
    /// 2×2 box average (odd edges dropped).
    fn half(&self) -> Planes {
        let (w, h) = (self.width / 2, self.height / 2);
        let down = |p: &[f32]| -> Vec<f32> {
            let mut out = Vec::with_capacity(w * h);
            for y in 0..h {
                let (r0, r1) = (2 * y * self.width, (2 * y + 1) * self.width);
                for x in 0..w {
                    let s = p[r0 + 2 * x] + p[r0 + 2 * x + 1] + p[r1 + 2 * x] + p[r1 + 2 * x + 1];
                    out.push(s / 4.0);
                }
            }
            out
        };
        Planes {
            width: w,
            height: h,
            y: down(&self.y),
            cb: down(&self.cb),
            cr: down(&self.cr),
        }
    }
}

/// Mean SSIM over every 8×8 window of two planes.
fn ssim(a: &[f32], b: &[f32], w: usize, h: usize) -> f64 {
    const C1: f64 = (0.01 * 255.0) * (0.01 * 255.0);
    const C2: f64 = (0.03 * 255.0) * (0.03 * 255.0);
    // Summed-area tables of a, b, a², b², ab (one row of padding on top and left).
    let stride = w + 1;
    let mut sat = vec![[0f64; 5]; stride * (h + 1)];
    for y in 0..h {
        let mut row = [0f64; 5];
        for x in 0..w {
            let (va, vb) = (f64::from(a[y * w + x]), f64::from(b[y * w + x]));
            let v = [va, vb, va * va, vb * vb, va * vb];
            let above = sat[y * stride + x + 1];
            let cell = &mut sat[(y + 1) * stride + x + 1];
            for k in 0..5 {
                row[k] += v[k];
                cell[k] = above[k] + row[k];
            }
        }
    }
    let n = (WINDOW * WINDOW) as f64;
    let mut total = 0.0;
    let mut count = 0u64;
    for y in 0..=h - WINDOW {
        for x in 0..=w - WINDOW {
            let (t, b_) = (y * stride, (y + WINDOW) * stride);
            let s: [f64; 5] = std::array::from_fn(|k| {
                sat[b_ + x + WINDOW][k] - sat[t + x + WINDOW][k] - sat[b_ + x][k] + sat[t + x][k]
            });
            let (ma, mb) = (s[0] / n, s[1] / n);
            let va = (s[2] / n - ma * ma).max(0.0);
            let vb = (s[3] / n - mb * mb).max(0.0);
            let cov = s[4] / n - ma * mb;
            total += ((2.0 * ma * mb + C1) * (2.0 * cov + C2))
                / ((ma * ma + mb * mb + C1) * (va + vb + C2));
            count += 1;
        }
    }
    total / count as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(w: u32, h: u32, seed: u32) -> DynamicImage {
        let mut s = seed;
        DynamicImage::ImageRgb8(image::RgbImage::from_fn(w, h, |x, y| {
            s = s.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let n = (s >> 16) as u8 / 8;
            image::Rgb([
                (x * 2) as u8 ^ n,
                (y * 3) as u8,
                n.wrapping_add((x + y) as u8),
            ])
        }))
    }

    #[test]
    fn identical_images_have_zero_distance() {
        let a = noise(64, 48, 1);
        assert!(dssim(&a, &a) < 1e-9);
    }

    #[test]
    fn distance_grows_with_damage() {
        let a = noise(96, 96, 1);
        let damage = |k: f64| {
            let mut b = a.to_rgb8();
            for (i, p) in b.pixels_mut().enumerate() {
                let d = if i % 2 == 0 { k } else { -k };
                p[0] = (f64::from(p[0]) + d).clamp(0.0, 255.0) as u8;
                p[1] = (f64::from(p[1]) - d).clamp(0.0, 255.0) as u8;
            }
            DynamicImage::ImageRgb8(b)
        };
        let (d1, d2, d3) = (
            dssim(&a, &damage(4.0)),
            dssim(&a, &damage(16.0)),
            dssim(&a, &damage(48.0)),
        );
        assert!(0.0 < d1 && d1 < d2 && d2 < d3, "{d1} {d2} {d3}");
    }

    #[test]
    fn tiny_and_mismatched_images_do_not_panic() {
        let a = noise(3, 2, 1);
        assert!(dssim(&a, &a) < 1e-9);
        assert!(dssim(&a, &noise(4, 2, 1)).is_infinite());
    }
}
