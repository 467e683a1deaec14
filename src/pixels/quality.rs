//! The perceptual distance `autoquality` steers by: DSSIM (1/SSIM − 1) of a multi-scale
//! SSIM over luma and chroma. SSIM windows are 8×8 (Wang et al.'s original block size),
//! evaluated at every position through summed-area tables, so one comparison of two 800 px
//! images costs a few milliseconds and a quality search can afford several.
//!
//! Why not a crate: `dssim-core` (the reference DSSIM) is AGPL, and `ssimulacra2` spends
//! ~100 ms per 800 px comparison in its XYB blur pyramid — too slow to run up to six times
//! per request. The figures this gives are on DSSIM's scale (0 = identical, ~0.01 hard to
//! tell apart, > 0.05 visibly worse) but not numerically equal to `dssim`'s.

use image::{DynamicImage, GenericImageView};

/// Largest window side of the local statistics (smaller images use their short side).
const WINDOW: usize = 8;
/// Weights of the scales (full, ½, ¼): fine detail matters most for compression artefacts.
const SCALE_WEIGHTS: [f64; 3] = [0.5, 0.3, 0.2];
/// Chroma matters less to the eye than luma (and is subsampled by every lossy format here).
const CHROMA_WEIGHT: f64 = 0.25;
/// Images are compared at most this large: a metric over a bigger result would cost more
/// than its encodes, and fine detail past this is below what a viewer resolves anyway.
const MAX_COMPARED_PIXELS: u64 = 2_000_000;

/// The unencoded result, prepared once for a series of comparisons.
pub struct Reference {
    planes: Planes,
    /// The size candidates are brought to before comparing (the reference's, after the
    /// size cap).
    size: (u32, u32),
}

impl Reference {
    pub fn new(img: &DynamicImage) -> Reference {
        let size = compared_size(img.dimensions());
        Reference {
            planes: planes(&fit(img, size)),
            size,
        }
    }

    /// DSSIM of a candidate of the reference's original size; 0 means identical. Alpha is
    /// composited over mid-grey on both sides first, so differences in transparency count.
    pub fn dssim(&self, candidate: &DynamicImage) -> f64 {
        if compared_size(candidate.dimensions()) != self.size {
            return f64::INFINITY;
        }
        distance(&self.planes, &planes(&fit(candidate, self.size)))
    }
}

/// DSSIM between a reference and a candidate of the same size (one-off comparisons).
pub fn dssim(reference: &DynamicImage, candidate: &DynamicImage) -> f64 {
    if reference.dimensions() != candidate.dimensions() {
        return f64::INFINITY;
    }
    Reference::new(reference).dssim(candidate)
}

/// The size an image of `size` is compared at.
fn compared_size((w, h): (u32, u32)) -> (u32, u32) {
    let pixels = u64::from(w) * u64::from(h);
    if pixels <= MAX_COMPARED_PIXELS {
        return (w, h);
    }
    let k = (MAX_COMPARED_PIXELS as f64 / pixels as f64).sqrt();
    (
        ((f64::from(w) * k) as u32).max(1),
        ((f64::from(h) * k) as u32).max(1),
    )
}

fn fit(img: &DynamicImage, (w, h): (u32, u32)) -> std::borrow::Cow<'_, DynamicImage> {
    if img.dimensions() == (w, h) {
        std::borrow::Cow::Borrowed(img)
    } else {
        std::borrow::Cow::Owned(img.thumbnail_exact(w, h))
    }
}

fn distance(a: &Planes, b: &Planes) -> f64 {
    let mut total = 0.0;
    let mut weights = 0.0;
    let (mut a, mut b) = (a.clone(), b.clone());
    for (i, w) in SCALE_WEIGHTS.iter().enumerate() {
        if a.width < 2 || a.height < 2 {
            break;
        }
        let y = ssim(&a.y, &b.y, a.width, a.height);
        // Chroma from the half-size level: what the encoders keep (4:2:0) and cheaper.
        let chroma = (i == 0)
            .then(|| (a.half(), b.half()))
            .filter(|(ha, _)| ha.width >= 2 && ha.height >= 2)
            .map(|(ha, hb)| {
                let cb = ssim(&ha.cb, &hb.cb, ha.width, ha.height);
                let cr = ssim(&ha.cr, &hb.cr, ha.width, ha.height);
                (cb + cr) / 2.0
            });
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
        // A single row or column: compare means (there is no neighbourhood to speak of).
        let mean = |p: &[f32]| p.iter().map(|&v| f64::from(v)).sum::<f64>() / p.len() as f64;
        return (mean(&a.y) - mean(&b.y)).abs() / 255.0;
    }
    let s = (total / weights).max(1e-6);
    (1.0 / s - 1.0).max(0.0)
}

