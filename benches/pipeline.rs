//! End-to-end engine benchmarks (decode → plan → resize → encode) on the shared photos,
//! single-threaded, default settings and fast mode. Prints output bytes once per case so size
//! and speed are reported together. `cargo bench --bench pipeline`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use pixgate::EngineConfig;

#[path = "common/mod.rs"]
mod common;

use common::{fixture, id};

/// A 2000 px RGBA PNG made from a photo with a radial alpha falloff (no large RGBA PNG ships
/// with the fixtures).
fn rgba_png() -> Vec<u8> {
    let src = fixture("photos/lomiri16_friends_by_Aitzol_Berasategi.jpg");
    let img = image::load_from_memory(&src).unwrap().resize(
        2000,
        2000,
        image::imageops::FilterType::Triangle,
    );
    let mut rgba = img.to_rgba8();
    let (w, h) = rgba.dimensions();
    for (x, y, p) in rgba.enumerate_pixels_mut() {
        let dx = x as f32 / w as f32 - 0.5;
        let dy = y as f32 / h as f32 - 0.5;
        p[3] = (255.0 * (1.0 - (dx * dx + dy * dy).sqrt() * 1.6).clamp(0.0, 1.0)) as u8;
    }
    let mut out = std::io::Cursor::new(Vec::new());
    rgba.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn case(c: &mut Criterion, name: &str, src: &[u8], options: &str, cfg: &EngineConfig) {
    let out = pixgate::transform(src, options, cfg).unwrap();
    eprintln!(
        "{name}: {}x{} {} bytes",
        out.width,
        out.height,
        out.bytes.len()
    );
    c.bench_function(name, |b| {
        b.iter(|| pixgate::transform(black_box(src), black_box(options), cfg).unwrap())
    });
}

fn pipeline(c: &mut Criterion) {
    let default = EngineConfig::default();
    let fast = EngineConfig::fast();
    let baseline = fixture("photos/lomiri16_seeding_baseline.jpg");
    let progressive = fixture("photos/lomiri16_seeding_by_Clements_Engelhardt.jpg");
    let png = rgba_png();
    case(
        c,
        &id("pipeline", "jpeg-baseline-15.9MP-to-800", "jpeg-q80"),
        &baseline,
        "rs:fit:800:0/q:80/f:jpg",
        &default,
    );
    case(
        c,
        &id("pipeline", "jpeg-baseline-15.9MP-to-800", "jpeg-q80-fast"),
        &baseline,
        "rs:fit:800:0/q:80/f:jpg",
        &fast,
    );
    case(
        c,
        &id("pipeline", "jpeg-progressive-15.9MP-to-800", "jpeg-q80"),
        &progressive,
        "rs:fit:800:0/q:80/f:jpg",
        &default,
    );
    case(
        c,
        &id(
            "pipeline",
            "jpeg-progressive-15.9MP-to-800",
            "jpeg-q80-fast",
        ),
        &progressive,
        "rs:fit:800:0/q:80/f:jpg",
        &fast,
    );
    case(
        c,
        &id("pipeline", "jpeg-baseline-15.9MP-to-300", "webp-q80"),
        &baseline,
        "rs:fit:300:0/q:80/f:webp",
        &default,
    );
    // Colour management: a Display P3 photo-sized test image, converted to sRGB after the
    // resize, against keeping its profile (scp:0) to show the conversion's cost.
    let p3 = fixture("conformance/icc/wide-gamut-tests/P3-sRGB-color-ring.jpg");
    case(
        c,
        &id("pipeline", "jpeg-p3-1000-to-800", "jpeg-srgb"),
        &p3,
        "rs:fit:800:0/q:80/f:jpg",
        &default,
    );
    case(
        c,
        &id("pipeline", "jpeg-p3-1000-to-800", "jpeg-keep-profile"),
        &p3,
        "rs:fit:800:0/q:80/f:jpg/scp:0",
        &default,
    );
    case(
        c,
        &id("pipeline", "png-rgba-2000-to-400", "webp-q80"),
        &png,
        "rs:fit:400:0/q:80/f:webp",
        &default,
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = pipeline
}
criterion_main!(benches);
