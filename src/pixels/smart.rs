//! Smart crop (`g:sm`): where to put a crop window so it holds what a viewer looks at. The
//! smartcrop.js / libvips "attention" family: every pixel of a small copy (≤ 256 px a side)
//! scores for edges (Laplacian of luma), skin tone and saturation; a summed-area table then
//! gives every window position's total in O(1), and the best total wins, ties going to the
//! position nearest the centre. Deterministic, and a few milliseconds at any size.

use image::{DynamicImage, GenericImageView};

/// Longest side of the analysed copy.
const ANALYSIS_SIDE: u32 = 256;

/// The top-left corner for a `cw`×`ch` window on `img`.
pub fn position(img: &DynamicImage, cw: u32, ch: u32) -> (u32, u32) {
    let (w, h) = img.dimensions();
    if cw >= w && ch >= h {
        return (0, 0);
    }
    let k = (f64::from(ANALYSIS_SIDE) / f64::from(w.max(h))).min(1.0);
    let (sw, sh) = (
        ((f64::from(w) * k).round() as u32).max(1),
        ((f64::from(h) * k).round() as u32).max(1),
    );
    let small = if k < 1.0 {
        img.thumbnail_exact(sw, sh).to_rgb8()
    } else {
        img.to_rgb8()
    };
    let score = saliency(&small);
    // Window size in the analysed copy, at least one pixel.
    let (ww, wh) = (
        ((f64::from(cw) * f64::from(sw) / f64::from(w)).round() as u32).clamp(1, sw),
        ((f64::from(ch) * f64::from(sh) / f64::from(h)).round() as u32).clamp(1, sh),
    );
    let (bx, by) = best_window(&score, sw, sh, ww, wh);
    // Back to full size, kept inside the image.
    let x =
        ((f64::from(bx) * f64::from(w) / f64::from(sw)).round() as u32).min(w.saturating_sub(cw));
    let y =
        ((f64::from(by) * f64::from(h) / f64::from(sh)).round() as u32).min(h.saturating_sub(ch));
    (x, y)
}

/// Per-pixel interest of an RGB image, row-major.
fn saliency(img: &image::RgbImage) -> Vec<f32> {
    let (w, h) = img.dimensions();
    let luma: Vec<f32> = img
        .pixels()
        .map(|p| 0.2126 * f32::from(p[0]) + 0.7152 * f32::from(p[1]) + 0.0722 * f32::from(p[2]))
        .collect();
    let at = |x: i64, y: i64| {
        let x = x.clamp(0, i64::from(w) - 1) as usize;
        let y = y.clamp(0, i64::from(h) - 1) as usize;
        luma[y * w as usize + x]
    };
    let mut out = Vec::with_capacity(luma.len());
    for (i, p) in img.pixels().enumerate() {
        let (x, y) = ((i as u32 % w) as i64, (i as u32 / w) as i64);
        let l = at(x, y);
        let edge =
            (4.0 * l - at(x - 1, y) - at(x + 1, y) - at(x, y - 1) - at(x, y + 1)).abs() / 255.0;
        let (r, g, b) = (f32::from(p[0]), f32::from(p[1]), f32::from(p[2]));
        // Skin: the normalised colour's distance from a typical skin tone, in mid luma.
        let mag = (r * r + g * g + b * b).sqrt().max(1.0);
        let d =
            ((r / mag - 0.78).powi(2) + (g / mag - 0.57).powi(2) + (b / mag - 0.44).powi(2)).sqrt();
        let mid = (40.0..=240.0).contains(&l);
        let skin = if mid { (1.0 - d / 0.15).max(0.0) } else { 0.0 };
        let max = r.max(g).max(b);
        let sat = if mid && max > 0.0 {
            (max - r.min(g).min(b)) / max
        } else {
            0.0
        };
        // Weights as smartcrop.js: skin counts most, saturation least.
        out.push(edge + 1.8 * skin + 0.3 * sat * sat);
    }
    out
}

/// The top-left of the `ww`×`wh` window with the highest total score.
fn best_window(score: &[f32], w: u32, h: u32, ww: u32, wh: u32) -> (u32, u32) {
    let (w, h, ww, wh) = (w as usize, h as usize, ww as usize, wh as usize);
    // Summed-area table with a zero row and column; f64 so long sums stay exact enough.
    let mut sat = vec![0f64; (w + 1) * (h + 1)];
    for y in 0..h {
        let mut row = 0f64;
        for x in 0..w {
            row += f64::from(score[y * w + x]);
            sat[(y + 1) * (w + 1) + x + 1] = sat[y * (w + 1) + x + 1] + row;
        }
    }
    let total = |x: usize, y: usize| {
        let a = sat[y * (w + 1) + x];
        let b = sat[y * (w + 1) + x + ww];
        let c = sat[(y + wh) * (w + 1) + x];
        let d = sat[(y + wh) * (w + 1) + x + ww];
        d - b - c + a
    };
    let positions = || (0..=h - wh).flat_map(move |y| (0..=w - ww).map(move |x| (x, y)));
    let max = positions()
        .map(|(x, y)| total(x, y))
        .fold(f64::MIN, f64::max);
    // Totals within 0.1% of the best are ties: the most central of them wins.
    let (cx, cy) = ((w - ww) as f64 / 2.0, (h - wh) as f64 / 2.0);
    let off = |(x, y): (usize, usize)| (x as f64 - cx).powi(2) + (y as f64 - cy).powi(2);
    positions()
        .filter(|&(x, y)| total(x, y) >= max - max.abs() * 0.001 - 1e-9)
        .min_by(|a, b| off(*a).total_cmp(&off(*b)))
        .map_or((0, 0), |(x, y)| (x as u32, y as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busy_corner_wins_and_flat_images_stay_centred() {
        // A flat grey 400x200 image with a checkerboard in the right quarter.
        let mut img = image::RgbImage::from_pixel(400, 200, image::Rgb([120, 120, 120]));
        for y in 60..140 {
            for x in 310..390 {
                let v = if (x / 4 + y / 4) % 2 == 0 { 0 } else { 255 };
                img.put_pixel(x, y, image::Rgb([v, v, v]));
            }
        }
        let (x, _) = position(&DynamicImage::ImageRgb8(img), 200, 200);
        assert!(x >= 190, "window at {x} misses the subject at 310..390");
        let flat =
            DynamicImage::ImageRgb8(image::RgbImage::from_pixel(400, 200, image::Rgb([9, 9, 9])));
        assert_eq!(position(&flat, 200, 200), (100, 0));
    }
}
