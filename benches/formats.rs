//! Format costs: AVIF encoding per libaom speed against WebP and JPEG on the same 800 px
//! photo, and animated GIF (50 frames, 480 px) resized to GIF and to animated WebP. Prints
//! output bytes once per case; and `max_bytes` cost. `cargo bench --bench formats`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use image::DynamicImage;
use pixgate::EngineConfig;
use pixgate::pixels::Deadline;
use pixgate::pixels::encode::{self, EncoderConfig, Metadata};

#[path = "common/mod.rs"]
mod common;

use common::{fixture, id, measuring};

/// The seeding photo at 800 px wide, decoded: what the encoders get after a resize.
fn photo_800() -> DynamicImage {
    let src = fixture("photos/lomiri16_seeding_baseline.jpg");
    let out = pixgate::transform(&src, "rs:fit:800:0/f:png", &EngineConfig::default()).unwrap();
    image::load_from_memory(&out.bytes).unwrap()
}

/// A 50-frame 480x270 animated GIF: a slow pan across a photo (every frame differs, as in a
/// video clip), 40 ms per frame, looping forever.
fn animated_gif() -> Vec<u8> {
    let src = fixture("photos/lomiri16_friends_by_Aitzol_Berasategi.jpg");
    let wide = pixgate::transform(&src, "rs:fit:960:0/f:png", &EngineConfig::default()).unwrap();
    let wide = image::load_from_memory(&wide.bytes).unwrap().to_rgba8();
    let mut out = Vec::new();
    {
        let mut enc = gif::Encoder::new(&mut out, 480, 270, &[]).unwrap();
        enc.set_repeat(gif::Repeat::Infinite).unwrap();
        for i in 0..50u32 {
            let x = i * (wide.width() - 480) / 49;
            let mut frame = image::imageops::crop_imm(&wide, x, 0, 480, 270)
                .to_image()
                .into_raw();
            let mut f = gif::Frame::from_rgba_speed(480, 270, &mut frame, 10);
            f.delay = 4;
            enc.write_frame(&f).unwrap();
        }
    }
    out
}

fn encode_case(
    c: &mut Criterion,
    name: &str,
    img: &DynamicImage,
    format: pixgate::Format,
    q: u8,
    cfg: &EncoderConfig,
) {
    let bytes =
        encode::encode(img, format, q, cfg, Metadata::default(), &Deadline::none()).unwrap();
    eprintln!("{name}: {} bytes", bytes.len());
    c.bench_function(name, |b| {
        b.iter(|| {
            encode::encode(
                black_box(img),
                format,
                q,
                cfg,
                Metadata::default(),
                &Deadline::none(),
            )
            .unwrap()
        })
    });
}

fn formats(c: &mut Criterion) {
    let img = photo_800();
    let base = EncoderConfig::default();
    encode_case(
        c,
        &id("encode", "photo-800", "jpeg-q80"),
        &img,
        pixgate::Format::Jpeg,
        80,
        &base,
    );
    encode_case(
        c,
        &id("encode", "photo-800", "webp-q79"),
        &img,
        pixgate::Format::Webp,
        79,
        &base,
    );
    // `cargo test` runs the default speed only: each is one libaom call, unoptimised there.
    let speeds: &[u8] = if measuring() { &[6, 7, 8, 9, 10] } else { &[8] };
    for &speed in speeds {
        let cfg = EncoderConfig {
            avif_speed: speed,
            ..base.clone()
        };
        encode_case(
            c,
            &id("encode", "photo-800", &format!("avif-q63-speed{speed}")),
            &img,
            pixgate::Format::Avif,
            63,
            &cfg,
        );
    }

    // max_bytes: 70% of the default-quality size forces the bisection (at most 8 encodes).
    let src = fixture("photos/lomiri16_seeding_baseline.jpg");
    for f in ["jpg", "webp", "avif"] {
        let base = pixgate::transform(
            &src,
            &format!("rs:fit:800:0/f:{f}"),
            &EngineConfig::default(),
        )
        .unwrap()
        .bytes
        .len();
        let opts = format!("rs:fit:800:0/f:{f}/mb:{}", base * 7 / 10);
        let name = id("max-bytes", "jpeg-15.9MP-to-800", &format!("{f}-70pct"));
        if measuring() {
            let out = pixgate::transform(&src, &opts, &EngineConfig::default()).unwrap();
            eprintln!(
                "{name}: {} bytes (default quality: {base})",
                out.bytes.len()
            );
        }
        let cfg = EngineConfig::default();
        c.bench_function(&name, |b| {
            b.iter(|| pixgate::transform(black_box(&src), &opts, &cfg).unwrap())
        });
    }

    // Smart crop overhead: the same 800x800 fill of the 15.9 MP photo, centred and smart.
    for (name, opts) in [
        ("centre", "rs:fill:800:800/f:jpg"),
        ("smart", "rs:fill:800:800/g:sm/f:jpg"),
    ] {
        let cfg = EngineConfig::default();
        let name = id("fill", "jpeg-15.9MP-to-800x800", name);
        c.bench_function(&name, |b| {
            b.iter(|| pixgate::transform(black_box(&src), opts, &cfg).unwrap())
        });
    }

    let gif = animated_gif();
    eprintln!("animated source: {} bytes", gif.len());
    let cfg = EngineConfig::default();
    for (name, opts) in [
        ("to-240-gif", "rs:fit:240:0"),
        ("to-240-webp", "rs:fit:240:0/f:webp"),
        ("to-480-webp", "f:webp"),
        ("first-frame-240-jpeg", "rs:fit:240:0/f:jpg"),
    ] {
        let name = &id("animation", "gif-50x480", name);
        let out = pixgate::transform(&gif, opts, &cfg).unwrap();
        eprintln!(
            "{name}: {}x{} {} bytes",
            out.width,
            out.height,
            out.bytes.len()
        );
        c.bench_function(name, |b| {
            b.iter(|| pixgate::transform(black_box(&gif), opts, &cfg).unwrap())
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = formats
}
criterion_main!(benches);
