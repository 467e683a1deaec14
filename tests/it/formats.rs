//! Format matrix and orientation: every conformance input that must decode, written to every
//! output format this build writes, decodes back (with an independent decoder) at the planned
//! size; all eight EXIF orientations come out upright.

use pixgate::pixels::{self, EngineConfig};
use pixgate::request::options::{ParseContext, Presets, parse};
use pixgate::{Format, Options};

use crate::support::{decode, diff, manifest, read};

fn options(s: &str) -> Options {
    let presets = Presets::default();
    let defaults = Options::default();
    let ctx = ParseContext {
        presets: &presets,
        allow_security_options: true,
        now_unix: 0,
        defaults: &defaults,
    };
    parse(s, &ctx).unwrap()
}

const OUTPUTS: [Format; 8] = [
    Format::Jpeg,
    Format::Png,
    Format::Webp,
    Format::Avif,
    Format::Gif,
    Format::Bmp,
    Format::Tiff,
    Format::Ico,
];

#[test]
fn every_decodable_conformance_input_to_every_output_format() {
    let cfg = EngineConfig::default();
    let inputs: Vec<_> = manifest()
        .into_iter()
        .filter(|r| r.path.starts_with("conformance/"))
        .filter(|r| r.expected.starts_with("decode ok"))
        .filter(|r| !r.expected.contains("4xx") && !r.expected.contains("rejected"))
        .filter(|r| {
            matches!(
                r.format.as_str(),
                "JPEG" | "PNG" | "GIF" | "WEBP" | "BMP" | "AVIF"
            )
        })
        .collect();
    assert!(inputs.len() > 200, "{} inputs", inputs.len());
    let mut failures = Vec::new();
    let mut runs = 0;
    for row in &inputs {
        let src = read(&row.path);
        for f in OUTPUTS {
            let o = options(&format!("rs:fit:96:96/f:{f}"));
            let job = match pixels::prepare(&src, &o, &cfg) {
                Ok(j) => j,
                Err(e) => {
                    failures.push(format!("{} → {f}: prepare: {e}", row.path));
                    continue;
                }
            };
            let plan = job.plan.clone().expect("a plan");
            match job.run(&src) {
                Ok(enc) => {
                    let img = decode(&enc.bytes);
                    let got = (img.width(), img.height());
                    if got != (plan.width, plan.height) || got != (enc.width, enc.height) {
                        failures.push(format!(
                            "{} → {f}: decoded {got:?}, planned {}x{}",
                            row.path, plan.width, plan.height
                        ));
                    }
                }
                Err(e) => failures.push(format!("{} → {f}: {e}", row.path)),
            }
            runs += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {runs} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// `Landscape_N.jpg`/`Portrait_N.jpg` hold the same picture stored with orientation N; after
/// auto-rotation all must match the untagged `_0` rendering. Tolerance: each file was encoded
/// separately in its stored orientation, so JPEG block artefacts differ (mean ≤ 4 levels).
#[test]
fn all_exif_orientations_come_out_upright() {
    let cfg = EngineConfig::default();
    for (kind, size) in [("Landscape", (240, 160)), ("Portrait", (160, 240))] {
        let render = |n: u32, opts: &str| {
            let src = read(&format!("conformance/exif-orientation/{kind}_{n}.jpg"));
            let out = pixgate::transform(&src, opts, &cfg).unwrap();
            decode(&out.bytes).to_rgba8()
        };
        let reference = render(0, "rs:fit:240:240/f:png");
        assert_eq!(reference.dimensions(), size);
        for n in 1..=8 {
            let img = render(n, "rs:fit:240:240/f:png");
            assert_eq!(img.dimensions(), size, "{kind}_{n}");
            let (mean, _) = diff(&img, &reference);
            assert!(
                mean <= 4.0,
                "{kind}_{n}: mean difference {mean:.2} from upright"
            );
            // With auto-rotation off the stored orientation is kept.
            let raw = render(n, "rs:fit:240:240/ar:0/f:png");
            if n >= 5 {
                assert_eq!(raw.dimensions(), (size.1, size.0), "{kind}_{n} ar:0");
            }
        }
    }
}

#[test]
fn invalid_orientation_is_treated_as_upright() {
    let src = read("hostile/jpeg_exif_orientation_invalid_9.jpg");
    let out = pixgate::transform(&src, "f:png", &EngineConfig::default()).unwrap();
    assert_eq!((out.width, out.height), (227, 149));
}

/// 16-bit PNGs come down to 8 bits by rounding (v / 257), not truncation: a smooth 16-bit
/// ramp gives every 8-bit level, in order, each within half a level of the exact value.
#[test]
fn sixteen_bit_png_rounds_to_eight_bits_without_banding() {
    let (w, h) = (4096u32, 4u32);
    let ramp = image::ImageBuffer::<image::Rgba<u16>, Vec<u16>>::from_fn(w, h, |x, _| {
        let v = (u64::from(x) * 65535 / u64::from(w - 1)) as u16;
        image::Rgba([v, 65535 - v, v / 2, 65535 - v / 3])
    });
    let mut png = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgba16(ramp.clone())
        .write_to(&mut png, image::ImageFormat::Png)
        .unwrap();
    let out = pixgate::transform(png.get_ref(), "f:png", &EngineConfig::default()).unwrap();
    let got = crate::support::decode(&out.bytes).to_rgba8();
    assert_eq!(got.dimensions(), (w, h));
    let mut seen = std::collections::BTreeSet::new();
    let mut last = 0u8;
    for x in 0..w {
        let p = got.get_pixel(x, 1);
        let s = ramp.get_pixel(x, 1);
        for c in 0..4 {
            let exact = f64::from(s[c]) / 257.0;
            assert!(
                (f64::from(p[c]) - exact).abs() <= 0.5 + 1e-9,
                "x {x} channel {c}: {} for {exact:.2}",
                p[c]
            );
        }
        assert!(p[0] >= last, "ramp not monotonic at {x}");
        last = p[0];
        seen.insert(p[0]);
    }
    assert_eq!(seen.len(), 256, "every 8-bit level is used");
}
