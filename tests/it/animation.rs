//! Animated GIF and WebP: kept animated with every frame transformed, timing and loop count
//! carried over, disposal resolved to what browsers show (checked against the `image`
//! crate's compositing), AVIF never chosen for an animation, frame limits from the header,
//! memory bounded by one frame.

use std::time::Duration;

use image::{AnimationDecoder, RgbaImage};
use pixgate::EngineConfig;

use crate::support::{Pixgate, get, test_config};
use crate::support::{TempDir, diff, fixture, path_str, read, run_pixgate};

/// Frames as a browser shows them, with their delays in ms: GIF by the `image` crate.
fn frames(bytes: &[u8]) -> Vec<(RgbaImage, u32)> {
    let to_ms = |f: &image::Frame| {
        let (n, d) = f.delay().numer_denom_ms();
        n / d.max(1)
    };
    let collect = |frames: image::Frames| {
        frames
            .collect_frames()
            .expect("frames decode")
            .into_iter()
            .map(|f| {
                let ms = to_ms(&f);
                (f.into_buffer(), ms)
            })
            .collect()
    };
    if bytes.starts_with(b"GIF") {
        collect(
            image::codecs::gif::GifDecoder::new(std::io::Cursor::new(bytes))
                .unwrap()
                .into_frames(),
        )
    } else {
        // WebP through libwebp's own demuxer (the reference implementation; the `image`
        // crate's WebP compositing keeps pixels that dispose-to-background must clear).
        let info = pixgate::pixels::probe::probe(bytes).unwrap();
        let mut frames =
            pixgate::pixels::anim::Frames::new(bytes, &info, &pixgate::pixels::Deadline::none())
                .unwrap();
        let mut out = Vec::new();
        while let Some(f) = frames.next_frame().unwrap() {
            out.push((f.image, f.delay_ms));
        }
        out
    }
}

/// Fully transparent pixels all alike: their colour is not part of the picture (lossy WebP
/// does not keep it).
fn visible(img: &RgbaImage) -> RgbaImage {
    let mut out = img.clone();
    for p in out.pixels_mut() {
        if p[3] == 0 {
            *p = image::Rgba([0; 4]);
        }
    }
    out
}

/// A 6-frame 40x30 GIF exercising sub-rectangles, transparency and all three disposals;
/// delays 10..60 cs, repeated 3 more times.
fn disposal_gif() -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = gif::Encoder::new(&mut out, 40, 30, &[]).unwrap();
        enc.set_repeat(gif::Repeat::Finite(3)).unwrap();
        let colours: [[u8; 4]; 6] = [
            [200, 30, 30, 255],
            [30, 200, 30, 255],
            [30, 30, 200, 255],
            [220, 220, 30, 255],
            [30, 220, 220, 255],
            [220, 30, 220, 255],
        ];
        for (i, c) in colours.iter().enumerate() {
            // Frame 0 covers the screen; the others are 16x12 patches with a transparent
            // hole, moving right, with Keep, Background and Previous disposal in turn.
            let (x, y, w, h) = if i == 0 {
                (0u16, 0u16, 40u16, 30u16)
            } else {
                (4 * i as u16, 3 + i as u16, 16, 12)
            };
            let mut px = Vec::new();
            for yy in 0..h {
                for xx in 0..w {
                    let hole = i > 0 && (6..10).contains(&xx) && (4..8).contains(&yy);
                    px.extend_from_slice(if hole { &[0, 0, 0, 0] } else { c });
                }
            }
            let mut f = gif::Frame::from_rgba_speed(w, h, &mut px, 1);
            f.left = x;
            f.top = y;
            f.delay = 10 * (i as u16 + 1);
            f.dispose = match i % 3 {
                0 => gif::DisposalMethod::Keep,
                1 => gif::DisposalMethod::Background,
                _ => gif::DisposalMethod::Previous,
            };
            enc.write_frame(&f).unwrap();
        }
    }
    out
}

