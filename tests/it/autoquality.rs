//! `autoquality`: `aq:dssim` results meet the DSSIM target against the unencoded result
//! (the same pipeline written losslessly), `aq:size` stays under its byte budget, both within
//! their quality range, with the server default applying when the URL says nothing.

use pixgate::EngineConfig;
use pixgate::pixels::quality::dssim;

use crate::support::engine::encode;
use crate::support::{decode, read};

const PHOTOS: [&str; 2] = [
    "photos/lomiri16_friends_by_Aitzol_Berasategi.jpg",
    "photos/lomiri16_Wine_by_Jakkub_Mede.jpg",
];

#[test]
fn dssim_results_meet_the_target() {
    let cfg = EngineConfig::default();
    for photo in PHOTOS {
        let src = read(photo);
        let reference = decode(&encode(&src, "rs:fit:400:400/f:png", &cfg));
        for format in ["jpg", "webp", "avif"] {
            let mut sizes = Vec::new();
            let best = encode(&src, &format!("rs:fit:400:400/f:{format}/q:95"), &cfg);
            for target in [0.005, 0.02] {
                let opts = format!("rs:fit:400:400/f:{format}/aq:dssim:{target}:20:95");
                let out = encode(&src, &opts, &cfg);
                let d = dssim(&reference, &decode(&out));
                // Met, or out of the range's reach: then the range's best is given.
                assert!(
                    d <= target || out == best,
                    "{photo} {format} target {target}: dssim {d}"
                );
                sizes.push(out.len());
            }
            // A looser target never costs more bytes.
            assert!(sizes[1] <= sizes[0], "{photo} {format}: {sizes:?}");
        }
    }
}

#[test]
fn quality_range_bounds_the_choice() {
    let cfg = EngineConfig::default();
    let src = read(PHOTOS[0]);
    // An unreachable target within 40..50: the best the range allows, q50.
    assert_eq!(
        encode(&src, "rs:fit:300:300/f:jpg/aq:dssim:0.000001:40:50", &cfg),
        encode(&src, "rs:fit:300:300/f:jpg/q:50", &cfg)
    );
    // A target anything meets: the lowest quality of the range.
    assert_eq!(
        encode(&src, "rs:fit:300:300/f:jpg/aq:dssim:0.9:30:60", &cfg),
        encode(&src, "rs:fit:300:300/f:jpg/q:30", &cfg)
    );
    // TIFF is written without a quality: one encode, as without `aq`.
    let tiff = pixgate::transform(&src, "rs:fit:100:100/f:tiff/aq:dssim", &cfg).unwrap();
    assert_eq!(tiff.timings.encodes, 1);
    assert_eq!(tiff.bytes, encode(&src, "rs:fit:100:100/f:tiff", &cfg));
    // Lossless outputs have no quality to choose: unchanged.
    assert_eq!(
        encode(&src, "rs:fit:100:100/f:png/aq:dssim", &cfg),
        encode(&src, "rs:fit:100:100/f:png", &cfg)
    );
}

#[test]
fn size_method_stays_under_the_budget() {
    let cfg = EngineConfig::default();
    let src = read(PHOTOS[1]);
    for format in ["jpg", "webp", "avif"] {
        let full = encode(&src, &format!("rs:fit:400:400/f:{format}/q:90"), &cfg).len();
        let budget = full / 2;
        let out = encode(
            &src,
            &format!("rs:fit:400:400/f:{format}/aq:size:{budget}:10:90"),
            &cfg,
        );
        assert!(out.len() <= budget, "{format}: {} > {budget}", out.len());
        assert!(
            out.len() * 3 > budget,
            "{format}: {} is needlessly small",
            out.len()
        );
        // A budget nothing meets: the range's minimum quality.
        assert_eq!(
            encode(
                &src,
                &format!("rs:fit:400:400/f:{format}/aq:size:100:25:90"),
                &cfg
            ),
            encode(&src, &format!("rs:fit:400:400/f:{format}/q:25"), &cfg),
            "{format}"
        );
    }
    // `size` without a target is a bad URL.
    assert!(pixgate::transform(&src, "aq:size", &cfg).is_err());
}

#[test]
fn server_default_applies_and_max_bytes_still_caps() {
    let src = read(PHOTOS[0]);
    let cfg = EngineConfig {
        autoquality: pixgate::pixels::AutoQualityDefaults {
            method: pixgate::request::options::AutoQualityMethod::Dssim,
            target: 0.01,
            ..Default::default()
        },
        ..EngineConfig::default()
    };
    let plain = EngineConfig::default();
    assert_eq!(
        encode(&src, "rs:fit:300:300/f:webp", &cfg),
        encode(&src, "rs:fit:300:300/f:webp/aq:dssim:0.01", &plain)
    );
    // The URL's `aq:none` turns the default off.
    assert_eq!(
        encode(&src, "rs:fit:300:300/f:webp/aq:none", &cfg),
        encode(&src, "rs:fit:300:300/f:webp", &plain)
    );
    // `mb` applies after `aq`.
    let capped = encode(
        &src,
        "rs:fit:300:300/f:jpg/aq:dssim:0.001:90:100/mb:8000",
        &plain,
    );
    assert!(capped.len() <= 8000, "{}", capped.len());
}
