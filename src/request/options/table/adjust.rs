//! Crop aspect ratio, colour adjustments, background alpha and autoquality.

use super::super::*;
use super::Spec;

// Closures that ignore some of their arguments keep one signature for every option.
#[allow(unused_variables)]
pub(super) static OPTIONS: &[Spec] = &[
    Spec {
        names: &["crop_aspect_ratio", "crop_ar", "car"],
        apply: |o, name, args, ctx, stack| {
            max_args(name, args, 2)?;
            let ar = parse_float(name, &args[0])?;
            if ar < 0.0 {
                return Err(invalid(name, "aspect ratio must be ≥ 0"));
            }
            let enlarge = args.get(1).is_some_and(|e| parse_bool(e));
            o.crop_aspect_ratio = (ar > 0.0).then_some((ar, enlarge));
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if let Some((ar, el)) = o.crop_aspect_ratio {
                out.push(format!("car:{}:{}", fmt_f(ar), b(el)));
            }
        }),
    },
    Spec {
        names: &["adjust", "a"],
        apply: |o, name, args, ctx, stack| {
            max_args(name, args, 3)?;
            if let Some(b) = args.first().filter(|a| !a.is_empty()) {
                o.brightness = parse_brightness(name, b)?;
            }
            if let Some(c) = args.get(1).filter(|a| !a.is_empty()) {
                o.contrast = non_negative_float(name, std::slice::from_ref(c))?;
            }
            if let Some(s) = args.get(2).filter(|a| !a.is_empty()) {
                o.saturation = non_negative_float(name, std::slice::from_ref(s))?;
            }
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if o.brightness != 0 || o.contrast != 1.0 || o.saturation != 1.0 {
                out.push(format!(
                    "a:{}:{}:{}",
                    o.brightness,
                    fmt_f(o.contrast),
                    fmt_f(o.saturation)
                ));
            }
        }),
    },
    Spec {
        names: &["brightness", "br"],
        apply: |o, name, args, ctx, stack| {
            o.brightness = parse_brightness(name, exactly_one(name, args)?)?;
            Ok(())
        },
        canonical: None,
    },
    Spec {
        names: &["contrast", "co"],
        apply: |o, name, args, ctx, stack| {
            o.contrast = non_negative_float(name, args)?;
            Ok(())
        },
        canonical: None,
    },
    Spec {
        names: &["saturation", "sa"],
        apply: |o, name, args, ctx, stack| {
            o.saturation = non_negative_float(name, args)?;
            Ok(())
        },
        canonical: None,
    },
    Spec {
        names: &["monochrome", "mc"],
        apply: |o, name, args, ctx, stack| {
            max_args(name, args, 2)?;
            let intensity = parse_float(name, &args[0])?;
            if !(0.0..=1.0).contains(&intensity) {
                return Err(invalid(name, "intensity must be within [0, 1]"));
            }
            let color = match args.get(1).filter(|a| !a.is_empty()) {
                Some(c) => Rgb::parse_hex(c)
                    .ok_or_else(|| invalid(name, format!("`{c}` is not a hex colour")))?,
                None => Rgb(0xb3, 0xb3, 0xb3),
            };
            o.monochrome = (intensity > 0.0).then_some(Monochrome { intensity, color });
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if let Some(m) = &o.monochrome {
                out.push(format!("mc:{}:{}", fmt_f(m.intensity), m.color.hex()));
            }
        }),
    },
    Spec {
        names: &["background_alpha", "bga"],
        apply: |o, name, args, ctx, stack| {
            let a = parse_float(name, exactly_one(name, args)?)?;
            if !(0.0..=1.0).contains(&a) {
                return Err(invalid(name, "alpha must be within [0, 1]"));
            }
            o.background_alpha = a;
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if o.background_alpha != 1.0 {
                out.push(format!("bga:{}", fmt_f(o.background_alpha)));
            }
        }),
    },
    Spec {
        names: &["autoquality", "aq"],
        apply: |o, name, args, ctx, stack| {
            max_args(name, args, 5)?;
            let method = AutoQualityMethod::parse(&args[0])
                .ok_or_else(|| invalid(name, format!("unknown method `{}`", args[0])))?;
            let opt_f = |i: usize| -> Result<Option<f64>, OptionsError> {
                args.get(i)
                    .filter(|a| !a.is_empty())
                    .map(|a| parse_float(name, a))
                    .transpose()
            };
            let opt_q = |i: usize| -> Result<Option<u8>, OptionsError> {
                args.get(i)
                    .filter(|a| !a.is_empty())
                    .map(|a| parse_quality(name, a))
                    .transpose()
            };
            let aq = AutoQuality {
                method,
                target: opt_f(1)?,
                min_quality: opt_q(2)?,
                max_quality: opt_q(3)?,
                allowed_error: opt_f(4)?,
            };
            if aq.method == AutoQualityMethod::Size && aq.target.is_none_or(|t| t < 1.0) {
                return Err(invalid(name, "method `size` needs a target in bytes"));
            }
            if aq.target.is_some_and(|t| t < 0.0) {
                return Err(invalid(name, "target must be ≥ 0"));
            }
            // `aq:none` is kept: it turns a server default off.
            o.autoquality = Some(aq);
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if let Some(aq) = &o.autoquality {
                let o = |v: Option<f64>| v.map(fmt_f).unwrap_or_default();
                let q = |v: Option<u8>| v.map(|v| v.to_string()).unwrap_or_default();
                out.push(format!(
                    "aq:{}:{}:{}:{}:{}",
                    aq.method.name(),
                    o(aq.target),
                    q(aq.min_quality),
                    q(aq.max_quality),
                    o(aq.allowed_error)
                ));
            }
        }),
    },
];
