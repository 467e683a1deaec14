//! Gaussian blur and unsharp masking in time and memory proportional to the image, whatever
//! the sigma: small sigmas convolve with the exact (separable) kernel, larger ones with three
//! box passes of running sums (Wells 1986; Kovesi 2010), whose cost does not depend on the
//! radius. No buffer is sized by the sigma, so `bl:1e9` costs what `bl:50` costs. Both check
//! the deadline between rows, so a job stops soon after its request has given up.
//!
//! Written here rather than taken from a crate: the pipeline needs the per-row deadline
//! check, which neither `image`'s blur (whose kernel grows with the sigma) nor the SIMD blur
//! crates offer.

use image::DynamicImage;

use super::deadline::{Deadline, Expired};

/// Sigmas up to this use the exact kernel (at most 13 taps); above it three box passes
/// approximate it within about one level per channel.
const EXACT_UP_TO: f64 = 2.0;

/// Interleaved 8-bit samples: `width × height × channels`.
struct Planes<'a> {
    data: &'a mut [u8],
    width: usize,
    height: usize,
    channels: usize,
}

fn planes(img: &mut DynamicImage) -> Option<Planes<'_>> {
    let (width, height) = (img.width() as usize, img.height() as usize);
    let channels = usize::from(img.color().channel_count());
    let data: &mut [u8] = match img {
        DynamicImage::ImageLuma8(b) => b,
        DynamicImage::ImageLumaA8(b) => b,
        DynamicImage::ImageRgb8(b) => b,
        DynamicImage::ImageRgba8(b) => b,
        _ => return None,
    };
    Some(Planes {
        data,
        width,
        height,
        channels,
    })
}

/// Blurs `img` in place with a Gaussian of standard deviation `sigma` (pixels).
pub fn gaussian(img: &mut DynamicImage, sigma: f64, deadline: &Deadline) -> Result<(), Expired> {
    if sigma <= 0.0 || !sigma.is_finite() || img.width() == 0 || img.height() == 0 {
        return Ok(());
    }
    if planes(img).is_none() {
        // The pipeline works in 8-bit layouts only; anything else is converted first.
        *img = super::decode::to_8bit(std::mem::replace(img, DynamicImage::new_luma8(0, 0)));
    }
    // Past a few times the image's size every window holds the whole edge-extended line:
    // larger sigmas change nothing (and would overflow the radius arithmetic).
    let sigma = sigma.min(4.0 * f64::from(img.width().max(img.height())));
    let Some(p) = planes(img) else {
        return Ok(());
    };
    if sigma <= EXACT_UP_TO {
        exact(p, sigma, deadline)
    } else {
        boxes(p, sigma, deadline)
    }
}

/// Unsharp masking: each colour sample moves away from its blurred value by the difference
/// (alpha is left alone).
pub fn unsharpen(
    img: DynamicImage,
    sigma: f64,
    deadline: &Deadline,
) -> Result<DynamicImage, Expired> {
    let mut img = super::decode::to_8bit(img);
    let mut blurred = img.clone();
    gaussian(&mut blurred, sigma, deadline)?;
    let alpha = img.color().has_alpha();
    let (Some(orig), Some(soft)) = (planes(&mut img), planes(&mut blurred)) else {
        return Ok(img);
    };
    let c = orig.channels;
    let row = orig.width * c;
    for (y, (o, s)) in orig
        .data
        .chunks_mut(row.max(1))
        .zip(soft.data.chunks(row.max(1)))
        .enumerate()
    {
        if y % 16 == 0 {
            deadline.check()?;
        }
        for (i, (a, b)) in o.iter_mut().zip(s).enumerate() {
            if alpha && i % c == c - 1 {
                continue;
            }
            let v = 2 * i32::from(*a) - i32::from(*b);
            *a = v.clamp(0, 255) as u8;
        }
    }
    Ok(img)
}

