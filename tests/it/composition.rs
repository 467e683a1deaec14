//! Options that change what is in the picture besides scaling: `trim`, `crop_aspect_ratio`,
//! `background_alpha` and `watermark` (engine, CLI and server configuration), checked
//! numerically on synthetic images through the whole engine (PNG output: exact values).

use std::sync::Arc;

use image::{Rgb, RgbImage, Rgba, RgbaImage};
use pixgate::EngineConfig;

use crate::support::Origin;
use crate::support::engine::{render, render_with};
use crate::support::{Pixgate, test_config};
use crate::support::{TempDir, decode, path_str, png, run_pixgate};

fn run_with(src: &[u8], opts: &str, cfg: &EngineConfig) -> RgbaImage {
    render_with(src, opts, cfg).to_rgba8()
}

fn run(src: &[u8], opts: &str) -> RgbaImage {
    render(src, opts).to_rgba8()
}

/// 400x300 white with a red 150x150 square at (100, 50).
fn framed() -> RgbImage {
    RgbImage::from_fn(400, 300, |x, y| {
        if (100..250).contains(&x) && (50..200).contains(&y) {
            Rgb([200, 30, 30])
        } else {
            Rgb([255, 255, 255])
        }
    })
}

#[test]
fn trim_cuts_the_border_and_plans_on_what_is_left() {
    let src = png(&framed());
    let out = run(&src, "t:10");
    assert_eq!(out.dimensions(), (150, 150));
    assert!(out.pixels().all(|p| p.0 == [200, 30, 30, 255]));
    // Equal sides: the smaller cut on both sides of that axis.
    assert_eq!(run(&src, "t:10::1").dimensions(), (200, 150));
    assert_eq!(run(&src, "t:10:::1").dimensions(), (150, 200));
    assert_eq!(run(&src, "t:10::1:1").dimensions(), (200, 200));
    // The resize sees the trimmed size.
    assert_eq!(run(&src, "t:10/rs:fit:75:75").dimensions(), (75, 75));
    assert_eq!(run(&src, "t:10/rs:fill:50:100").dimensions(), (50, 100));
    // Given colour: red is the "border", the white frame stays, so nothing is cut.
    assert_eq!(run(&src, "t:10:c81e1e").dimensions(), (400, 300));
    // A threshold above every difference keeps the image whole.
    assert_eq!(run(&src, "t:255").dimensions(), (400, 300));
    // A uniform image has nothing to keep: untouched, not emptied.
    let flat = png(&RgbImage::from_pixel(30, 20, Rgb([9, 9, 9])));
    assert_eq!(run(&flat, "t:0").dimensions(), (30, 20));
}

#[test]
fn trim_of_transparency_and_of_a_jpeg() {
    // Transparent border, opaque green disc: trimmed to the disc's box.
    let disc = RgbaImage::from_fn(100, 100, |x, y| {
        let (dx, dy) = (x as i32 - 50, y as i32 - 50);
        if dx * dx + dy * dy < 30 * 30 {
            Rgba([0, 200, 0, 255])
        } else {
            Rgba([0, 0, 0, 0])
        }
    });
    let out = run(&png(&disc), "t:10");
    assert_eq!(out.dimensions(), (59, 59));
    assert_eq!(out.get_pixel(29, 29).0, [0, 200, 0, 255]);
    // JPEG: decoded at full size for trim (no DCT scaling), block noise within threshold.
    let img = image::DynamicImage::ImageRgb8(framed());
    let mut jpeg = std::io::Cursor::new(Vec::new());
    img.write_to(&mut jpeg, image::ImageFormat::Jpeg).unwrap();
    let out = run(jpeg.get_ref(), "t:40/rs:fit:0:75");
    let (w, h) = out.dimensions();
    assert!((74..=76).contains(&w) && h == 75, "{w}x{h}");
    // Animated sources keep every frame and skip trim (as imgproxy does).
    let gif = crate::support::read("hostile/gif_300_frames_400x400_fullframe.gif");
    let cfg = EngineConfig::default();
    let o = pixgate::transform(&gif, "t:10/rs:fit:50:50/f:png", &cfg).unwrap();
    assert_eq!((o.width, o.height), (50, 50));
}

