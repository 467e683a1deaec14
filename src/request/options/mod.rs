//! The imgproxy processing-option grammar: option segments (`rs:fill:300:200`, `g:fp:0.3:0.7`)
//! → a typed [`Options`] value, presets, and the canonical string form used as cache key.
//! Pure: no I/O, no pixels; the clock is passed in through [`ParseContext`].

mod table;
mod types;

use std::collections::{BTreeMap, HashMap};
use types::GravityUse;
pub use types::{
    AutoQuality, AutoQualityMethod, Crop, Extend, Gravity, GravityType, Monochrome, Options,
    Padding, ResizingType, Rgb, SecurityOverrides, Trim, Watermark,
};

use crate::format::Format;

/// Why an option string was refused. Every variant but `SecurityOption` answers 404 like
/// imgproxy's "Invalid URL"; `SecurityOption` answers 403.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OptionsError {
    #[error("unknown processing option `{0}`")]
    Unknown(String),
    #[error("invalid arguments for `{name}`: {reason}")]
    InvalidArgs { name: String, reason: String },
    #[error("unknown preset `{0}`")]
    UnknownPreset(String),
    #[error("the URL has expired")]
    Expired,
    #[error("security option `{0}` is not allowed (allow_security_options is off)")]
    SecurityOption(String),
    #[error("only presets are allowed in URLs, got `{0}`")]
    OnlyPresets(String),
}

fn invalid(name: &str, reason: impl Into<String>) -> OptionsError {
    OptionsError::InvalidArgs {
        name: name.to_string(),
        reason: reason.into(),
    }
}

/// One option segment split into name and arguments, validated against the option table.
#[derive(Debug, Clone, PartialEq)]
pub struct RawOption {
    pub name: String,
    pub args: Vec<String>,
}

impl RawOption {
    /// Splits `name:arg:arg`. A segment without `:` is not an option.
    pub fn split(segment: &str) -> Option<RawOption> {
        let mut parts = segment.split(':');
        let name = parts.next()?;
        if !segment.contains(':') {
            return None;
        }
        Some(RawOption {
            name: name.to_string(),
            args: parts.map(str::to_string).collect(),
        })
    }
}

/// Named option sets (`pr:name`), parsed and validated once at startup.
#[derive(Debug, Clone, Default)]
pub struct Presets {
    map: HashMap<String, Vec<RawOption>>,
}

impl Presets {
    /// Parses preset definitions (`name → "rs:fill:300:300/q:75"`). Every definition is checked
    /// by applying it to default options, so a typo fails at startup, not at request time.
    pub fn parse(defs: &BTreeMap<String, String>) -> Result<Presets, Vec<String>> {
        let mut presets = Presets::default();
        let mut problems = Vec::new();
        for (name, def) in defs {
            let mut opts = Vec::new();
            for seg in def.split('/').filter(|s| !s.is_empty()) {
                match RawOption::split(seg) {
                    Some(o) => opts.push(o),
                    None => problems.push(format!("preset `{name}`: `{seg}` is not an option")),
                }
            }
            presets.map.insert(name.clone(), opts);
        }
        let defaults = Options::default();
        let ctx = ParseContext::operator(&presets, &defaults, 0);
        for name in defs.keys() {
            let mut o = Options::default();
            let mut stack = Vec::new();
            if let Err(e) = apply_preset(&mut o, name, &ctx, &mut stack) {
                problems.push(format!("preset `{name}`: {e}"));
            }
        }
        if problems.is_empty() {
            Ok(presets)
        } else {
            Err(problems)
        }
    }

    pub fn get(&self, name: &str) -> Option<&[RawOption]> {
        self.map.get(name).map(Vec::as_slice)
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// What parsing needs besides the option text.
#[derive(Clone, Copy)]
pub struct ParseContext<'a> {
    pub presets: &'a Presets,
    pub allow_security_options: bool,
    /// Current time, for `expires`.
    pub now_unix: i64,
    /// The server's defaults (config-dependent `auto_rotate`, `strip_metadata`, ...).
    pub defaults: &'a Options,
}

impl<'a> ParseContext<'a> {
    /// Options an operator wrote (presets, `pixgate transform`): security options allowed.
    pub fn operator(presets: &'a Presets, defaults: &'a Options, now_unix: i64) -> Self {
        ParseContext {
            presets,
            allow_security_options: true,
            now_unix,
            defaults,
        }
    }
}

/// Parses option segments (already split on `/`). The `default` preset applies first.
pub fn parse_segments<'s>(
    segments: impl IntoIterator<Item = &'s str>,
    ctx: &ParseContext<'_>,
) -> Result<Options, OptionsError> {
    let mut o = ctx.defaults.clone();
    let mut stack = Vec::new();
    if ctx.presets.get("default").is_some() {
        apply_preset(&mut o, "default", ctx, &mut stack)?;
    }
    for seg in segments {
        if seg.is_empty() {
            continue;
        }
        let raw = RawOption::split(seg).ok_or_else(|| OptionsError::Unknown(seg.to_string()))?;
        apply(&mut o, &raw.name, &raw.args, ctx, &mut stack)?;
    }
    Ok(o)
}