/// An image as Y, Cb, Cr planes (BT.601, full range).
#[derive(Clone)]
struct Planes {
    width: usize,
    height: usize,
    y: Vec<f32>,
    cb: Vec<f32>,
    cr: Vec<f32>,
}

fn planes(img: &DynamicImage) -> Planes {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let n = w * h;
    let (mut y, mut cb, mut cr) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let mut push = |p: [u8; 4]| {
        let a = f32::from(p[3]) / 255.0;
        let over = |c: u8| f32::from(c) * a + 128.0 * (1.0 - a);
        let (r, g, b) = (over(p[0]), over(p[1]), over(p[2]));
        y.push(0.299 * r + 0.587 * g + 0.114 * b);
        cb.push(-0.168_736 * r - 0.331_264 * g + 0.5 * b + 128.0);
        cr.push(0.5 * r - 0.418_688 * g - 0.081_312 * b + 128.0);
    };
    match img {
        DynamicImage::ImageRgb8(b) => b.pixels().for_each(|p| push([p[0], p[1], p[2], 255])),
        DynamicImage::ImageRgba8(b) => b.pixels().for_each(|p| push(p.0)),
        other => other.to_rgba8().pixels().for_each(|p| push(p.0)),
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

/// Mean SSIM over every window (8×8, or the short side when smaller) of two planes. Window
/// sums come from per-column sums over the last rows, slid across each row: memory is a few
/// rows, not a table of the image.
fn ssim(a: &[f32], b: &[f32], w: usize, h: usize) -> f64 {
    const C1: f64 = (0.01 * 255.0) * (0.01 * 255.0);
    const C2: f64 = (0.03 * 255.0) * (0.03 * 255.0);
    let win = WINDOW.min(w).min(h);
    let n = (win * win) as f64;
    let stats = |i: usize| {
        let (va, vb) = (f64::from(a[i]), f64::from(b[i]));
        [va, vb, va * va, vb * vb, va * vb]
    };
    let mut cols = vec![[0f64; 5]; w];
    let mut total = 0.0;
    let mut count = 0u64;
    for y in 0..h {
        for (x, col) in cols.iter_mut().enumerate() {
            let add = stats(y * w + x);
            let sub = if y >= win {
                stats((y - win) * w + x)
            } else {
                [0.0; 5]
            };
            for k in 0..5 {
                col[k] += add[k] - sub[k];
            }
        }
        if y + 1 < win {
            continue;
        }
        let mut s = [0f64; 5];
        for (x, col) in cols.iter().enumerate() {
            for k in 0..5 {
                s[k] += col[k];
            }
            if x >= win {
                for k in 0..5 {
                    s[k] -= cols[x - win][k];
                }
            }
            if x + 1 < win {
                continue;
            }
            let (ma, mb) = (s[0] / n, s[1] / n);
            let va = (s[2] / n - ma * ma).max(0.0);
            let vb = (s[3] / n - mb * mb).max(0.0);
            let cov = s[4] / n - ma * mb;
            total += ((2.0 * ma * mb + C1) * (2.0 * cov + C2))
                / ((ma * ma + mb * mb + C1) * (va + vb + C2));
            count += 1;
        }
    }
    total / count.max(1) as f64
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
    fn tiny_thin_and_mismatched_images() {
        let a = noise(3, 2, 1);
        assert!(dssim(&a, &a) < 1e-9);
        assert!(dssim(&a, &noise(4, 2, 1)).is_infinite());
        // A 400x4 banner still has local structure to compare (4x4 windows): damage shows.
        let banner = noise(400, 4, 3);
        let mut worse = banner.to_rgb8();
        for p in worse.pixels_mut().step_by(2) {
            p[0] = p[0].wrapping_add(60);
        }
        assert!(dssim(&banner, &DynamicImage::ImageRgb8(worse)) > 0.01);
        let line = noise(50, 1, 3);
        assert!(dssim(&line, &line) < 1e-9);
    }

    #[test]
    fn large_images_are_compared_at_a_capped_size() {
        let big = noise(2000, 1500, 5);
        let r = Reference::new(&big);
        assert!(r.size.0 as u64 * r.size.1 as u64 <= MAX_COMPARED_PIXELS);
        assert!(r.dssim(&big) < 1e-9);
        assert!(r.dssim(&noise(2000, 1500, 6)) > 0.05);
    }
}