/// Separable convolution with the sampled, normalised Gaussian (radius ⌈3σ⌉), edges
/// extended.
fn exact(p: Planes<'_>, sigma: f64, deadline: &Deadline) -> Result<(), Expired> {
    const ONE: u32 = 1 << 14;
    let radius = (3.0 * sigma).ceil() as usize;
    let raw: Vec<f64> = (0..=2 * radius)
        .map(|i| {
            let d = i as f64 - radius as f64;
            (-d * d / (2.0 * sigma * sigma)).exp()
        })
        .collect();
    let total: f64 = raw.iter().sum();
    let mut kernel: Vec<u32> = raw
        .iter()
        .map(|w| (w / total * f64::from(ONE)).round() as u32)
        .collect();
    // Rounding may leave the weights a unit off their sum; the centre takes it up.
    let sum: u32 = kernel.iter().sum();
    kernel[radius] = (kernel[radius] + ONE).saturating_sub(sum);
    let (w, h, c) = (p.width, p.height, p.channels);
    let row_len = w * c;
    let mut line = vec![0u8; row_len];
    for y in 0..h {
        if y % 16 == 0 {
            deadline.check()?;
        }
        let row = &mut p.data[y * row_len..(y + 1) * row_len];
        line.copy_from_slice(row);
        for x in 0..w {
            for ch in 0..c {
                let mut acc = 0u32;
                for (k, weight) in kernel.iter().enumerate() {
                    let sx = (x + k).saturating_sub(radius).min(w - 1);
                    acc += u32::from(line[sx * c + ch]) * weight;
                }
                row[x * c + ch] = ((acc + ONE / 2) >> 14) as u8;
            }
        }
    }
    let src = p.data.to_vec();
    let mut acc = vec![0u32; row_len];
    for y in 0..h {
        if y % 16 == 0 {
            deadline.check()?;
        }
        let out = &mut p.data[y * row_len..(y + 1) * row_len];
        acc.fill(0);
        for (k, weight) in kernel.iter().enumerate() {
            let sy = (y + k).saturating_sub(radius).min(h - 1);
            let from = &src[sy * row_len..(sy + 1) * row_len];
            for (a, v) in acc.iter_mut().zip(from) {
                *a += u32::from(*v) * weight;
            }
        }
        for (o, a) in out.iter_mut().zip(&acc) {
            *o = ((a + ONE / 2) >> 14) as u8;
        }
    }
    Ok(())
}

/// The three box radii whose successive passes have variance σ² (as near as odd widths get).
fn box_radii(sigma: f64) -> [usize; 3] {
    let n = 3.0;
    let ideal = (12.0 * sigma * sigma / n + 1.0).sqrt();
    let mut lower = ideal.floor() as i64;
    if lower % 2 == 0 {
        lower -= 1;
    }
    let upper = lower + 2;
    let l = lower as f64;
    let m = ((12.0 * sigma * sigma - n * l * l - 4.0 * n * l - 3.0 * n) / (-4.0 * l - 4.0)).round();
    std::array::from_fn(|i| {
        let width = if (i as f64) < m { lower } else { upper };
        (width.max(1) as usize - 1) / 2
    })
}

/// Three box passes in each direction: running sums, so each pass costs the same whatever
/// its radius. Radii beyond the image are cut to it: past that, every window already holds
/// the whole (edge-extended) line.
fn boxes(p: Planes<'_>, sigma: f64, deadline: &Deadline) -> Result<(), Expired> {
    let (w, h, c) = (p.width, p.height, p.channels);
    let mut other = vec![0u8; p.data.len()];
    for r in box_radii(sigma) {
        horizontal_box(p.data, w, h, c, r.min(4 * w), deadline)?;
        vertical_box(p.data, &mut other, w, h, c, r.min(4 * h), deadline)?;
        p.data.copy_from_slice(&other);
    }
    Ok(())
}

/// Sum of `line[clamp(i)]` for i in 1..=r, where `line` has `n` entries of stride `step`.
fn edge_extended_sum(n: usize, r: usize, at: impl Fn(usize) -> u32) -> u64 {
    let inside = r.min(n - 1);
    let mut s: u64 = (1..=inside).map(|i| u64::from(at(i))).sum();
    s += (r - inside) as u64 * u64::from(at(n - 1));
    s
}

fn horizontal_box(
    data: &mut [u8],
    w: usize,
    h: usize,
    c: usize,
    r: usize,
    deadline: &Deadline,
) -> Result<(), Expired> {
    if r == 0 {
        return Ok(());
    }
    let size = (2 * r + 1) as u64;
    let row_len = w * c;
    let mut line = vec![0u8; row_len];
    for y in 0..h {
        if y % 16 == 0 {
            deadline.check()?;
        }
        let row = &mut data[y * row_len..(y + 1) * row_len];
        line.copy_from_slice(row);
        for ch in 0..c {
            let at = |x: usize| u32::from(line[x.min(w - 1) * c + ch]);
            // Window [x - r, x + r] at x = 0: r + 1 copies of the first sample and 1..=r.
            let mut sum = (r as u64 + 1) * u64::from(at(0)) + edge_extended_sum(w, r, at);
            for x in 0..w {
                row[x * c + ch] = ((sum + size / 2) / size) as u8;
                let add = at(x + r + 1);
                let sub = at(x.saturating_sub(r));
                sum = sum + u64::from(add) - u64::from(sub);
            }
        }
    }
    Ok(())
}

