//! AVIF in and out: round trips within a stated tolerance, alpha, irot/imir applied, the
//! small-result fallback, and containers whose declared size lies.

use pixgate::EngineConfig;

use crate::support::{avif_with_ispe, decode, diff, read};

fn photo() -> Vec<u8> {
    read("photos/lomiri16_seeding_baseline.jpg")
}

#[test]
fn avif_output_decodes_close_to_the_lossless_result() {
    let cfg = EngineConfig::default();
    let src = photo();
    let avif = pixgate::transform(&src, "rs:fit:400:0/f:avif", &cfg).unwrap();
    let png = pixgate::transform(&src, "rs:fit:400:0/f:png", &cfg).unwrap();
    let jpeg = pixgate::transform(&src, "rs:fit:400:0/f:jpg", &cfg).unwrap();
    assert!(avif.bytes.starts_with(&[0, 0, 0]) && &avif.bytes[4..8] == b"ftyp");
    let a = decode(&avif.bytes).to_rgba8();
    let p = decode(&png.bytes).to_rgba8();
    assert_eq!(a.dimensions(), (400, 225));
    let (mean, _) = diff(&a, &p);
    // Default quality 63 (imgproxy's): a mean error of a few levels per channel.
    assert!(mean < 4.0, "mean difference {mean:.2}");
    // The point of AVIF: smaller than the JPEG at the default qualities.
    assert!(
        avif.bytes.len() < jpeg.bytes.len(),
        "avif {} B vs jpeg {} B",
        avif.bytes.len(),
        jpeg.bytes.len()
    );
}

#[test]
fn alpha_survives_avif_in_and_out() {
    let cfg = EngineConfig::default();
    // A PNG with an alpha ramp.
    let mut img = image::RgbaImage::new(64, 48);
    for (x, _, p) in img.enumerate_pixels_mut() {
        *p = image::Rgba([200, 40, 90, (x * 4) as u8]);
    }
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png).unwrap();
    let avif = pixgate::transform(png.get_ref(), "f:avif/q:90", &cfg).unwrap();
    let back = decode(&avif.bytes).to_rgba8();
    for x in [0u32, 20, 40, 63] {
        let a = back.get_pixel(x, 24)[3];
        assert!(a.abs_diff((x * 4) as u8) <= 6, "alpha at {x}: {a}");
    }
    // AVIF in with alpha, PNG out keeps it; JPEG out flattens it.
    let src = read("conformance/avif/libavif-testdata/abc_color_irot_alpha_irot.avif");
    let out = pixgate::transform(&src, "f:png", &cfg).unwrap();
    assert!(decode(&out.bytes).color().has_alpha());
}

#[test]
fn irot_and_imir_are_applied() {
    let cfg = EngineConfig::default();
    // Stored 512x256 with a quarter turn anti-clockwise: shown 256x512.
    let src = read("conformance/avif/libavif-testdata/abc_color_irot_alpha_irot.avif");
    let info = pixgate::pixels::probe::probe(&src).unwrap();
    assert_eq!((info.width, info.height, info.orientation), (512, 256, 8));
    let out = pixgate::transform(&src, "f:png", &cfg).unwrap();
    assert_eq!((out.width, out.height), (256, 512));
    // irot + imir: stored 12x34.
    let src = read("conformance/avif/libavif-testdata/clop_irot_imor.avif");
    let out = pixgate::transform(&src, "f:png", &cfg).unwrap();
    assert_eq!((out.width, out.height), (34, 12));
}

#[test]
fn tiny_avif_results_fall_back_like_imgproxy() {
    let cfg = EngineConfig::default();
    let out = pixgate::transform(&photo(), "rs:fit:12:12/f:avif", &cfg).unwrap();
    assert_eq!(out.format, pixgate::Format::Jpeg);
    let src = read("conformance/avif/libavif-testdata/abc_color_irot_alpha_irot.avif");
    let out = pixgate::transform(&src, "rs:fit:10:10/f:avif", &cfg).unwrap();
    assert_eq!(out.format, pixgate::Format::Png);
    // 32x18: both sides at least 16.
    let out = pixgate::transform(&photo(), "rs:fit:32:32/f:avif", &cfg).unwrap();
    assert_eq!((out.format, out.height), (pixgate::Format::Avif, 18));
}

#[test]
fn containers_that_lie_about_their_size_are_refused() {
    let cfg = EngineConfig::default();
    // Claims 65535x65535: past libavif's own container limit, refused while parsing.
    let e = pixgate::transform(&avif_with_ispe(65535, 65535), "rs:fit:100:100", &cfg).unwrap_err();
    assert_eq!((e.status(), e.code()), (422, "corrupt-image"));
    // Claims 10000x10000: within libavif's limits, refused by ours from the header.
    let e = pixgate::transform(&avif_with_ispe(10000, 10000), "rs:fit:100:100", &cfg).unwrap_err();
    assert_eq!((e.status(), e.code()), (422, "source-resolution-too-large"));
    // Claims 16x16 while the bitstream holds 768x512: refused at decode, not trusted.
    let e = pixgate::transform(&avif_with_ispe(16, 16), "rs:fit:100:100", &cfg).unwrap_err();
    assert_eq!(e.status(), 422, "{e}");
}
