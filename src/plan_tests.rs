//! Planner tests: worked examples of imgproxy's sizing algorithm, and property tests over the
//! whole option space (never 0 px, never over limits, rectangles inside their images, aspect
//! ratio kept within a pixel for fit and fill).

use super::*;
use crate::request::options::{Crop, Extend, Padding, parse};
use proptest::prelude::*;

fn opts(s: &str) -> Options {
    let presets = crate::request::options::Presets::default();
    let d = Options::default();
    let ctx = crate::request::options::ParseContext {
        presets: &presets,
        allow_security_options: true,
        now_unix: 0,
        defaults: &d,
    };
    parse(s, &ctx).unwrap()
}

fn src(w: u32, h: u32) -> SourceGeometry {
    SourceGeometry {
        width: w,
        height: h,
        orientation: 1,
        is_vector: false,
    }
}

fn plan(s: &str, g: SourceGeometry) -> Plan {
    build(&opts(s), &g, &ResultLimits::default(), Format::Jpeg).unwrap()
}

fn size(s: &str, w: u32, h: u32) -> (u32, u32) {
    let p = plan(s, src(w, h));
    (p.width, p.height)
}

#[test]
fn resizing_types() {
    assert_eq!(size("rs:fit:800:0", 4000, 3000), (800, 600));
    assert_eq!(size("rs:fit:300:300", 4000, 3000), (300, 225));
    assert_eq!(size("rs:fit:0:300", 4000, 3000), (400, 300));
    assert_eq!(size("rs:force:300:300", 4000, 3000), (300, 300));
    assert_eq!(size("rs:force:300:0", 4000, 3000), (300, 3000));
    let p = plan("rs:fill:300:300", src(4000, 3000));
    assert_eq!((p.scaled_width, p.scaled_height), (400, 300));
    assert_eq!(
        p.result_crop,
        Rect {
            x: 50,
            y: 0,
            width: 300,
            height: 300
        }
    );
    // auto: same orientation → fill, different → fit.
    assert_eq!(size("rs:auto:300:200", 4000, 3000), (300, 200));
    assert_eq!(size("rs:auto:200:300", 4000, 3000), (200, 150));
}

#[test]
fn no_enlarging_without_el() {
    assert_eq!(size("rs:fit:1000:1000", 800, 600), (800, 600));
    assert_eq!(size("rs:fit:1000:1000/el:1", 800, 600), (1000, 750));
    // fill without enlarge crops to what exists; fill-down keeps the target aspect ratio.
    assert_eq!(size("rs:fill:1000:500", 800, 600), (800, 500));
    assert_eq!(size("rs:fill-down:1000:500", 800, 600), (800, 400));
    assert_eq!(size("rs:fill-down:500:1000", 800, 600), (300, 600));
    assert_eq!(size("rs:fill-down:400:300", 4000, 3000), (400, 300));
}

#[test]
fn dpr_zoom_min_sizes() {
    assert_eq!(size("rs:fit:400:0/dpr:2", 4000, 3000), (800, 600));
    // dpr is capped so it never upscales.
    assert_eq!(size("rs:fit:400:0/dpr:2", 600, 450), (600, 450));
    assert_eq!(size("rs:fit:400:0/z:2", 4000, 3000), (800, 600));
    assert_eq!(size("rs:fit:400:0/z:2:1", 4000, 3000), (800, 300));
    assert_eq!(size("rs:fit:100:100/mw:200", 4000, 3000), (100, 100));
    assert_eq!(size("rs:fit:0:0/mw:200/mh:10", 4000, 3000), (4000, 3000));
    assert_eq!(size("w:100/mh:300", 4000, 3000), (100, 300));
}

