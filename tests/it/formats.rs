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

const OUTPUTS: [Format; 7] = [
    Format::Jpeg,
    Format::Png,
    Format::Webp,
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
        .filter(|r| matches!(r.format.as_str(), "JPEG" | "PNG" | "GIF" | "WEBP" | "BMP"))
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