#[test]
fn gif_round_trip_keeps_frames_delays_loops_and_what_each_frame_shows() {
    let src = disposal_gif();
    let expected = frames(&src);
    assert_eq!(expected.len(), 6);
    let cfg = EngineConfig::default();
    for opts in ["f:gif", "f:webp/q:100"] {
        let out = pixgate::transform(&src, opts, &cfg).unwrap();
        let got = frames(&out.bytes);
        assert_eq!(got.len(), 6, "{opts}: frame count");
        for (i, ((g, gd), (e, ed))) in got.iter().zip(&expected).enumerate() {
            assert_eq!(gd, ed, "{opts}: frame {i} delay");
            let (mean, max) = diff(&visible(g), &visible(e));
            // Lossy WebP subsamples chroma (these are 16 px patches of saturated colour), so
            // only GIF is held to a small maximum.
            let ok = if opts.starts_with("f:webp") {
                mean < 4.0
            } else {
                mean < 2.0 && max < 40
            };
            assert!(ok, "{opts}: frame {i} differs: {mean:.2}/{max}");
            // Transparency survives where the source shows none of the frames.
            assert_eq!(
                g.get_pixel(39, 29)[3],
                e.get_pixel(39, 29)[3],
                "{opts}: frame {i}"
            );
        }
        let info = pixgate::pixels::probe::probe(&out.bytes).unwrap();
        assert_eq!(
            (info.frames, info.plays),
            (6, 4),
            "{opts}: frames and plays"
        );
    }
}

#[test]
fn every_frame_goes_through_the_same_plan() {
    let src = read("conformance/gif/image-gif-tests/samples/moon_impact.gif");
    let source_frames = frames(&src);
    let cfg = EngineConfig::default();
    let out = pixgate::transform(&src, "rs:fill:60:40/fl:1", &cfg).unwrap();
    let got = frames(&out.bytes);
    // Identical consecutive frames are merged (their delays summed): the total time and
    // the sequence are what the source shows.
    let total = |f: &[(RgbaImage, u32)]| f.iter().map(|(_, d)| d).sum::<u32>();
    assert_eq!(total(&got), total(&source_frames));
    assert!(got.len() > 1 && got.len() <= source_frames.len());
    for (img, _) in &got {
        assert_eq!(img.dimensions(), (60, 40));
    }
    // The last frame: the source's last frame filled to 60x40 and mirrored.
    let reference = image::DynamicImage::ImageRgba8(source_frames.last().unwrap().0.clone())
        .resize_to_fill(60, 40, image::imageops::FilterType::Lanczos3)
        .fliph()
        .to_rgba8();
    let (mean, _) = diff(&got.last().unwrap().0, &reference);
    assert!(mean < 12.0, "last frame mean difference {mean:.2}");
}

#[test]
fn animated_webp_to_gif_and_still_outputs_take_the_first_frame() {
    let src = read("conformance/webp/image-webp/animated/random_lossy.webp");
    let source = frames(&src);
    let cfg = EngineConfig::default();
    let gif = pixgate::transform(&src, "f:gif", &cfg).unwrap();
    let got = frames(&gif.bytes);
    assert_eq!(got.len(), source.len());
    for ((_, gd), (_, sd)) in got.iter().zip(&source) {
        // GIF stores centiseconds.
        assert_eq!(*gd, sd.div_ceil(10) * 10);
    }
    // Random noise: JPEG needs q:100 to stay close.
    for format in ["png", "jpg/q:100", "avif"] {
        let still = pixgate::transform(&src, &format!("f:{format}"), &cfg).unwrap();
        let img = crate::support::decode(&still.bytes).to_rgba8();
        let first = &source[0].0;
        let (mean, _) = diff(&img, first);
        assert!(mean < 6.0, "{format}: first frame differs by {mean:.2}");
    }
}