#[test]
fn crop_aspect_ratio_shrinks_or_enlarges_the_crop() {
    let src = png(&framed());
    // Without `crop` the whole image is the area: 400x300 → 1:1 by shrinking the width.
    assert_eq!(run(&src, "car:1").dimensions(), (300, 300));
    assert_eq!(run(&src, "car:2").dimensions(), (400, 200));
    // With a crop: shrink one side, or enlarge the other as far as the image allows.
    assert_eq!(run(&src, "c:200:200/car:2").dimensions(), (200, 100));
    assert_eq!(run(&src, "c:200:200/car:2:1").dimensions(), (400, 200));
    assert_eq!(run(&src, "c:300:200/car:0.5:1").dimensions(), (150, 300));
    // The corrected area is placed by the crop's gravity: top-left corner is white, and the
    // centred 150x150 window over the square is all red.
    let nowe = run(&src, "c:300:300:nowe/car:2");
    assert_eq!(nowe.dimensions(), (300, 150));
    assert_eq!(nowe.get_pixel(0, 0).0, [255, 255, 255, 255]);
    // 150x300 → 150x150, centred at (125, 75): the square's right edge (x 250) is at 125.
    let centred = run(&src, "c:150:300/car:1");
    assert_eq!(centred.dimensions(), (150, 150));
    assert_eq!(centred.get_pixel(120, 10).0, [200, 30, 30, 255]);
    assert_eq!(centred.get_pixel(130, 10).0, [255, 255, 255, 255]);
    // And the resize follows.
    assert_eq!(run(&src, "car:1/rs:fit:100:100").dimensions(), (100, 100));
}

fn disc() -> Vec<u8> {
    png(&RgbaImage::from_fn(40, 40, |x, y| {
        if (10..30).contains(&x) && (10..30).contains(&y) {
            Rgba([0, 200, 0, 255])
        } else if x < 10 {
            Rgba([0, 0, 255, 128])
        } else {
            Rgba([0, 0, 0, 0])
        }
    }))
}

#[test]
fn background_alpha_makes_the_background_translucent() {
    let src = disc();
    let out = run(&src, "bg:ff0000/bga:0.5");
    // Transparent → the background at half opacity; opaque stays; half-transparent blue
    // over half-transparent red: alpha 0.5 + 0.5·0.5 = 0.75, colour weighted 2:1 to blue.
    assert_eq!(out.get_pixel(35, 35).0, [255, 0, 0, 128]);
    assert_eq!(out.get_pixel(20, 20).0, [0, 200, 0, 255]);
    let p = out.get_pixel(2, 35).0;
    assert!(
        p[3].abs_diff(191) <= 1 && p[0].abs_diff(85) <= 1 && p[2].abs_diff(170) <= 1,
        "{p:?}"
    );
    // Canvas areas (padding) get the same translucent background.
    let padded = run(&src, "bg:ff0000/bga:0.25/pd:5");
    assert_eq!(padded.dimensions(), (50, 50));
    assert_eq!(padded.get_pixel(0, 0).0, [255, 0, 0, 64]);
    // bga 0: transparent where the image is, the colour kept for premultiplied-free PNG.
    assert_eq!(run(&src, "bg:ff0000/bga:0").get_pixel(35, 35)[3], 0);
    // bga 1 is plain `bg` (opaque).
    assert_eq!(run(&src, "bg:ff0000/bga:1"), run(&src, "bg:ff0000"));
    // A format without alpha flattens onto the opaque colour.
    let jpeg = pixgate::transform(
        &src,
        "bg:ff0000/bga:0.5/f:jpg/q:100",
        &EngineConfig::default(),
    )
    .unwrap();
    let p = decode(&jpeg.bytes).to_rgb8().get_pixel(37, 37).0;
    assert!(p[0] > 240 && p[1] < 15 && p[2] < 15, "{p:?}");
    // Without `bg`, bga has nothing to act on.
    assert_eq!(run(&src, "bga:0.5"), run(&src, ""));
}

