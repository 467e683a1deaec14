//! Golden images: fixture × options → expected decoded pixels, each with a stated tolerance
//! and the reason for it. References (≤ 256 px, PNG) live in `tests/golden/`; run with
//! `PIXGATE_BLESS=1` to regenerate them after an intended change, then look at them.

use std::path::PathBuf;

use pixgate::EngineConfig;

use crate::support::{decode, diff, read};

struct Case {
    name: &'static str,
    source: &'static str,
    options: &'static str,
    /// Largest mean and largest single-sample difference allowed.
    mean: f64,
    max: u8,
    why: &'static str,
}

/// Lossless output: only SIMD rounding (libjpeg IDCT, fast_image_resize kernels chosen per CPU)
/// may differ between machines.
const SIMD: &str = "PNG output; SIMD code paths may round differently on other CPUs";

const CASES: &[Case] = &[
    Case {
        name: "fit_photo",
        source: "photos/lomiri16_Wine_by_Jakkub_Mede.jpg",
        options: "rs:fit:256:256/f:png",
        mean: 0.6,
        max: 12,
        why: SIMD,
    },
    Case {
        name: "fill_north",
        source: "photos/lomiri16_friends_by_Aitzol_Berasategi.jpg",
        options: "rs:fill:200:120/g:no/f:png",
        mean: 0.6,
        max: 12,
        why: SIMD,
    },
    Case {
        name: "fill_focus_point",
        source: "photos/lomiri16_sunset_by_Aitzol_Berasategi.jpg",
        options: "rs:fill:160:160/g:fp:0.2:0.8/f:png",
        mean: 0.6,
        max: 12,
        why: SIMD,
    },
    Case {
        name: "crop_then_fit",
        source: "photos/lomiri16_aitzgorri_by_Aitzol_Berasategi.jpg",
        options: "c:0.5:0.5:soea/rs:fit:200:0/f:png",
        mean: 0.6,
        max: 12,
        why: SIMD,
    },
    Case {
        name: "rotate_flip_dpr",
        source: "photos/lomiri16_Picture_0B_by_freespace.jpg",
        options: "rs:fit:0:100/dpr:2/rot:90/fl:1:0/f:png",
        mean: 0.6,
        max: 12,
        why: SIMD,
    },
    Case {
        name: "exif_orientation_6",
        source: "photos/libavif_dog_exif_orient6_icc_xmp.jpg",
        options: "rs:fit:200:200/f:png",
        mean: 0.6,
        max: 12,
        why: SIMD,
    },
    Case {
        name: "blur",
        source: "photos/lomiri16_Wine_by_Jakkub_Mede.jpg",
        options: "rs:fit:160:160/bl:3/f:png",
        mean: 0.6,
        max: 12,
        why: SIMD,
    },
    Case {
        name: "sharpen",
        source: "photos/lomiri16_Wine_by_Jakkub_Mede.jpg",
        options: "rs:fit:160:160/sh:1.5/f:png",
        mean: 0.6,
        max: 16,
        why: SIMD,
    },
    Case {
        name: "alpha_enlarge_extend_pad",
        source: "conformance/png/pngsuite/basn6a08.png",
        options: "rs:fit:96:96/el:1/ex:1:nowe/pd:4:8/f:png",
        mean: 0.3,
        max: 4,
        why: "premultiplied Lanczos on an RGBA source; transparent canvas kept",
    },
    Case {
        name: "alpha_flatten_bg",
        source: "conformance/png/pngsuite/basn6a08.png",
        options: "rs:fit:64:64/el:1/bg:ff8000/f:png",
        mean: 0.3,
        max: 4,
        why: "alpha composited onto the background colour",
    },
    Case {
        name: "alpha_to_jpeg",
        source: "conformance/png/pngsuite/basn6a08.png",
        options: "rs:fit:64:64/el:1/f:jpg/q:90",
        mean: 1.5,
        max: 40,
        why: "JPEG output; flattened onto white; lossy on both sides of the compare",
    },
    Case {
        name: "palette_force",
        source: "conformance/png/pngsuite/basn3p08.png",
        options: "rs:force:48:20/el:1/f:png",
        mean: 0.3,
        max: 4,
        why: SIMD,
    },
    Case {
        name: "cmyk_jpeg",
        source: "conformance/jpeg/zune-image/cymk.jpg",
        options: "rs:fit:200:0/f:png",
        mean: 0.6,
        max: 12,
        why: SIMD,
    },
    Case {
        name: "gif_first_frame",
        source: "hostile/gif_300_frames_400x400_fullframe.gif",
        options: "rs:fit:128:128/f:png",
        mean: 0.3,
        max: 4,
        why: SIMD,
    },
    Case {
        name: "webp_lossless_to_webp",
        source: "conformance/webp/image-webp/regression/lossless_indexed_4bit_palette.webp",
        options: "rs:fit:200:0/f:webp/q:90",
        mean: 2.0,
        max: 64,
        why: "lossy WebP output: encoder decisions may differ by libwebp SIMD path",
    },
    Case {
        name: "grey_jpeg",
        source: "conformance/jpeg/jpeg-decoder-reftest/mozilla/jpg-gray.jpg",
        options: "rs:fill:64:64/f:png",
        mean: 0.6,
        max: 12,
        why: SIMD,
    },
    Case {
        name: "padding_white",
        source: "conformance/png/pngsuite/basn6a08.png",
        options: "pd:6:10/bg:ffffff/f:png",
        mean: 0.0,
        max: 0,
        why: "no resampling: exact",
    },
    Case {
        name: "crop_aspect_ratio",
        source: "photos/lomiri16_aitzgorri_by_Aitzol_Berasategi.jpg",
        options: "c:0.6:0.6:nowe/car:2:1/rs:fit:200:0/f:png",
        mean: 0.6,
        max: 12,
        why: SIMD,
    },
    Case {
        name: "crop_smart",
        source: "photos/lomiri16_friends_by_Aitzol_Berasategi.jpg",
        options: "c:0.5:0.3:sm/rs:fit:200:200/f:png",
        mean: 0.6,
        max: 12,
        why: SIMD,
    },
    Case {
        name: "fill_smart",
        source: "photos/lomiri16_sunset_by_Aitzol_Berasategi.jpg",
        options: "rs:fill:160:200/g:sm/f:png",
        mean: 0.6,
        max: 12,
        why: SIMD,
    },
    Case {
        name: "pixelate_adjust",
        source: "photos/lomiri16_Wine_by_Jakkub_Mede.jpg",
        options: "rs:fit:160:160/pix:5/a:15:1.2:1.3/f:png",
        mean: 0.6,
        max: 12,
        why: SIMD,
    },
    Case {
        name: "monochrome",
        source: "photos/lomiri16_Picture_0B_by_freespace.jpg",
        options: "rs:fit:160:160/mc:0.9:ff9a40/f:png",
        mean: 0.6,
        max: 12,
        why: SIMD,
    },
    Case {
        name: "background_alpha",
        source: "conformance/png/pngsuite/basn6a08.png",
        options: "rs:fit:64:64/el:1/bg:0080ff/bga:0.4/pd:4/f:png",
        mean: 0.3,
        max: 4,
        why: "premultiplied Lanczos on an RGBA source, then a translucent background",
    },
    Case {
        name: "watermark_corner",
        source: "photos/lomiri16_seeding_by_Clements_Engelhardt.jpg",
        options: "rs:fit:200:200/wm:0.7:soea:8:8:0.3/f:png",
        mean: 0.6,
        max: 12,
        why: SIMD,
    },
    Case {
        name: "watermark_tiled",
        source: "photos/lomiri16_seeding_by_Clements_Engelhardt.jpg",
        options: "rs:fit:200:200/wm:0.5:re:6:6:0.15/f:png",
        mean: 0.6,
        max: 12,
        why: SIMD,
    },
];