#[test]
fn frame_limits_come_from_the_header() {
    let cfg = EngineConfig::default();
    let src = read("hostile/gif_10000_frames_1x1.gif");
    let e = pixgate::transform(&src, "rs:fit:10:10", &cfg).unwrap_err();
    assert_eq!((e.status(), e.code()), (422, "too-many-frames"));
    // A still output needs one frame only.
    assert!(pixgate::transform(&src, "f:png", &cfg).is_ok());
    // max_animation_frames = 1: imgproxy's default, first frame only.
    let one = EngineConfig {
        max_animation_frames: 1,
        ..EngineConfig::default()
    };
    let moon = read("conformance/gif/image-gif-tests/samples/moon_impact.gif");
    let out = pixgate::transform(&moon, "rs:fit:50:50", &one).unwrap();
    assert_eq!(frames(&out.bytes).len(), 1);
    // The per-frame resolution cap.
    let capped = EngineConfig {
        max_animation_frame_resolution: Some(0.01),
        ..EngineConfig::default()
    };
    let e = pixgate::transform(&moon, "rs:fit:50:50", &capped).unwrap_err();
    assert_eq!(e.code(), "source-resolution-too-large");
}

/// A 1500x1500 screen with 200 small frames: decoding all frames at canvas size would hold
/// 1.8 GB; streaming holds one canvas and one result frame.
#[test]
fn memory_is_bounded_by_one_frame() {
    let mut gif = Vec::new();
    {
        let mut enc = gif::Encoder::new(&mut gif, 1500, 1500, &[]).unwrap();
        enc.set_repeat(gif::Repeat::Infinite).unwrap();
        for i in 0..200u16 {
            let mut px = [(i % 250) as u8, 90, 200, 255].repeat(64);
            let mut f = gif::Frame::from_rgba_speed(8, 8, &mut px, 10);
            f.left = (i * 7) % 1490;
            f.top = (i * 13) % 1490;
            f.delay = 2;
            enc.write_frame(&f).unwrap();
        }
    }
    let dir = TempDir::new("anim-mem");
    let input = dir.path("in.gif");
    std::fs::write(&input, &gif).unwrap();
    let out = dir.path("out.gif");
    let run = run_pixgate(
        &[
            "transform",
            path_str(&input),
            "rs:fit:200:200",
            path_str(&out),
        ],
        Duration::from_secs(120),
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.max_rss_kib < 300 * 1024,
        "peak RSS {} MiB",
        run.max_rss_kib / 1024
    );
    let got = frames(&std::fs::read(&out).unwrap());
    assert_eq!(got.len(), 200);
    assert_eq!(got[0].0.dimensions(), (200, 200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiation_never_turns_an_animation_into_avif() {
    let dir = TempDir::new("anim-serve");
    std::fs::copy(
        fixture("conformance/gif/image-gif-tests/samples/moon_impact.gif"),
        dir.path("moon.gif"),
    )
    .unwrap();
    std::fs::copy(
        fixture("photos/lomiri16_seeding_baseline.jpg"),
        dir.path("photo.jpg"),
    )
    .unwrap();
    let px = Pixgate::start(pixgate::config::RawConfig {
        local_root: path_str(&dir.0).into(),
        ..test_config()
    })
    .await;
    let anim = "/insecure/rs:fit:60:60/plain/local:///moon.gif";
    let still = "/insecure/rs:fit:60:60/plain/local:///photo.jpg";
    for (path, accept, ty, animated) in [
        (anim, "image/avif,image/webp,*/*", "image/webp", true),
        (anim, "image/avif,*/*", "image/gif", true),
        (anim, "image/webp", "image/webp", true),
        (anim, "*/*", "image/gif", true),
        (still, "image/avif,image/webp,*/*", "image/avif", false),
        (still, "image/avif,*/*", "image/avif", false),
    ] {
        let r = get(&px.url(path), &[("Accept", accept)]).await;
        assert_eq!(r.status, 200, "{path} {accept}");
        assert_eq!(r.header("content-type"), Some(ty), "{path} {accept}");
        assert_eq!(r.header("vary"), Some("Accept"));
        if animated {
            assert!(frames(&r.body).len() > 1, "{path} {accept}: still");
        }
    }
    // The security option, when allowed, caps per request.
    let px2 = Pixgate::start(pixgate::config::RawConfig {
        local_root: path_str(&dir.0).into(),
        allow_security_options: true,
        ..test_config()
    })
    .await;
    let r = px2
        .get("/insecure/maf:5/rs:fit:60:60/plain/local:///moon.gif")
        .await;
    assert_eq!((r.status, r.code().as_str()), (422, "too-many-frames"));
    px.stop().await;
    px2.stop().await;
}
