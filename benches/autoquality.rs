//! `autoquality` against fixed qualities on every fixture photo at 800 px: bytes, DSSIM
//! (pixgate's metric, against the unencoded result) and time, printed as a table; then the
//! cost of `aq:dssim` and `mb` per format under Criterion. `cargo bench --bench autoquality`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use pixgate::EngineConfig;
use pixgate::pixels::quality::dssim;

#[path = "common/mod.rs"]
mod common;

use common::{fixture, measuring, photos};

fn run(src: &[u8], opts: &str) -> (Vec<u8>, Duration) {
    let (bytes, t, _) = run_counted(src, opts);
    (bytes, t)
}

/// The result, the time and the number of encodes.
fn run_counted(src: &[u8], opts: &str) -> (Vec<u8>, Duration, u32) {
    let cfg = EngineConfig::default();
    let t = Instant::now();
    let out = pixgate::transform(src, opts, &cfg).unwrap_or_else(|e| panic!("{opts}: {e}"));
    (out.bytes, t.elapsed(), out.timings.encodes)
}

fn decode(bytes: &[u8]) -> image::DynamicImage {
    let cfg = EngineConfig::default();
    let png = pixgate::transform(bytes, "f:png", &cfg).unwrap();
    image::load_from_memory(&png.bytes).unwrap()
}

/// Per format: fixed default quality vs `aq:dssim` at the default target, and vs `aq:dssim`
/// at the worst DSSIM the fixed quality gave on any photo (every `aq` result is then at
/// least as good as the worst fixed one).
fn table() {
    let photos = photos();
    for (format, fixed_q) in [("jpg", 80), ("webp", 79), ("avif", 63)] {
        let mut rows = Vec::new();
        for (name, src) in &photos {
            let base = "rs:fit:800:800";
            let reference = decode(&run(src, &format!("{base}/f:png")).0);
            let (fixed, t_fixed) = run(src, &format!("{base}/f:{format}/q:{fixed_q}"));
            let d_fixed = dssim(&reference, &decode(&fixed));
            rows.push((
                name.clone(),
                src.clone(),
                reference,
                fixed.len(),
                d_fixed,
                t_fixed,
            ));
        }
        let floor = rows.iter().map(|r| r.4).fold(0.0, f64::max);
        let (mut sum_fixed, mut sum_aq, mut sum_floor) = (0usize, 0usize, 0usize);
        eprintln!(
            "\n{format}: fixed q{fixed_q} | aq:dssim:0.02 (40..90) | aq:dssim:{floor:.4} (worst fixed)"
        );
        for (name, src, reference, fixed_len, d_fixed, t_fixed) in &rows {
            let base = "rs:fit:800:800";
            let (aq, t_aq, n_aq) = run_counted(src, &format!("{base}/f:{format}/aq:dssim"));
            let (mb, t_mb, n_mb) = run_counted(
                src,
                &format!("{base}/f:{format}/q:{fixed_q}/mb:{}", fixed_len * 7 / 10),
            );
            let d_aq = dssim(reference, &decode(&aq));
            let (eq, _) = run(src, &format!("{base}/f:{format}/aq:dssim:{floor}:40:90"));
            let d_eq = dssim(reference, &decode(&eq));
            sum_fixed += fixed_len;
            sum_aq += aq.len();
            sum_floor += eq.len();
            eprintln!(
                "  {name:42} {:>7} B d={d_fixed:.4} {:>5.1} ms | {:>7} B d={d_aq:.4} {:>6.1} ms {n_aq} enc | {:>7} B d={d_eq:.4} | mb 70%: {:>7} B {:>6.1} ms {n_mb} enc",
                fixed_len,
                t_fixed.as_secs_f64() * 1e3,
                aq.len(),
                t_aq.as_secs_f64() * 1e3,
                eq.len(),
                mb.len(),
                t_mb.as_secs_f64() * 1e3,
            );
        }
        let pct = |a: usize| 100.0 * (a as f64 / sum_fixed as f64 - 1.0);
        eprintln!(
            "  total: fixed {sum_fixed} B; aq 0.02 {sum_aq} B ({:+.1}%); aq at worst-fixed DSSIM {sum_floor} B ({:+.1}%)",
            pct(sum_aq),
            pct(sum_floor)
        );
    }
}

fn bench(c: &mut Criterion) {
    // The table is a measurement; `cargo test` only runs each benchmark once.
    if measuring() {
        table();
    }
    let src = fixture("photos/lomiri16_seeding_baseline.jpg");
    let cfg = EngineConfig::default();
    let mut g = c.benchmark_group("autoquality");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    for opts in [
        "rs:fit:800:800/f:jpg",
        "rs:fit:800:800/f:jpg/aq:dssim",
        "rs:fit:800:800/f:webp",
        "rs:fit:800:800/f:webp/aq:dssim",
        "rs:fit:800:800/f:avif",
        "rs:fit:800:800/f:avif/aq:dssim",
    ] {
        // The group is the area; `/` separates the id's parts, so the options' own become
        // spaces.
        let name = format!("jpeg-15.9MP-to-800/{}", opts.replace('/', " "));
        g.bench_function(name, |b| {
            b.iter(|| black_box(pixgate::transform(&src, opts, &cfg).unwrap()))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