#[test]
fn crop_then_resize() {
    let p = plan("c:1000:1000", src(4000, 3000));
    assert_eq!(
        p.crop,
        Rect {
            x: 1500,
            y: 1000,
            width: 1000,
            height: 1000
        }
    );
    assert_eq!((p.width, p.height), (1000, 1000));
    let p = plan("c:0.5:0.5:nowe/rs:fit:100:0", src(4000, 3000));
    assert_eq!(
        p.crop,
        Rect {
            x: 0,
            y: 0,
            width: 2000,
            height: 1500
        }
    );
    assert_eq!((p.width, p.height), (100, 75));
    // Crop uses the main gravity unless it has its own.
    let p = plan("g:soea/c:100:100", src(400, 300));
    assert_eq!((p.crop.x, p.crop.y), (300, 200));
    let p = plan("c:0.5:0:fp:0:0", src(400, 300));
    assert_eq!(
        p.crop,
        Rect {
            x: 0,
            y: 0,
            width: 200,
            height: 300
        }
    );
    // A crop larger than the image is the whole image.
    let p = plan("c:9000:9000", src(400, 300));
    assert_eq!(
        p.crop,
        Rect {
            x: 0,
            y: 0,
            width: 400,
            height: 300
        }
    );
}

#[test]
fn gravity_offsets_point_inward() {
    let p = plan("rs:fill:100:100/g:ea:10:0", src(400, 200));
    // scaled 200x100; east anchored, moved left by 10.
    assert_eq!(p.result_crop.x, 200 - 100 - 10);
    let p = plan("rs:fill:100:100/g:we:0.1:0", src(400, 200));
    assert_eq!(p.result_crop.x, 20);
    let p = plan("rs:fill:100:100/g:fp:1:0.5", src(400, 200));
    assert_eq!(p.result_crop.x, 100, "clamped inside the image");
    let p = plan("rs:fill:100:100/g:fp:0.25:0.5", src(400, 200));
    assert_eq!(p.result_crop.x, 0);
    let p = plan("rs:fill:100:100/g:no", src(200, 400));
    assert_eq!((p.result_crop.x, p.result_crop.y), (0, 0));
    let p = plan("rs:fill:100:100/g:so", src(200, 400));
    assert_eq!(p.result_crop.y, 100);
}

#[test]
fn extend_extend_ar_and_padding() {
    let p = plan("rs:fit:1000:1000/ex:1", src(800, 600));
    assert_eq!(
        p.embeds,
        vec![Embed {
            width: 1000,
            height: 1000,
            x: 100,
            y: 200
        }]
    );
    let p = plan("rs:fit:1000:1000/ex:1:nowe", src(800, 600));
    assert_eq!((p.embeds[0].x, p.embeds[0].y), (0, 0));
    let p = plan("rs:fit:1000:500/exar:1", src(800, 600));
    assert_eq!((p.width, p.height), (1000, 500));
    let p = plan("pd:10:20", src(100, 100));
    assert_eq!(
        p.embeds,
        vec![Embed {
            width: 140,
            height: 120,
            x: 20,
            y: 10
        }]
    );
    let p = plan("pd:10/dpr:2/w:50", src(100, 100));
    assert_eq!((p.width, p.height), (140, 140));
    assert_eq!(size("rs:fit:1000:1000/ex:1/pd:5", 800, 600), (1010, 1010));
}

#[test]
fn orientation_and_rotation_swap_axes() {
    let g = SourceGeometry {
        orientation: 6,
        ..src(4000, 3000)
    };
    let p = plan("rs:fit:300:0", g);
    assert_eq!((p.exif_angle, p.exif_flip), (90, false));
    assert_eq!((p.width, p.height), (300, 400));
    let p = plan("rs:fit:300:0/ar:0", g);
    assert_eq!((p.width, p.height), (300, 225));
    let p = plan("rs:fit:300:0/rot:90", g);
    assert_eq!((p.width, p.height), (300, 225));
    for (o, expect) in [
        (1, (0, false)),
        (2, (0, true)),
        (3, (180, false)),
        (4, (180, true)),
        (5, (90, true)),
        (6, (90, false)),
        (7, (270, true)),
        (8, (270, false)),
        (9, (0, false)),
    ] {
        assert_eq!(orientation_steps(o), expect, "orientation {o}");
    }
}

