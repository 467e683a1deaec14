//! Geometry: size, resizing, zoom, extension, gravity, crop, trim, padding, rotation, flips.

use super::super::*;
use super::Spec;

// Closures that ignore some of their arguments keep one signature for every option.
#[allow(unused_variables)]
pub(super) static OPTIONS: &[Spec] = &[
    Spec {
        names: &["resize", "rs"],
        apply: |o, name, args, ctx, stack| {
            max_args(name, args, 8)?;
            if let Some(t) = args.first().filter(|a| !a.is_empty()) {
                o.resizing_type = ResizingType::parse(t)
                    .ok_or_else(|| invalid(name, format!("unknown resizing type `{t}`")))?;
            }
            if args.len() > 1 {
                apply_size(o, name, &args[1..])?;
            }
            Ok(())
        },
        canonical: None,
    },
    Spec {
        names: &["size", "s"],
        apply: |o, name, args, ctx, stack| {
            apply_size(o, name, args)?;
            Ok(())
        },
        canonical: None,
    },
    Spec {
        names: &["resizing_type", "rt"],
        apply: |o, name, args, ctx, stack| {
            let t = exactly_one(name, args)?;
            o.resizing_type = ResizingType::parse(t)
                .ok_or_else(|| invalid(name, format!("unknown resizing type `{t}`")))?;
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if o.resizing_type != d.resizing_type {
                out.push(format!("rt:{}", o.resizing_type.name()));
            }
        }),
    },
    Spec {
        names: &["width", "w"],
        apply: |o, name, args, ctx, stack| {
            o.width = parse_dimension(name, exactly_one(name, args)?)?;
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if o.width != 0 {
                out.push(format!("w:{}", o.width));
            }
        }),
    },
    Spec {
        names: &["height", "h"],
        apply: |o, name, args, ctx, stack| {
            o.height = parse_dimension(name, exactly_one(name, args)?)?;
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if o.height != 0 {
                out.push(format!("h:{}", o.height));
            }
        }),
    },
    Spec {
        names: &["min-width", "mw"],
        apply: |o, name, args, ctx, stack| {
            o.min_width = parse_dimension(name, exactly_one(name, args)?)?;
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if o.min_width != 0 {
                out.push(format!("mw:{}", o.min_width));
            }
        }),
    },
    Spec {
        names: &["min-height", "mh"],
        apply: |o, name, args, ctx, stack| {
            o.min_height = parse_dimension(name, exactly_one(name, args)?)?;
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if o.min_height != 0 {
                out.push(format!("mh:{}", o.min_height));
            }
        }),
    },
    Spec {
        names: &["zoom", "z"],
        apply: |o, name, args, ctx, stack| {
            max_args(name, args, 2)?;
            let x = parse_float(name, &args[0])?;
            let y = match args.get(1) {
                Some(y) => parse_float(name, y)?,
                None => x,
            };
            if x <= 0.0 || y <= 0.0 {
                return Err(invalid(name, "zoom must be > 0"));
            }
            (o.zoom_x, o.zoom_y) = (x, y);
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if o.zoom_x != 1.0 || o.zoom_y != 1.0 {
                out.push(format!("z:{}:{}", fmt_f(o.zoom_x), fmt_f(o.zoom_y)));
            }
        }),
    },
    Spec {
        names: &["dpr"],
        apply: |o, name, args, ctx, stack| {
            let d = parse_float(name, exactly_one(name, args)?)?;
            if d <= 0.0 {
                return Err(invalid(name, "dpr must be > 0"));
            }
            o.dpr = d;
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if o.dpr != 1.0 {
                out.push(format!("dpr:{}", fmt_f(o.dpr)));
            }
        }),
    },
    Spec {
        names: &["enlarge", "el"],
        apply: |o, name, args, ctx, stack| {
            o.enlarge = parse_bool(exactly_one(name, args)?);
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if o.enlarge {
                out.push("el:1".into());
            }
        }),
    },
    Spec {
        names: &["extend", "ex"],
        apply: |o, name, args, ctx, stack| {
            o.extend = parse_extend(name, args)?;
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if o.extend.enabled {
                let mut s = "ex:1:".to_string();
                o.extend.gravity.canonical(&mut s);
                out.push(s);
            }
        }),
    },
    Spec {
        names: &["extend_aspect_ratio", "extend_ar", "exar"],
        apply: |o, name, args, ctx, stack| {
            o.extend_aspect_ratio = parse_extend(name, args)?;
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if o.extend_aspect_ratio.enabled {
                let mut s = "exar:1:".to_string();
                o.extend_aspect_ratio.gravity.canonical(&mut s);
                out.push(s);
            }
        }),
    },
    Spec {
        names: &["gravity", "g"],
        apply: |o, name, args, ctx, stack| {
            o.gravity = parse_gravity(name, args, GravityUse::Main)?;
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if o.gravity != d.gravity {
                let mut s = "g:".to_string();
                o.gravity.canonical(&mut s);
                out.push(s);
            }
        }),
    },
    Spec {
        names: &["crop", "c"],
        apply: |o, name, args, ctx, stack| {
            if args.len() < 2 {
                return Err(invalid(name, "width and height are required"));
            }
            max_args(name, args, 5)?;
            let dim = |s: &str| -> Result<f64, OptionsError> {
                let v = parse_float(name, s)?;
                if v < 0.0 {
                    return Err(invalid(name, "crop sizes must be ≥ 0"));
                }
                Ok(v)
            };
            let mut c = Crop {
                width: dim(&args[0])?,
                height: dim(&args[1])?,
                gravity: None,
            };
            if args.len() > 2 {
                c.gravity = Some(parse_gravity(name, &args[2..], GravityUse::Main)?);
            }
            o.crop = Some(c);
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if let Some(c) = &o.crop {
                let mut s = format!("c:{}:{}", fmt_f(c.width), fmt_f(c.height));
                if let Some(g) = &c.gravity {
                    s.push(':');
                    g.canonical(&mut s);
                }
                out.push(s);
            }
        }),
    },
    Spec {
        names: &["trim", "t"],
        apply: |o, name, args, ctx, stack| {
            max_args(name, args, 4)?;
            let threshold = parse_float(name, &args[0])?;
            if threshold < 0.0 {
                return Err(invalid(name, "threshold must be ≥ 0"));
            }
            let mut t = Trim {
                threshold,
                color: None,
                equal_hor: false,
                equal_ver: false,
            };
            if let Some(c) = args.get(1).filter(|a| !a.is_empty()) {
                t.color = Some(
                    Rgb::parse_hex(c)
                        .ok_or_else(|| invalid(name, format!("`{c}` is not a hex colour")))?,
                );
            }
            if let Some(v) = args.get(2).filter(|a| !a.is_empty()) {
                t.equal_hor = parse_bool(v);
            }
            if let Some(v) = args.get(3).filter(|a| !a.is_empty()) {
                t.equal_ver = parse_bool(v);
            }
            o.trim = Some(t);
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if let Some(t) = &o.trim {
                out.push(format!(
                    "t:{}:{}:{}:{}",
                    fmt_f(t.threshold),
                    t.color.map(|c| c.hex()).unwrap_or_default(),
                    b(t.equal_hor),
                    b(t.equal_ver)
                ));
            }
        }),
    },
    Spec {
        names: &["padding", "pd"],
        apply: |o, name, args, ctx, stack| {
            if args.is_empty() || args.len() > 4 {
                return Err(invalid(name, "1 to 4 arguments"));
            }
            let mut p = o.padding;
            if let Some(v) = args.first().filter(|a| !a.is_empty()) {
                let v = parse_dimension(name, v)?;
                p = Padding {
                    top: v,
                    right: v,
                    bottom: v,
                    left: v,
                };
            }
            if let Some(v) = args.get(1).filter(|a| !a.is_empty()) {
                p.right = parse_dimension(name, v)?;
                p.left = p.right;
            }
            if let Some(v) = args.get(2).filter(|a| !a.is_empty()) {
                p.bottom = parse_dimension(name, v)?;
            }
            if let Some(v) = args.get(3).filter(|a| !a.is_empty()) {
                p.left = parse_dimension(name, v)?;
            }
            o.padding = p;
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if !o.padding.is_zero() {
                let p = o.padding;
                out.push(format!("pd:{}:{}:{}:{}", p.top, p.right, p.bottom, p.left));
            }
        }),
    },
    Spec {
        names: &["auto_rotate", "ar"],
        apply: |o, name, args, ctx, stack| {
            o.auto_rotate = parse_bool(exactly_one(name, args)?);
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if o.auto_rotate != d.auto_rotate {
                out.push(format!("ar:{}", b(o.auto_rotate)));
            }
        }),
    },
    Spec {
        names: &["rotate", "rot"],
        apply: |o, name, args, ctx, stack| {
            let r: i64 = parse_int(name, exactly_one(name, args)?)?;
            if r % 90 != 0 {
                return Err(invalid(name, "rotation must be a multiple of 90"));
            }
            o.rotate = r.rem_euclid(360) as u16;
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if o.rotate != 0 {
                out.push(format!("rot:{}", o.rotate));
            }
        }),
    },
    Spec {
        names: &["flip", "fl"],
        apply: |o, name, args, ctx, stack| {
            max_args(name, args, 2)?;
            if let Some(h) = args.first().filter(|a| !a.is_empty()) {
                o.flip_horizontal = parse_bool(h);
            }
            if let Some(v) = args.get(1).filter(|a| !a.is_empty()) {
                o.flip_vertical = parse_bool(v);
            }
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if o.flip_horizontal || o.flip_vertical {
                out.push(format!(
                    "fl:{}:{}",
                    b(o.flip_horizontal),
                    b(o.flip_vertical)
                ));
            }
        }),
    },
];
