//! `max_bytes`: results never exceed the target when some quality reaches it, keep the
//! default quality when it already fits, and fail with a clear 422 when nothing fits.

use pixgate::EngineConfig;

use crate::support::read;

#[test]
fn results_fit_the_byte_target() {
    let cfg = EngineConfig::default();
    for photo in [
        "photos/lomiri16_seeding_baseline.jpg",
        "photos/lomiri16_friends_by_Aitzol_Berasategi.jpg",
    ] {
        let src = read(photo);
        // AVIF at 300 px: the bisection is the same, and each libaom call (unoptimised in
        // test builds) costs a quarter.
        for (f, w) in [("jpg", 600), ("webp", 600), ("avif", 300)] {
            let base = pixgate::transform(&src, &format!("rs:fit:{w}:0/f:{f}"), &cfg).unwrap();
            let full = base.bytes.len() as u64;
            // Already under: the same bytes as without the option.
            let same =
                pixgate::transform(&src, &format!("rs:fit:{w}:0/f:{f}/mb:{}", full + 1), &cfg)
                    .unwrap();
            assert_eq!(same.bytes, base.bytes, "{photo} {f}");
            for target in [full * 7 / 10, full / 2] {
                let out =
                    pixgate::transform(&src, &format!("rs:fit:{w}:0/f:{f}/mb:{target}"), &cfg)
                        .unwrap_or_else(|e| panic!("{photo} {f} mb:{target}: {e}"));
                let n = out.bytes.len() as u64;
                assert!(n <= target, "{photo} {f}: {n} B over {target}");
                // The highest quality that fits, not a needlessly small file.
                assert!(n > target / 3, "{photo} {f}: {n} B for {target}");
            }
        }
    }
}

#[test]
fn unreachable_targets_are_a_clear_422() {
    let cfg = EngineConfig::default();
    let src = read("photos/lomiri16_seeding_baseline.jpg");
    for opts in ["rs:fit:600:0/f:jpg/mb:200", "rs:fit:600:0/f:png/mb:1000"] {
        let e = pixgate::transform(&src, opts, &cfg).unwrap_err();
        assert_eq!(
            (e.status(), e.code()),
            (422, "max-bytes-unreachable"),
            "{opts}"
        );
    }
}