/// `trim` on a padded fixture (the fixtures have no bordered photo): the padding added by
/// `padding_white`'s options is what trim removes.
#[test]
fn trim_removes_what_padding_added() {
    let cfg = EngineConfig::default();
    let src = read("conformance/png/pngsuite/basn6a08.png");
    let padded = pixgate::transform(&src, "pd:6:10/bg:ffffff/f:png", &cfg).unwrap();
    let trimmed = pixgate::transform(&padded.bytes, "t:0/f:png", &cfg).unwrap();
    let flat = pixgate::transform(&src, "bg:ffffff/f:png", &cfg).unwrap();
    let flat_trimmed = pixgate::transform(&flat.bytes, "t:0/f:png", &cfg).unwrap();
    let (a, b) = (
        decode(&trimmed.bytes).to_rgba8(),
        decode(&flat_trimmed.bytes).to_rgba8(),
    );
    // A border of the border's own colour changes nothing: identical pixels.
    assert_eq!(a, b);
    assert!(a.width() >= 30 && a.height() >= 30, "{:?}", a.dimensions());
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

#[test]
fn golden_images_match_within_tolerance() {
    let bless = std::env::var_os("PIXGATE_BLESS").is_some();
    let mark =
        pixgate::pixels::decode_watermark(&read("conformance/png/pngsuite/basn6a08.png")).unwrap();
    let cfg = EngineConfig {
        watermark: Some(std::sync::Arc::new(mark)),
        ..EngineConfig::default()
    };
    let mut failures = Vec::new();
    for c in CASES {
        let out = pixgate::transform(&read(c.source), c.options, &cfg)
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let got = decode(&out.bytes).to_rgba8();
        assert!(
            got.width() <= 256 && got.height() <= 256,
            "{}: reference too big",
            c.name
        );
        let path = golden_dir().join(format!("{}.png", c.name));
        if bless {
            got.save(&path).unwrap();
            continue;
        }
        let want = image::open(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run with PIXGATE_BLESS=1)", path.display()))
            .to_rgba8();
        if got.dimensions() != want.dimensions() {
            failures.push(format!(
                "{}: {:?} vs golden {:?}",
                c.name,
                got.dimensions(),
                want.dimensions()
            ));
            continue;
        }
        let (mean, max) = diff(&got, &want);
        if mean > c.mean || max > c.max {
            failures.push(format!(
                "{}: mean {mean:.3} (≤ {}), max {max} (≤ {}); tolerance because: {}",
                c.name, c.mean, c.max, c.why
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
