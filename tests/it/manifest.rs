//! Every file listed in `tests/fixtures/MANIFEST.tsv` goes through the engine and gets the
//! outcome its row expects: a decode that decodes back at the planned size, or a typed 4xx —
//! never a panic, never a 5xx.

use std::panic::{AssertUnwindSafe, catch_unwind};

use pixgate::EngineConfig;

use crate::support::{Row, decode, diff, manifest, read};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Expect {
    Decode,
    Reject,
    Either,
}

/// Our reading of a row. Where a row allows either outcome, pixgate's documented policy
/// (README, "Hostile and broken inputs") picks one, and that is what is asserted.
pub fn expectation(row: &Row) -> Expect {
    let name = row.path.rsplit('/').next().unwrap_or_default();
    match name {
        // JPEG policy: data ending inside a scan is refused; complete scans without EOI decode.
        "truncated_photo_40pct.jpg" | "truncated_jpeg_in_headers_300b.jpg" => {
            return Expect::Reject;
        }
        "jpeg_missing_eoi.jpg" => return Expect::Decode,
        // Animations over `max_animation_frames` (500) are refused from the header's frame
        // count when the result would be animated (here: GIF/WebP in, same format out).
        "gif_10000_frames_1x1.gif"
        | "gif_20000_frames_zero_delay_screen_1000x1000.gif"
        | "webp_anim_2000_frames.webp" => return Expect::Reject,
        "gif_300_frames_400x400_fullframe.gif" => return Expect::Decode,
        // As for JPEG, an animation whose data ends inside it is refused, not cached cut.
        "truncated_gif_half.gif" => return Expect::Reject,
        // Entities are expanded within roxmltree's bounds; this one is past them.
        "svg_billion_laughs.svg" => return Expect::Reject,
        // Vectors are drawn at the planned size (here 256 px): the declared canvas, blur
        // radius and sniffed-not-named type cost nothing extra.
        "svg_huge_canvas_100000x100000.svg"
        | "svg_filter_heavy_blur.svg"
        | "polyglot_svg_in_png_extension.png" => return Expect::Decode,
        // libavif reads it leniently (non-essential transforms applied), as avifdec does.
        "clap_irot_imir_non_essential.avif" => return Expect::Decode,
        // External entities are never resolved: the document is refused.
        "svg_xxe_file_passwd.svg" => return Expect::Reject,
        // Bounded by the output format's maximum side (1 x 65535).
        "extreme_aspect_png_1x1000000.png" => return Expect::Decode,
        // Text chunks are never inflated.
        "png_ztxt_zlib_bomb_512MiB.png" => return Expect::Decode,
        // CRCs of critical chunks are enforced (the png crate's default).
        "png_bad_idat_crc.png" | "truncated_png_mid_idat.png" => return Expect::Reject,
        _ => {}
    }
    let e = row.expected.to_lowercase();
    if e.contains("unless bmp/pnm input is enabled") {
        // BMP input is enabled; PNM is not.
        return if row.format == "BMP" {
            Expect::Decode
        } else {
            Expect::Reject
        };
    }
    if e.starts_with("decode ok") {
        if e.contains("4xx") || e.contains("rejects") || e.contains("must be rejected") {
            Expect::Either
        } else {
            Expect::Decode
        }
    } else if e.starts_with("n/a")
        || e.starts_with("must be rejected")
        || e.starts_with("4")
        || e.starts_with("either 422")
    {
        Expect::Reject
    } else if e.starts_with("200") || e.starts_with("first frame") {
        Expect::Decode
    } else {
        Expect::Either
    }
}

#[test]
fn every_manifest_file_gets_its_expected_outcome() {
    let cfg = EngineConfig::default();
    let rows = manifest();
    assert!(
        rows.len() > 500,
        "manifest looks truncated: {} rows",
        rows.len()
    );
    let mut failures = Vec::new();
    let mut counts = [0usize; 3];
    for row in &rows {
        let bytes = read(&row.path);
        let expect = expectation(row);
        // The header probe must read the size the manifest declares.
        if let (Some(w), Some(h), Ok(info)) =
            (row.width, row.height, pixgate::pixels::probe::probe(&bytes))
        {
            if (info.width, info.height) != (w, h) {
                failures.push(format!(
                    "{}: probed {}x{}, manifest says {w}x{h}",
                    row.path, info.width, info.height
                ));
            }
        }
        counts[expect as usize] += 1;
        // SVG sources default to (sanitised) SVG output, tested in svg.rs; here they are drawn.
        let is_svg = pixgate::pixels::probe::sniff(&bytes) == Some(pixgate::Format::Svg);
        let options = if is_svg {
            "rs:fit:256:256/f:png"
        } else {
            "rs:fit:256:256"
        };
        let result = catch_unwind(AssertUnwindSafe(|| {
            pixgate::transform(&bytes, options, &cfg)
        }));
        let result = match result {
            Ok(r) => r,
            Err(_) => {
                failures.push(format!("{}: PANIC", row.path));
                continue;
            }
        };
        let problem = match (&result, expect) {
            (Ok(enc), Expect::Decode | Expect::Either) => {
                let img = decode(&enc.bytes);
                ((img.width(), img.height()) != (enc.width, enc.height))
                    .then(|| format!("decodes back at {}x{}", img.width(), img.height()))
            }
            (Err(e), _) if !(400..500).contains(&e.status()) => {
                Some(format!("status {} ({})", e.status(), e))
            }
            (Err(e), Expect::Reject | Expect::Either) => {
                (e.code() == "internal-error").then(|| format!("untyped error {e}"))
            }
            (Ok(_), Expect::Reject) => Some("decoded, expected a 4xx".into()),
            (Err(e), Expect::Decode) => Some(format!("{} ({})", e.code(), e)),
        };
        if let Some(p) = problem {
            failures.push(format!(
                "{} [{:?}; manifest: {}]: {p}",
                row.path, expect, row.expected
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} files failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
    // The reading of the manifest itself must not silently drift.
    assert!(counts[Expect::Decode as usize] > 250, "{counts:?}");
    assert!(counts[Expect::Reject as usize] > 90, "{counts:?}");
}

/// JPEG conformance files whose row names a reference rendering: full-size decode compared
/// with the reference pixels. Tolerance: libjpeg's islow IDCT and fancy upsampling against the
/// reference decoder's; rounding differs by a few levels, never by structure.
#[test]
fn jpeg_conformance_matches_reference_renderings() {
    let cfg = EngineConfig::default();
    let mut checked = 0;
    let mut failures = Vec::new();
    for row in manifest() {
        let Some(reference) = row.expected.strip_prefix("decode ok; result matches ") else {
            continue;
        };
        let dir = row.path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let reference_path = format!("{dir}/{reference}");
        let ref_img = image::load_from_memory(&read(&reference_path))
            .unwrap_or_else(|e| panic!("{reference_path}: {e}"))
            .to_rgba8();
        let out = pixgate::transform(&read(&row.path), "f:png", &cfg)
            .unwrap_or_else(|e| panic!("{}: {e}", row.path));
        let got = decode(&out.bytes).to_rgba8();
        if got.dimensions() != ref_img.dimensions() {
            failures.push(format!(
                "{}: size {:?} vs {:?}",
                row.path,
                got.dimensions(),
                ref_img.dimensions()
            ));
            continue;
        }
        let (mean, max) = diff(&got, &ref_img);
        if mean > 1.5 || max > 40 {
            failures.push(format!("{}: mean {mean:.2}, max {max}", row.path));
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} reference comparisons ran");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