/// A 40x20 blue mark, alpha 200.
fn mark() -> Arc<RgbaImage> {
    Arc::new(RgbaImage::from_pixel(40, 20, Rgba([0, 0, 255, 200])))
}

fn white(w: u32, h: u32) -> Vec<u8> {
    png(&RgbImage::from_pixel(w, h, Rgb([255, 255, 255])))
}

/// The bounding box of blue-tinted pixels.
fn blue_box(img: &RgbaImage) -> Option<(u32, u32, u32, u32)> {
    let mut b: Option<(u32, u32, u32, u32)> = None;
    for (x, y, p) in img.enumerate_pixels() {
        if p[2] > p[0].saturating_add(20) {
            b = Some(match b {
                None => (x, y, x, y),
                Some((x0, y0, x1, y1)) => (x0.min(x), y0.min(y), x1.max(x), y1.max(y)),
            });
        }
    }
    b
}

#[test]
fn watermark_position_opacity_scale_and_tiling() {
    let cfg = EngineConfig {
        watermark: Some(mark()),
        ..EngineConfig::default()
    };
    let src = white(200, 100);
    // Bottom right, 10 px in: alpha 200 × 0.5 = 100 over white.
    let out = run_with(&src, "wm:0.5:soea:10:10", &cfg);
    assert_eq!(blue_box(&out), Some((150, 70, 189, 89)));
    assert_eq!(out.get_pixel(160, 80).0, [155, 155, 255, 255]);
    assert_eq!(out.get_pixel(5, 5).0, [255, 255, 255, 255]);
    // Centre by default; opacity 1 keeps the mark's own alpha.
    let out = run_with(&src, "wm:1", &cfg);
    assert_eq!(blue_box(&out), Some((80, 40, 119, 59)));
    assert_eq!(out.get_pixel(100, 50).0, [55, 55, 255, 255]);
    // Scale is relative to the result: 0.5 of 200x100 → fits 100x50 → 100x50.
    assert_eq!(
        blue_box(&run_with(&src, "wm:1:nowe:0:0:0.5", &cfg)),
        Some((0, 0, 99, 49))
    );
    // Pixel offsets follow dpr (after the resize): 2x → 20 px.
    let out = run_with(
        &white(400, 200),
        "rs:fit:100:50/dpr:2/wm:1:nowe:10:10",
        &cfg,
    );
    assert_eq!(out.dimensions(), (200, 100));
    assert_eq!(blue_box(&out).map(|b| (b.0, b.1)), Some((20, 20)));
    // `re` tiles the whole image, offsets are the gaps between tiles.
    let out = run_with(&src, "wm:1:re:10:5", &cfg);
    for (x, y, blue) in [
        (0, 0, true),
        (39, 19, true),
        (45, 5, false),
        (50, 0, true),
        (5, 22, false),
        (5, 25, true),
        (189, 94, true),
        (199, 99, false),
    ] {
        assert_eq!(
            out.get_pixel(x, y)[2] > out.get_pixel(x, y)[0],
            blue,
            "{x},{y}"
        );
    }
    // A tiny tile costs no more than a big one: work is per result pixel.
    let tiny = run_with(&white(300, 200), "wm:1:re:0:0:0.001", &cfg);
    assert_eq!(tiny.get_pixel(0, 0)[2], 255);
    assert!(tiny.get_pixel(0, 0)[0] < 255, "1-px tiles everywhere");
    // A mark larger than the result is shrunk to fit it.
    let small = run_with(&white(20, 20), "wm:1", &cfg);
    // (Centred as gravity centres: (20 - 10 + 1) / 2 rounded to even.)
    assert_eq!(blue_box(&small), Some((0, 6, 19, 15)));
    // The server's watermark_opacity multiplies.
    let faint = EngineConfig {
        watermark_opacity: 0.5,
        ..cfg.clone()
    };
    assert_eq!(
        run_with(&src, "wm:1", &faint).get_pixel(100, 50).0,
        run_with(&src, "wm:0.5", &cfg).get_pixel(100, 50).0
    );
    // wm:0 is off; without a configured watermark `wm` is ignored (as imgproxy).
    assert_eq!(run_with(&src, "wm:0", &cfg), run(&src, ""));
    assert_eq!(run(&src, "wm:1:soea"), run(&src, ""));
    // Animated results get the mark on every frame.
    let gif = crate::support::read("hostile/gif_300_frames_400x400_fullframe.gif");
    let o = pixgate::transform(&gif, "rs:fit:80:80/wm:1:nowe/f:webp/maf:400", &cfg).unwrap();
    assert_eq!((o.width, o.height), (80, 80));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watermark_from_file_url_and_cli() {
    let dir = TempDir::new("wm");
    let mark_file = dir.path("mark.png");
    std::fs::write(&mark_file, png(&*mark())).unwrap();
    let src_file = dir.path("white.png");
    std::fs::write(&src_file, white(200, 100)).unwrap();

    // Server with watermark_path.
    let raw = pixgate::config::RawConfig {
        local_root: dir.0.to_string_lossy().into_owned(),
        watermark_path: path_str(&mark_file).to_string(),
        ..test_config()
    };
    let px = Pixgate::start(raw).await;
    let r = px
        .get("/insecure/wm:1:soea/f:png/plain/local:///white.png")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        blue_box(&decode(&r.body).to_rgba8()),
        Some((160, 80, 199, 99))
    );
    px.stop().await;

    // Server with watermark_url, fetched once from a real origin at start.
    let origin = Origin::start().await;
    let raw = pixgate::config::RawConfig {
        local_root: dir.0.to_string_lossy().into_owned(),
        watermark_url: origin.url("/f/conformance/png/pngsuite/basn6a08.png"),
        ..test_config()
    };
    let px = Pixgate::start(raw).await;
    assert_eq!(origin.hits(), 1);
    let r = px
        .get("/insecure/wm:1:nowe/f:png/plain/local:///white.png")
        .await;
    assert_eq!(r.status, 200);
    let out = decode(&r.body).to_rgba8();
    assert_ne!(out.get_pixel(16, 16), out.get_pixel(100, 50));
    assert_eq!(out.get_pixel(100, 50).0, [255, 255, 255, 255]);
    px.stop().await;

    // Configuration errors are reported at start, not per request.
    let both = pixgate::config::RawConfig {
        watermark_path: path_str(&mark_file).to_string(),
        watermark_url: "http://127.0.0.1:1/x.png".into(),
        ..test_config()
    };
    assert!(pixgate::config::from_raw(both).is_err());
    let missing = pixgate::config::RawConfig {
        watermark_path: "/nonexistent/mark.png".into(),
        ..test_config()
    };
    let errs = pixgate::config::from_raw(missing).unwrap_err();
    assert!(
        errs.iter().any(|e| e.contains("watermark_path")),
        "{errs:?}"
    );
    let not_image = pixgate::config::RawConfig {
        watermark_data: "aGVsbG8=".into(),
        ..test_config()
    };
    assert!(pixgate::config::from_raw(not_image).is_err());

    // The CLI takes the mark as a flag.
    let out_file = dir.path("out.png");
    let run = run_pixgate(
        &[
            "transform",
            "--watermark",
            path_str(&mark_file),
            path_str(&src_file),
            "wm:1:sowe",
            path_str(&out_file),
        ],
        std::time::Duration::from_secs(30),
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let out = image::open(&out_file).unwrap().to_rgba8();
    assert_eq!(blue_box(&out), Some((0, 80, 39, 99)));
}
