//! Colour management against references made by an independent tool (tests/reference/icc):
//! wide-gamut (Display P3, Rec. 2020) and primaries-rotated RGB profiles, and CMYK with an
//! embedded CMYK profile, all come out as sRGB; keeping the profile keeps it in the output.

use crate::support::engine::encode;
use crate::support::{decode, diff, fixture};

fn cases() -> Vec<(String, std::path::PathBuf)> {
    let refs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/icc");
    let mut out: Vec<_> = std::fs::read_dir(&refs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .map(|p| {
            let stem = p.file_stem().unwrap().to_str().unwrap().to_string();
            let src = if stem == "cmyk" {
                "derived/cmyk_cgats001.jpg".to_string()
            } else {
                format!("conformance/icc/wide-gamut-tests/{stem}.jpg")
            };
            (src, p)
        })
        .collect();
    out.sort();
    out
}

fn render(src: &str, options: &str) -> image::RgbImage {
    let bytes = std::fs::read(fixture(src)).unwrap();
    decode(&encode(&bytes, options, &pixgate::EngineConfig::default())).to_rgb8()
}

#[test]
fn embedded_profiles_are_converted_to_srgb() {
    let cases = cases();
    assert_eq!(cases.len(), 17);
    let mut report = Vec::new();
    for (src, reference) in &cases {
        let want = image::open(reference).unwrap().to_rgba8();
        let got = image::DynamicImage::ImageRgb8(render(src, "rs:fit:256:0/f:png")).to_rgba8();
        assert_eq!(got.dimensions(), want.dimensions(), "{src}");
        let (mean, max) = diff(&got, &want);
        // Unconverted pixels, for scale: what a pipeline that ignored the profile would show.
        let raw =
            image::DynamicImage::ImageRgb8(render(src, "rs:fit:256:0/f:png/scp:0")).to_rgba8();
        let (raw_mean, _) = diff(&raw, &want);
        report.push(format!(
            "{src}: mean {mean:.2} max {max} (unconverted mean {raw_mean:.2})"
        ));
        assert!(
            mean <= 2.0,
            "{src}: mean {mean:.2}, max {max}\n{}",
            report.join("\n")
        );
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn keeping_the_profile_keeps_it_and_leaves_the_pixels() {
    let bytes = std::fs::read(fixture(
        "conformance/icc/wide-gamut-tests/rgb-to-gbr-test.jpg",
    ))
    .unwrap();
    let cfg = pixgate::EngineConfig::default();
    for (options, has_icc) in [
        ("rs:fit:64:0/f:jpg", false),
        ("rs:fit:64:0/f:jpg/scp:0", true),
        ("rs:fit:64:0/f:webp/scp:0", true),
        ("rs:fit:64:0/f:png/scp:0", true),
        // GIF cannot carry a profile: converted even when asked to keep it.
        ("rs:fit:64:0/f:gif/scp:0", false),
    ] {
        let out = pixgate::transform(&bytes, options, &cfg).unwrap();
        let found = match out.format {
            pixgate::Format::Jpeg => out.bytes.windows(12).any(|w| w == b"ICC_PROFILE\0"),
            pixgate::Format::Webp => out.bytes.windows(4).any(|w| w == b"ICCP"),
            pixgate::Format::Png => out.bytes.windows(4).any(|w| w == b"iCCP"),
            _ => false,
        };
        assert_eq!(found, has_icc, "{options}");
    }
}

/// CMYK with a CMYK profile: the managed conversion matches the reference, a naive
/// (profile-blind) CMYK → RGB conversion does not.
#[test]
fn cmyk_goes_through_its_profile() {
    let src = "derived/cmyk_cgats001.jpg";
    let reference =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/icc/cmyk.png");
    let want = image::open(reference).unwrap().to_rgba8();
    let got = image::DynamicImage::ImageRgb8(render(src, "rs:fit:256:0/f:png")).to_rgba8();
    // The image crate's own JPEG decoder converts CMYK naively.
    let naive = image::load_from_memory(&std::fs::read(fixture(src)).unwrap())
        .unwrap()
        .resize_exact(
            want.width(),
            want.height(),
            image::imageops::FilterType::Lanczos3,
        )
        .to_rgba8();
    let (managed, _) = diff(&got, &want);
    let (blind, _) = diff(&naive, &want);
    eprintln!("cmyk: managed mean {managed:.2}, naive mean {blind:.2}");
    assert!(
        managed <= 1.0 && blind >= 3.0 * managed + 2.0,
        "managed {managed:.2}, naive {blind:.2}"
    );
}
