//! Pixels: background, blur, sharpen, pixelate, watermark.

use super::super::*;
use super::Spec;

// Closures that ignore some of their arguments keep one signature for every option.
#[allow(unused_variables)]
pub(super) static OPTIONS: &[Spec] = &[
    Spec {
        names: &["background", "bg"],
        apply: |o, name, args, ctx, stack| {
            if args.len() == 1 && args[0].is_empty() {
                o.background = None;
            } else {
                o.background = Some(parse_color_args(name, args)?);
            }
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if let Some(c) = o.background {
                out.push(format!("bg:{}", c.hex()));
            }
        }),
    },
    Spec {
        names: &["blur", "bl"],
        apply: |o, name, args, ctx, stack| {
            // imgproxy takes any sigma ≥ 0; past these the result no longer changes visibly (a
            // blur of 1000 px is the image's edge-weighted mean on any result pixgate makes),
            // so larger values mean these and share their cache entry.
            o.blur = non_negative_float(name, args)?.min(MAX_BLUR_SIGMA);
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if o.blur != 0.0 {
                out.push(format!("bl:{}", fmt_f(o.blur)));
            }
        }),
    },
    Spec {
        names: &["sharpen", "sh"],
        apply: |o, name, args, ctx, stack| {
            o.sharpen = non_negative_float(name, args)?.min(MAX_SHARPEN_SIGMA);
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if o.sharpen != 0.0 {
                out.push(format!("sh:{}", fmt_f(o.sharpen)));
            }
        }),
    },
    Spec {
        names: &["pixelate", "pix"],
        apply: |o, name, args, ctx, stack| {
            o.pixelate = parse_dimension(name, exactly_one(name, args)?)?;
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if o.pixelate != 0 {
                out.push(format!("pix:{}", o.pixelate));
            }
        }),
    },
    Spec {
        names: &["watermark", "wm"],
        apply: |o, name, args, ctx, stack| {
            max_args(name, args, 7)?;
            let opacity = parse_float(name, &args[0])?;
            if !(0.0..=1.0).contains(&opacity) {
                return Err(invalid(name, "opacity must be within [0, 1]"));
            }
            let mut w = Watermark {
                opacity,
                position: GravityType::Center,
                x: 0.0,
                y: 0.0,
                scale: 0.0,
            };
            if let Some(p) = args.get(1).filter(|a| !a.is_empty()) {
                w.position = GravityType::parse(p)
                    .filter(|k| !matches!(k, GravityType::Smart | GravityType::FocusPoint))
                    .ok_or_else(|| invalid(name, format!("invalid position `{p}`")))?;
            }
            if let Some(x) = args.get(2).filter(|a| !a.is_empty()) {
                w.x = parse_float(name, x)?;
            }
            if let Some(y) = args.get(3).filter(|a| !a.is_empty()) {
                w.y = parse_float(name, y)?;
            }
            if let Some(s) = args.get(4).filter(|a| !a.is_empty()) {
                w.scale = parse_float(name, s)?;
                if w.scale < 0.0 {
                    return Err(invalid(name, "scale must be ≥ 0"));
                }
            }
            o.watermark = (opacity > 0.0).then_some(w);
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if let Some(w) = &o.watermark {
                out.push(format!(
                    "wm:{}:{}:{}:{}:{}",
                    fmt_f(w.opacity),
                    w.position.name(),
                    fmt_f(w.x),
                    fmt_f(w.y),
                    fmt_f(w.scale)
                ));
            }
        }),
    },
];
