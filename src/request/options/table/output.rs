//! Output: metadata, quality, format, caching and naming of the answer, presets.

use base64::Engine as _;

use std::fmt::Write as _;

use super::super::*;
use super::Spec;

// Closures that ignore some of their arguments keep one signature for every option.
#[allow(unused_variables)]
pub(super) static OPTIONS: &[Spec] = &[
    Spec {
        names: &["strip_metadata", "sm"],
        apply: |o, name, args, ctx, stack| {
            o.strip_metadata = parse_bool(exactly_one(name, args)?);
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if o.strip_metadata != d.strip_metadata {
                out.push(format!("sm:{}", b(o.strip_metadata)));
            }
        }),
    },
    Spec {
        names: &["keep_copyright", "kcr"],
        apply: |o, name, args, ctx, stack| {
            o.keep_copyright = parse_bool(exactly_one(name, args)?);
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if o.keep_copyright != d.keep_copyright {
                out.push(format!("kcr:{}", b(o.keep_copyright)));
            }
        }),
    },
    Spec {
        names: &["strip_color_profile", "scp"],
        apply: |o, name, args, ctx, stack| {
            o.strip_color_profile = parse_bool(exactly_one(name, args)?);
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if o.strip_color_profile != d.strip_color_profile {
                out.push(format!("scp:{}", b(o.strip_color_profile)));
            }
        }),
    },
    Spec {
        names: &["enforce_thumbnail", "eth"],
        apply: |o, name, args, ctx, stack| {
            o.enforce_thumbnail = parse_bool(exactly_one(name, args)?);
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if o.enforce_thumbnail {
                out.push("eth:1".into());
            }
        }),
    },
    Spec {
        names: &["quality", "q"],
        apply: |o, name, args, ctx, stack| {
            o.quality = parse_quality(name, exactly_one(name, args)?)?;
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if o.quality != 0 {
                out.push(format!("q:{}", o.quality));
            }
        }),
    },
    Spec {
        names: &["format_quality", "fq"],
        apply: |o, name, args, ctx, stack| {
            if args.is_empty() || args.len() % 2 != 0 {
                return Err(invalid(name, "pairs of format and quality"));
            }
            for pair in args.chunks(2) {
                let f = parse_format(name, &pair[0])?;
                let q = parse_quality(name, &pair[1])?;
                o.format_quality.insert(f, q);
            }
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if !o.format_quality.is_empty() {
                let mut s = "fq".to_string();
                for (f, q) in &o.format_quality {
                    let _ = write!(s, ":{f}:{q}");
                }
                out.push(s);
            }
        }),
    },
    Spec {
        names: &["max_bytes", "mb"],
        apply: |o, name, args, ctx, stack| {
            let v: i64 = parse_int(name, exactly_one(name, args)?)?;
            o.max_bytes = u64::try_from(v).map_err(|_| invalid(name, "must be ≥ 0"))?;
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if o.max_bytes != 0 {
                out.push(format!("mb:{}", o.max_bytes));
            }
        }),
    },
    Spec {
        names: &["format", "f", "ext"],
        apply: |o, name, args, ctx, stack| {
            let f = exactly_one(name, args)?;
            o.format = if f.is_empty() {
                None
            } else {
                Some(parse_format(name, f)?)
            };
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if let Some(f) = o.format {
                out.push(format!("f:{f}"));
            }
        }),
    },
    Spec {
        names: &["skip_processing", "skp"],
        apply: |o, name, args, ctx, stack| {
            let mut list = Vec::new();
            for a in args {
                list.push(parse_format(name, a)?);
            }
            list.sort();
            list.dedup();
            o.skip_processing = list;
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if !o.skip_processing.is_empty() {
                let list: Vec<&str> = o.skip_processing.iter().map(|f| f.ext()).collect();
                out.push(format!("skp:{}", list.join(":")));
            }
        }),
    },
    Spec {
        names: &["raw"],
        apply: |o, name, args, ctx, stack| {
            o.raw = parse_bool(exactly_one(name, args)?);
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if o.raw {
                out.push("raw:1".into());
            }
        }),
    },
    Spec {
        names: &["cachebuster", "cb"],
        apply: |o, name, args, ctx, stack| {
            o.cachebuster = exactly_one(name, args)?.to_string();
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if !o.cachebuster.is_empty() {
                out.push(format!("cb:{}", o.cachebuster));
            }
        }),
    },
    Spec {
        names: &["expires", "exp"],
        apply: |o, name, args, ctx, stack| {
            let t: i64 = parse_int(name, exactly_one(name, args)?)?;
            if t > 0 && t < ctx.now_unix {
                return Err(OptionsError::Expired);
            }
            o.expires = (t > 0).then_some(t);
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if let Some(e) = o.expires {
                out.push(format!("exp:{e}"));
            }
        }),
    },
    Spec {
        names: &["filename", "fn"],
        apply: |o, name, args, ctx, stack| {
            max_args(name, args, 2)?;
            let mut n = args[0].clone();
            if args.get(1).is_some_and(|e| parse_bool(e)) {
                let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(n.trim_end_matches('='))
                    .map_err(|_| invalid(name, "filename is not base64url"))?;
                n = String::from_utf8(bytes).map_err(|_| invalid(name, "filename is not UTF-8"))?;
            }
            o.filename = (!n.is_empty()).then_some(n);
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if let Some(n) = &o.filename {
                // Encoded so that `:` and `/` in a name cannot break the canonical grammar.
                let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(n.as_bytes());
                out.push(format!("fn:{enc}:1"));
            }
        }),
    },
    Spec {
        names: &["return_attachment", "att"],
        apply: |o, name, args, ctx, stack| {
            o.return_attachment = parse_bool(exactly_one(name, args)?);
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if o.return_attachment {
                out.push("att:1".into());
            }
        }),
    },
    Spec {
        names: &["preset", "pr"],
        apply: |o, name, args, ctx, stack| {
            for p in args {
                apply_preset(o, p, ctx, stack)?;
            }
            Ok(())
        },
        canonical: None,
    },
];