#[test]
fn result_limits() {
    assert_eq!(size("mrd:1000", 4000, 3000), (1000, 750));
    assert_eq!(size("rs:fit:2000:0/mrd:500", 4000, 3000), (500, 375));
    let p = build(
        &opts(""),
        &src(20000, 1000),
        &ResultLimits::default(),
        Format::Webp,
    )
    .unwrap();
    assert_eq!((p.width, p.height), (16383, 819));
    let p = build(
        &opts(""),
        &src(1000, 500),
        &ResultLimits::default(),
        Format::Ico,
    )
    .unwrap();
    assert_eq!((p.width, p.height), (256, 128));
    // 1 x 1,000,000 to 300 wide would be 300 x 300,000,000: the format's maximum side bounds it.
    let p = build(
        &opts("rs:fit:300:0/el:1"),
        &src(1, 1_000_000),
        &ResultLimits::default(),
        Format::Png,
    )
    .unwrap();
    assert_eq!((p.width, p.height), (1, 65535));
    // Enlarging past the result pixel limit is refused before any decode.
    let e = build(
        &opts("rs:fit:10000:10000/el:1"),
        &src(1000, 1000),
        &ResultLimits::default(),
        Format::Png,
    );
    assert!(matches!(e, Err(PlanError::ResultTooLarge { .. })), "{e:?}");
    assert!(matches!(
        build(
            &opts(""),
            &src(0, 10),
            &ResultLimits::default(),
            Format::Png
        ),
        Err(PlanError::EmptySource(0, 10))
    ));
}

#[test]
fn never_below_one_pixel() {
    assert_eq!(size("rs:fit:10:0", 10000, 1), (10, 1));
    assert_eq!(size("rs:force:1:1/z:0.0001", 500, 500), (1, 1));
}

// Built field by field from generated tuples; a struct literal would repeat every default.
#[allow(clippy::field_reassign_with_default)]
fn arb_options() -> impl Strategy<Value = Options> {
    let gravity = (
        0usize..11,
        -50.0f64..50.0,
        -0.99f64..0.99,
        0.0f64..=1.0,
        0.0f64..=1.0,
    )
        .prop_map(|(k, px, fr, fx, fy)| {
            use GravityType::*;
            let kinds = [
                Center, North, South, East, West, NorthEast, NorthWest, SouthEast, SouthWest,
                FocusPoint, Center,
            ];
            let kind = kinds[k];
            if kind == FocusPoint {
                Gravity { kind, x: fx, y: fy }
            } else {
                Gravity { kind, x: px, y: fr }
            }
        });
    (
        (
            0usize..5,
            0u32..3000,
            0u32..3000,
            0u32..500,
            0u32..500,
            any::<bool>(),
        ),
        (0.1f64..4.0, 0.1f64..4.0, 0.25f64..4.0),
        (
            any::<bool>(),
            any::<bool>(),
            gravity.clone(),
            gravity.clone(),
            gravity,
        ),
        (
            proptest::option::of((0.0f64..3000.0, 0.0f64..3000.0)),
            0u32..40,
            0u16..4,
            0u32..3000,
        ),
    )
        .prop_map(
            |(
                (rt, w, h, mw, mh, el),
                (zx, zy, dpr),
                (ex, exar, g, eg, cg),
                (crop, pd, rot, mrd),
            )| {
                let mut o = Options::default();
                o.resizing_type = [
                    ResizingType::Fit,
                    ResizingType::Fill,
                    ResizingType::FillDown,
                    ResizingType::Force,
                    ResizingType::Auto,
                ][rt];
                (o.width, o.height, o.min_width, o.min_height, o.enlarge) = (w, h, mw, mh, el);
                (o.zoom_x, o.zoom_y, o.dpr) = (zx, zy, dpr);
                o.extend = Extend {
                    enabled: ex,
                    gravity: eg,
                };
                o.extend_aspect_ratio = Extend {
                    enabled: exar,
                    gravity: eg,
                };
                o.gravity = g;
                o.crop = crop.map(|(cw, ch)| Crop {
                    // Exercise fractions too.
                    width: if cw < 100.0 { cw / 100.0 } else { cw },
                    height: if ch < 100.0 { ch / 100.0 } else { ch },
                    gravity: Some(cg),
                });
                o.padding = Padding {
                    top: pd,
                    right: pd / 2,
                    bottom: pd / 3,
                    left: pd / 4,
                };
                o.rotate = rot * 90;
                o.security.max_result_dimension = (mrd > 100).then_some(mrd);
                o
            },
        )
}