/// Parses the options part of a URL, `rs:fit:300:0/q:80/f:webp`.
pub fn parse(options: &str, ctx: &ParseContext<'_>) -> Result<Options, OptionsError> {
    parse_segments(options.split('/'), ctx)
}

/// `only_presets` mode: the one segment is `name:name:...`, nothing else is accepted.
pub fn parse_presets_only(segment: &str, ctx: &ParseContext<'_>) -> Result<Options, OptionsError> {
    let mut o = ctx.defaults.clone();
    let mut stack = Vec::new();
    if ctx.presets.get("default").is_some() {
        apply_preset(&mut o, "default", ctx, &mut stack)?;
    }
    for name in segment.split(':').filter(|n| !n.is_empty()) {
        if ctx.presets.get(name).is_none() {
            return Err(OptionsError::OnlyPresets(name.to_string()));
        }
        apply_preset(&mut o, name, ctx, &mut stack)?;
    }
    Ok(o)
}

fn apply_preset(
    o: &mut Options,
    name: &str,
    ctx: &ParseContext<'_>,
    stack: &mut Vec<String>,
) -> Result<(), OptionsError> {
    // imgproxy skips a preset that is already being expanded (recursion) instead of failing.
    if stack.iter().any(|s| s == name) {
        return Ok(());
    }
    let opts = ctx
        .presets
        .get(name)
        .ok_or_else(|| OptionsError::UnknownPreset(name.to_string()))?;
    stack.push(name.to_string());
    // Presets are operator-written: security options inside them are allowed.
    let inner = ParseContext {
        allow_security_options: true,
        ..*ctx
    };
    for raw in opts {
        apply(o, &raw.name, &raw.args, &inner, stack)?;
    }
    stack.pop();
    Ok(())
}

/// Go's `strconv.ParseBool`; anything else is false (imgproxy logs and carries on).
fn parse_bool(s: &str) -> bool {
    matches!(s, "1" | "t" | "T" | "TRUE" | "true" | "True")
}

fn parse_int<T: std::str::FromStr>(name: &str, s: &str) -> Result<T, OptionsError> {
    s.parse::<T>()
        .map_err(|_| invalid(name, format!("`{s}` is not an integer")))
}

fn parse_float(name: &str, s: &str) -> Result<f64, OptionsError> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(invalid(name, format!("`{s}` is not a number"))),
    }
}

fn parse_dimension(name: &str, s: &str) -> Result<u32, OptionsError> {
    let v: i64 = parse_int(name, s)?;
    u32::try_from(v).map_err(|_| invalid(name, format!("`{s}` must be ≥ 0")))
}

fn max_args(name: &str, args: &[String], n: usize) -> Result<(), OptionsError> {
    if args.len() > n {
        return Err(invalid(name, format!("at most {n} arguments")));
    }
    Ok(())
}

fn exactly_one<'a>(name: &str, args: &'a [String]) -> Result<&'a str, OptionsError> {
    if args.len() != 1 {
        return Err(invalid(name, "exactly one argument"));
    }
    Ok(&args[0])
}

fn parse_format(name: &str, s: &str) -> Result<Format, OptionsError> {
    Format::from_name(s).ok_or_else(|| invalid(name, format!("unknown format `{s}`")))
}

fn parse_gravity(name: &str, args: &[String], usage: GravityUse) -> Result<Gravity, OptionsError> {
    let kind = GravityType::parse(&args[0])
        .filter(|k| match usage {
            GravityUse::Main => *k != GravityType::Replicate,
            GravityUse::Extend => !matches!(k, GravityType::Replicate | GravityType::Smart),
        })
        .ok_or_else(|| invalid(name, format!("invalid gravity `{}`", args[0])))?;
    let mut g = Gravity {
        kind,
        x: 0.0,
        y: 0.0,
    };
    match kind {
        GravityType::Smart => {
            if args.len() > 1 {
                return Err(invalid(name, "smart gravity takes no offsets"));
            }
        }
        _ => {
            if kind == GravityType::FocusPoint && args.len() != 3 {
                return Err(invalid(name, "fp needs exactly x and y"));
            }
            max_args(name, args, 3)?;
            let check = |v: f64| kind != GravityType::FocusPoint || (0.0..=1.0).contains(&v);
            if args.len() > 1 {
                g.x = parse_float(name, &args[1])?;
                if !check(g.x) {
                    return Err(invalid(name, "focus point x must be within [0, 1]"));
                }
            }
            if args.len() > 2 {
                g.y = parse_float(name, &args[2])?;
                if !check(g.y) {
                    return Err(invalid(name, "focus point y must be within [0, 1]"));
                }
            }
        }
    }
    Ok(g)
}