fn vertical_box(
    src: &[u8],
    dst: &mut [u8],
    w: usize,
    h: usize,
    c: usize,
    r: usize,
    deadline: &Deadline,
) -> Result<(), Expired> {
    let row_len = w * c;
    if r == 0 {
        dst.copy_from_slice(src);
        return Ok(());
    }
    let size = (2 * r + 1) as u64;
    let row = |y: usize| &src[y.min(h - 1) * row_len..(y.min(h - 1) + 1) * row_len];
    // Column sums of the window around row 0, edge-extended.
    let mut sums: Vec<u64> = row(0)
        .iter()
        .map(|v| (r as u64 + 1) * u64::from(*v))
        .collect();
    let inside = r.min(h - 1);
    for y in 1..=inside {
        for (s, v) in sums.iter_mut().zip(row(y)) {
            *s += u64::from(*v);
        }
    }
    let extra = (r - inside) as u64;
    if extra > 0 {
        for (s, v) in sums.iter_mut().zip(row(h - 1)) {
            *s += extra * u64::from(*v);
        }
    }
    for y in 0..h {
        if y % 16 == 0 {
            deadline.check()?;
        }
        let out = &mut dst[y * row_len..(y + 1) * row_len];
        for (o, s) in out.iter_mut().zip(&sums) {
            *o = ((s + size / 2) / size) as u8;
        }
        let (add, sub) = (row(y + r + 1), row(y.saturating_sub(r)));
        for ((s, a), b) in sums.iter_mut().zip(add).zip(sub) {
            *s = *s + u64::from(*a) - u64::from(*b);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 255 / w.max(1)) as u8, (y * 255 / h.max(1)) as u8, 77])
        }))
    }

    #[test]
    fn box_radii_match_the_variance() {
        for sigma in [2.5f64, 3.0, 10.0, 50.0, 1000.0] {
            let v: f64 = box_radii(sigma)
                .iter()
                .map(|r| {
                    let w = (2 * r + 1) as f64;
                    (w * w - 1.0) / 12.0
                })
                .sum();
            assert!(
                (v.sqrt() - sigma).abs() / sigma < 0.15,
                "{sigma}: {}",
                v.sqrt()
            );
        }
    }

    #[test]
    fn a_flat_image_stays_flat_and_huge_sigmas_cost_the_same() {
        let d = Deadline::none();
        for sigma in [0.5, 1.9, 3.0, 40.0, 1e9, 1e300] {
            let mut img = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
                37,
                5,
                image::Rgba([10, 200, 30, 128]),
            ));
            gaussian(&mut img, sigma, &d).unwrap();
            assert!(
                img.to_rgba8().pixels().all(|p| p.0 == [10, 200, 30, 128]),
                "{sigma}"
            );
        }
    }

    #[test]
    fn box_and_exact_paths_agree_near_the_switch() {
        let d = Deadline::none();
        let mut a = gradient(64, 48);
        let mut b = a.clone();
        exact(planes(&mut a).unwrap(), 2.2, &d).unwrap();
        boxes(planes(&mut b).unwrap(), 2.2, &d).unwrap();
        let (a, b) = (a.to_rgb8(), b.to_rgb8());
        let max = a
            .as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(x, y)| x.abs_diff(*y))
            .max()
            .unwrap();
        assert!(max <= 2, "{max}");
    }

    #[test]
    fn a_huge_sigma_gives_the_edge_weighted_mean() {
        // A step from 0 to 255 at the middle: with the window far wider than the image,
        // every output sample sees as many extended left as right samples.
        let mut img = DynamicImage::ImageLuma8(image::GrayImage::from_fn(10, 1, |x, _| {
            image::Luma([if x < 5 { 0 } else { 255 }])
        }));
        gaussian(&mut img, 1e6, &Deadline::none()).unwrap();
        for p in img.to_luma8().pixels() {
            assert!((120..=135).contains(&p[0]), "{}", p[0]);
        }
    }

    #[test]
    fn a_passed_deadline_stops_the_work() {
        let past = Deadline::at(std::time::Instant::now());
        let mut img = gradient(32, 32);
        assert!(gaussian(&mut img, 30.0, &past).is_err());
        assert!(unsharpen(gradient(32, 32), 1.0, &past).is_err());
    }

    #[test]
    fn sharpening_leaves_alpha_and_flat_areas_alone() {
        let img = DynamicImage::ImageRgba8(image::RgbaImage::from_fn(8, 8, |x, _| {
            image::Rgba([if x < 4 { 50 } else { 200 }, 100, 100, 90])
        }));
        let out = unsharpen(img, 1.0, &Deadline::none()).unwrap().to_rgba8();
        assert!(out.pixels().all(|p| p[3] == 90 && p[1] == 100));
        assert!(out.get_pixel(3, 0)[0] < 50 && out.get_pixel(4, 0)[0] > 200);
    }
}