fn inside(r: Rect, w: u32, h: u32) -> bool {
    r.width >= 1 && r.height >= 1 && r.x + r.width <= w && r.y + r.height <= h
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20000))]

    #[test]
    fn plans_are_always_sane(
        o in arb_options(),
        sw in 1u32..20000,
        sh in 1u32..20000,
        orientation in 0u8..10,
        fmt in prop::sample::select(vec![Format::Jpeg, Format::Webp, Format::Png, Format::Ico]),
    ) {
        let limits = ResultLimits::default();
        let g = SourceGeometry { width: sw, height: sh, orientation, is_vector: false };
        match build(&o, &g, &limits, fmt) {
            Err(PlanError::ResultTooLarge { width, height, .. }) => {
                // Refused only when no scale fits: a pixel limit, or a side limit the
                // one-pixel floor or the canvases keep exceeding.
                let max_side = u64::from(o.security.max_result_dimension.unwrap_or(0).max(1)).min(u64::from(fmt.max_side()));
                let side_limit = o.security.max_result_dimension.map_or(u64::from(fmt.max_side()), |_| max_side);
                prop_assert!(width * height > limits.max_result_pixels
                    || width > side_limit || height > side_limit);
            }
            Err(e) => prop_assert!(false, "unexpected {e:?}"),
            Ok(p) => {
                prop_assert!(p.width >= 1 && p.height >= 1);
                prop_assert!(u64::from(p.width) * u64::from(p.height) <= limits.max_result_pixels);
                prop_assert!(p.width <= fmt.max_side() && p.height <= fmt.max_side());
                if let Some(m) = o.security.max_result_dimension {
                    // The whole result (extend and padding included) is scaled to fit; only
                    // the one-pixel floor of the scaled image can push past it.
                    let floor_hit = p.scaled_width == 1 || p.scaled_height == 1;
                    prop_assert!(p.width.max(p.height) <= m + 2 || floor_hit, "mrd {m}: {p:?}");
                }
                prop_assert!(inside(p.crop, p.oriented_width, p.oriented_height), "crop {p:?}");
                prop_assert!(inside(p.result_crop, p.scaled_width, p.scaled_height), "rc {p:?}");
                let (mut w, mut h) = (p.result_crop.width, p.result_crop.height);
                for e in &p.embeds {
                    prop_assert!(e.x + w <= e.width && e.y + h <= e.height, "embed {p:?}");
                    (w, h) = (e.width, e.height);
                }
                prop_assert_eq!((w, h), (p.width, p.height));
                let rt = o.resizing_type;
                if matches!(rt, ResizingType::Fit | ResizingType::Fill) && o.zoom_x == o.zoom_y
                    && p.scaled_width > 1 && p.scaled_height > 1
                {
                    // One scale factor for both axes, each side rounded: the intervals of
                    // factors that round to each side (±1 px) must overlap.
                    let (cw, ch) = (f64::from(p.crop.width), f64::from(p.crop.height));
                    let (w, h) = (f64::from(p.scaled_width), f64::from(p.scaled_height));
                    let lo = ((w - 1.0) / cw).max((h - 1.0) / ch);
                    let hi = ((w + 1.0) / cw).min((h + 1.0) / ch);
                    prop_assert!(lo <= hi, "aspect not kept: {p:?}");
                }
            }
        }
    }
}

#[test]
fn absurd_offsets_clamp_instead_of_overflowing() {
    for (kind, x) in [
        (GravityType::East, -1e300),
        (GravityType::Center, 1e300),
        (GravityType::West, f64::MAX),
        (GravityType::SouthEast, f64::MIN),
    ] {
        let g = Gravity { kind, x, y: x };
        let (px, py) = position(100, 50, 10, 10, &g, 3.0);
        assert!(px <= 90 && py <= 40, "{kind:?} {x}: {px},{py}");
    }
}
