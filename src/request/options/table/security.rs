//! Per-request security limits (allowed with `allow_security_options`, and in presets).

use super::super::*;
use super::Spec;

// Closures that ignore some of their arguments keep one signature for every option.
#[allow(unused_variables)]
pub(super) static OPTIONS: &[Spec] = &[
    Spec {
        names: &["max_src_resolution", "msr"],
        apply: |o, name, args, ctx, stack| {
            let v = security(name, ctx, positive_float(name, args))?;
            o.security.max_src_resolution = Some(v);
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if let Some(v) = o.security.max_src_resolution {
                out.push(format!("msr:{}", fmt_f(v)));
            }
        }),
    },
    Spec {
        names: &["max_src_file_size", "msfs"],
        apply: |o, name, args, ctx, stack| {
            let v = security(
                name,
                ctx,
                exactly_one(name, args).and_then(|a| parse_int(name, a)),
            )?;
            o.security.max_src_file_size = Some(v);
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if let Some(v) = o.security.max_src_file_size {
                out.push(format!("msfs:{v}"));
            }
        }),
    },
    Spec {
        names: &["max_animation_frames", "maf"],
        apply: |o, name, args, ctx, stack| {
            let v: u32 = security(
                name,
                ctx,
                exactly_one(name, args).and_then(|a| parse_int(name, a)),
            )?;
            if v == 0 {
                return Err(invalid(name, "must be > 0"));
            }
            o.security.max_animation_frames = Some(v);
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if let Some(v) = o.security.max_animation_frames {
                out.push(format!("maf:{v}"));
            }
        }),
    },
    Spec {
        names: &["max_animation_frame_resolution", "mafr"],
        apply: |o, name, args, ctx, stack| {
            let v = security(name, ctx, non_negative_float(name, args))?;
            o.security.max_animation_frame_resolution = Some(v);
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if let Some(v) = o.security.max_animation_frame_resolution {
                out.push(format!("mafr:{}", fmt_f(v)));
            }
        }),
    },
    Spec {
        names: &["max_result_dimension", "mrd"],
        apply: |o, name, args, ctx, stack| {
            let v = security(
                name,
                ctx,
                exactly_one(name, args).and_then(|a| parse_dimension(name, a)),
            )?;
            o.security.max_result_dimension = Some(v);
            Ok(())
        },
        canonical: Some(|o, d, out| {
            if let Some(v) = o.security.max_result_dimension {
                out.push(format!("mrd:{v}"));
            }
        }),
    },
];