fn parse_extend(name: &str, args: &[String]) -> Result<Extend, OptionsError> {
    max_args(name, args, 4)?;
    let mut e = Extend {
        enabled: parse_bool(&args[0]),
        gravity: Gravity::default(),
    };
    if args.len() > 1 {
        e.gravity = parse_gravity(name, &args[1..], GravityUse::Extend)?;
    }
    Ok(e)
}

fn parse_color_args(name: &str, args: &[String]) -> Result<Rgb, OptionsError> {
    match args.len() {
        1 => Rgb::parse_hex(&args[0])
            .ok_or_else(|| invalid(name, format!("`{}` is not a hex colour", args[0]))),
        3 => {
            let c = |s: &str| -> Result<u8, OptionsError> {
                parse_int::<u8>(name, s).map_err(|_| invalid(name, "colour parts are 0..255"))
            };
            Ok(Rgb(c(&args[0])?, c(&args[1])?, c(&args[2])?))
        }
        _ => Err(invalid(name, "a hex colour or R:G:B")),
    }
}

fn apply_size(o: &mut Options, name: &str, args: &[String]) -> Result<(), OptionsError> {
    max_args(name, args, 7)?;
    if let Some(w) = args.first().filter(|a| !a.is_empty()) {
        o.width = parse_dimension(name, w)?;
    }
    if let Some(h) = args.get(1).filter(|a| !a.is_empty()) {
        o.height = parse_dimension(name, h)?;
    }
    if let Some(e) = args.get(2).filter(|a| !a.is_empty()) {
        o.enlarge = parse_bool(e);
    }
    if args.get(3).is_some_and(|a| !a.is_empty()) {
        o.extend = parse_extend(name, &args[3..])?;
    }
    Ok(())
}

fn security<T>(
    name: &str,
    ctx: &ParseContext<'_>,
    parsed: Result<T, OptionsError>,
) -> Result<T, OptionsError> {
    if !ctx.allow_security_options {
        return Err(OptionsError::SecurityOption(name.to_string()));
    }
    parsed
}

fn apply(
    o: &mut Options,
    name: &str,
    args: &[String],
    ctx: &ParseContext<'_>,
    stack: &mut Vec<String>,
) -> Result<(), OptionsError> {
    match table::lookup(name) {
        Some(spec) => (spec.apply)(o, name, args, ctx, stack),
        None => Err(OptionsError::Unknown(name.to_string())),
    }
}

/// Largest `blur` sigma, in pixels: larger values are read as this.
pub const MAX_BLUR_SIGMA: f64 = 1000.0;
/// Largest `sharpen` sigma, in pixels: larger values are read as this.
pub const MAX_SHARPEN_SIGMA: f64 = 100.0;

fn parse_quality(name: &str, s: &str) -> Result<u8, OptionsError> {
    let q: i64 = parse_int(name, s)?;
    if !(0..=100).contains(&q) {
        return Err(invalid(name, "quality must be within 0..100"));
    }
    Ok(q as u8)
}

fn parse_brightness(name: &str, s: &str) -> Result<i32, OptionsError> {
    let b: i32 = parse_int(name, s)?;
    if !(-255..=255).contains(&b) {
        return Err(invalid(name, "brightness must be within -255..255"));
    }
    Ok(b)
}

fn non_negative_float(name: &str, args: &[String]) -> Result<f64, OptionsError> {
    let v = parse_float(name, exactly_one(name, args)?)?;
    if v < 0.0 {
        return Err(invalid(name, "must be ≥ 0"));
    }
    Ok(v)
}

fn positive_float(name: &str, args: &[String]) -> Result<f64, OptionsError> {
    let v = parse_float(name, exactly_one(name, args)?)?;
    if v <= 0.0 {
        return Err(invalid(name, "must be > 0"));
    }
    Ok(v)
}

/// Shortest decimal that reads back as the same f64 (`0.5`, `2`, `1e-7`).
fn fmt_f(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    format!("{v}")
}

fn b(v: bool) -> &'static str {
    if v { "1" } else { "0" }
}

impl Options {
    /// The options this build does not yet implement in pixels; refused with a typed error
    /// rather than silently ignored.
    pub fn unsupported(&self) -> Option<&'static str> {
        let checks: [(bool, &'static str); 3] = [
            (self.raw, "raw"),
            (
                self.autoquality
                    .as_ref()
                    .is_some_and(|a| a.method == AutoQualityMethod::Ml),
                "autoquality:ml",
            ),
            (self.enforce_thumbnail, "enforce_thumbnail"),
        ];
        checks.into_iter().find(|(on, _)| *on).map(|(_, n)| n)
    }

    /// The canonical option string: short names, fixed order, only values that differ from
    /// imgproxy's built-in defaults. Equivalent option strings give the same canonical string,
    /// and it parses back to equal `Options` (with default server settings).
    pub fn canonical(&self) -> String {
        let d = Options::default();
        let mut parts: Vec<String> = Vec::new();
        for spec in table::all() {
            if let Some(write) = spec.canonical {
                write(self, &d, &mut parts);
            }
        }
        parts.join("/")
    }
}

#[cfg(test)]
mod tests;
