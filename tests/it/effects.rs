//! Effects beyond geometry: smart crop, `pixelate` and the colour adjustments (`adjust`,
//! `brightness`, `contrast`, `saturation`, `monochrome`), checked numerically on synthetic
//! images through the whole engine (PNG output, so values are exact).

use image::{Rgb, RgbImage};
use pixgate::EngineConfig;

use crate::support::engine::render;
use crate::support::png;

fn run(src: &[u8], opts: &str) -> RgbImage {
    render(src, opts).to_rgb8()
}

fn solid(c: [u8; 3]) -> Vec<u8> {
    png(&RgbImage::from_pixel(8, 8, Rgb(c)))
}

#[test]
fn pixelate_averages_blocks() {
    let img = RgbImage::from_fn(20, 12, |x, y| Rgb([(x * 12) as u8, (y * 20) as u8, 100]));
    let out = run(&png(&img), "pix:8");
    assert_eq!(out.dimensions(), (20, 12));
    // Block (0,0): x 0..8, y 0..8 → mean red 42, green 70.
    for (x, y) in [(0, 0), (7, 7), (3, 5)] {
        assert_eq!(out.get_pixel(x, y).0, [42, 70, 100], "{x},{y}");
    }
    // The edge block x 16..20, y 8..12: red mean of 192..228 = 210, green of 160..220 = 190.
    assert_eq!(out.get_pixel(19, 11).0, [210, 190, 100]);
    assert_ne!(out.get_pixel(8, 0), out.get_pixel(7, 0));
}

#[test]
fn brightness_contrast_and_saturation() {
    let grey = solid([100, 100, 100]);
    assert_eq!(run(&grey, "br:40").get_pixel(0, 0).0, [140, 140, 140]);
    assert_eq!(run(&grey, "br:-200").get_pixel(0, 0).0, [0, 0, 0]);
    // Contrast 2 doubles the distance from 128: 100 → 72.
    assert_eq!(run(&grey, "co:2").get_pixel(0, 0).0, [72, 72, 72]);
    let red = solid([200, 40, 40]);
    let g = run(&red, "sa:0").get_pixel(0, 0).0;
    assert!(g[0] == g[1] && g[1] == g[2], "{g:?}");
    assert_eq!(run(&red, "sa:1").get_pixel(0, 0).0, [200, 40, 40]);
    let more = run(&red, "sa:1.5").get_pixel(0, 0).0;
    assert!(more[0] > 200 && more[1] < 40, "{more:?}");
    // `adjust` is the three at once, in the same order.
    assert_eq!(
        run(&red, "a:10:1.2:0.5"),
        run(&red, "br:10/co:1.2/sa:0.5"),
        "adjust equals its parts"
    );
}

#[test]
fn monochrome_uses_the_luma_and_the_colour() {
    let img = RgbImage::from_fn(16, 1, |x, _| {
        Rgb([(x * 16) as u8, 200, (255 - x * 16) as u8])
    });
    let src = png(&img);
    let grey = run(&src, "mc:1");
    for p in grey.pixels() {
        assert!(
            p[0] == p[1] && p[1] == p[2],
            "default colour is neutral: {p:?}"
        );
    }
    let sepia = run(&src, "mc:1:704214");
    for p in sepia.pixels() {
        assert!(p[0] >= p[1] && p[1] >= p[2], "sepia hue: {p:?}");
    }
    // Half intensity: halfway between the original and the full effect.
    let half = run(&src, "mc:0.5");
    let (o, f, h) = (
        img.get_pixel(3, 0),
        grey.get_pixel(3, 0),
        half.get_pixel(3, 0),
    );
    for c in 0..3 {
        let mid = (f64::from(o[c]) + f64::from(f[c])) / 2.0;
        assert!((f64::from(h[c]) - mid).abs() <= 1.0, "{o:?} {f:?} {h:?}");
    }
}

#[test]
fn effects_change_the_cache_key_and_the_etag() {
    let a = pixgate::request::options::Options::default();
    let mut b = a.clone();
    b.pixelate = 4;
    assert_ne!(a.canonical(), b.canonical());
}

/// A 1200x600 scene: a smooth sky gradient with the subject (a textured, skin-toned block)
/// at `subject_x`.
fn scene(subject_x: u32) -> Vec<u8> {
    let img = RgbImage::from_fn(1200, 600, |x, y| {
        if (subject_x..subject_x + 200).contains(&x) && (250..450).contains(&y) {
            let v = if (x / 6 + y / 6) % 2 == 0 { 40 } else { 0 };
            Rgb([200 - v, 145 - v, 112 - v])
        } else {
            Rgb([90 + (y / 20) as u8, 140 + (y / 30) as u8, 220])
        }
    });
    png(&img)
}

#[test]
fn smart_crop_keeps_an_off_centre_subject() {
    for subject_x in [40u32, 950] {
        let src = scene(subject_x);
        let centre = run(&src, "rs:fill:300:300");
        let smart = run(&src, "rs:fill:300:300/g:sm");
        assert_eq!(smart.dimensions(), (300, 300));
        // Scaled to 600x300: the subject spans x/2 .. x/2 + 100 there; the skin tone
        // (red clearly above blue) is inside the smart crop and absent from the centred one.
        let skin = |img: &RgbImage| {
            img.pixels()
                .filter(|p| u16::from(p[0]) > u16::from(p[2]) + 40)
                .count()
        };
        assert!(
            skin(&smart) > 80 * 80,
            "subject at {subject_x}: {} skin pixels",
            skin(&smart)
        );
        assert_eq!(skin(&centre), 0, "subject at {subject_x} is off-centre");
        // Deterministic.
        assert_eq!(smart, run(&src, "rs:fill:300:300/g:sm"));
    }
    // Nothing to choose between: the centred crop.
    let flat = solid([10, 20, 30]);
    assert_eq!(run(&flat, "rs:fill:4:8/g:sm"), run(&flat, "rs:fill:4:8"));
}

#[test]
fn smart_gravity_of_crop_finds_the_subject_before_the_resize() {
    let skin = |img: &RgbImage| {
        img.pixels()
            .filter(|p| u16::from(p[0]) > u16::from(p[2]) + 40)
            .count()
    };
    for subject_x in [40u32, 950] {
        let src = scene(subject_x);
        // A 400x400 window of the 1200x600 source, then halved.
        let smart = run(&src, "c:400:400:sm/rs:fit:200:200");
        assert_eq!(smart.dimensions(), (200, 200));
        // The subject is 200x200 in the source: 100x100 after halving, all inside.
        assert!(
            skin(&smart) > 90 * 90,
            "subject at {subject_x}: {}",
            skin(&smart)
        );
        assert_eq!(skin(&run(&src, "c:400:400/rs:fit:200:200")), 0);
        // The main gravity `sm` applies to `crop` too when the crop names none.
        assert_eq!(run(&src, "g:sm/c:400:400/rs:fit:200:200"), smart);
    }
    // Animations keep the centred crops: a window per frame would jump.
    let gif = crate::support::read("hostile/gif_300_frames_400x400_fullframe.gif");
    let cfg = EngineConfig::default();
    let smart = pixgate::transform(&gif, "rs:fill:60:30/g:sm/c:200:200:sm/maf:400", &cfg).unwrap();
    let centred = pixgate::transform(&gif, "rs:fill:60:30/c:200:200/maf:400", &cfg).unwrap();
    assert_eq!(smart.bytes, centred.bytes);
    // A JPEG decoded at a reduced scale maps the window back to source coordinates.
    let img = image::load_from_memory(&scene(950)).unwrap();
    let mut jpeg = std::io::Cursor::new(Vec::new());
    img.write_to(&mut jpeg, image::ImageFormat::Jpeg).unwrap();
    let small = run(jpeg.get_ref(), "c:400:400:sm/rs:fit:50:50");
    assert_eq!(small.dimensions(), (50, 50));
    assert!(skin(&small) > 20 * 20, "{}", skin(&small));
}
