//! The imgproxy processing-option grammar: option segments (`rs:fill:300:200`, `g:fp:0.3:0.7`)
//! → a typed [`Options`] value, presets, and the canonical string form used as cache key.
//! Pure: no I/O, no pixels; the clock is passed in through [`ParseContext`].

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use base64::Engine as _;

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

/// How the result size is derived from the requested width and height.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResizingType {
    #[default]
    Fit,
    Fill,
    FillDown,
    Force,
    Auto,
}

impl ResizingType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "fit" => Self::Fit,
            "fill" => Self::Fill,
            "fill-down" => Self::FillDown,
            "force" => Self::Force,
            "auto" => Self::Auto,
            _ => return None,
        })
    }
    fn name(self) -> &'static str {
        match self {
            Self::Fit => "fit",
            Self::Fill => "fill",
            Self::FillDown => "fill-down",
            Self::Force => "force",
            Self::Auto => "auto",
        }
    }
}

/// Anchor of a crop or placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GravityType {
    #[default]
    Center,
    North,
    South,
    East,
    West,
    NorthEast,
    NorthWest,
    SouthEast,
    SouthWest,
    /// Content-aware ("attention") crop.
    Smart,
    /// Focal point given as fractions of the image size.
    FocusPoint,
    /// Tiling; watermark positions only.
    Replicate,
}

impl GravityType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ce" => Self::Center,
            "no" => Self::North,
            "so" => Self::South,
            "ea" => Self::East,
            "we" => Self::West,
            "noea" => Self::NorthEast,
            "nowe" => Self::NorthWest,
            "soea" => Self::SouthEast,
            "sowe" => Self::SouthWest,
            "sm" => Self::Smart,
            "fp" => Self::FocusPoint,
            "re" => Self::Replicate,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Center => "ce",
            Self::North => "no",
            Self::South => "so",
            Self::East => "ea",
            Self::West => "we",
            Self::NorthEast => "noea",
            Self::NorthWest => "nowe",
            Self::SouthEast => "soea",
            Self::SouthWest => "sowe",
            Self::Smart => "sm",
            Self::FocusPoint => "fp",
            Self::Replicate => "re",
        }
    }
}

/// A gravity with its offsets. Offsets ≥ 1 in magnitude are pixels, smaller ones fractions of
/// the image; for `FocusPoint` they are the point itself, in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Gravity {
    pub kind: GravityType,
    pub x: f64,
    pub y: f64,
}

impl Gravity {
    fn canonical(&self, out: &mut String) {
        out.push_str(self.kind.name());
        match self.kind {
            GravityType::Smart => {}
            _ if self.x == 0.0 && self.y == 0.0 && self.kind != GravityType::FocusPoint => {}
            _ => {
                let _ = write!(out, ":{}:{}", fmt_f(self.x), fmt_f(self.y));
            }
        }
    }
}

/// Which gravity types an option accepts.
#[derive(Clone, Copy)]
enum GravityUse {
    Main,
    Extend,
}

/// `extend` and `extend_aspect_ratio`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Extend {
    pub enabled: bool,
    pub gravity: Gravity,
}

/// `crop`: width and height (≥ 1 pixels, < 1 fractions, 0 full size) and its own gravity.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Crop {
    pub width: f64,
    pub height: f64,
    /// `None` means: use the main gravity.
    pub gravity: Option<Gravity>,
}

/// `trim`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trim {
    pub threshold: f64,
    pub color: Option<Rgb>,
    pub equal_hor: bool,
    pub equal_ver: bool,
}

/// `padding`, CSS order, in CSS pixels (multiplied by dpr when applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Padding {
    pub top: u32,
    pub right: u32,
    pub bottom: u32,
    pub left: u32,
}

impl Padding {
    pub fn is_zero(&self) -> bool {
        self.top == 0 && self.right == 0 && self.bottom == 0 && self.left == 0
    }
}

/// An sRGB colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl Rgb {
    pub const WHITE: Rgb = Rgb(255, 255, 255);

    fn parse_hex(s: &str) -> Option<Rgb> {
        if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let digit = |i: usize| u8::from_str_radix(&s[i..i + 1], 16).ok();
        match s.len() {
            3 => Some(Rgb(digit(0)? * 17, digit(1)? * 17, digit(2)? * 17)),
            6 => {
                let byte = |i: usize| u8::from_str_radix(&s[i..i + 2], 16).ok();
                Some(Rgb(byte(0)?, byte(2)?, byte(4)?))
            }
            _ => None,
        }
    }
    fn hex(&self) -> String {
        format!("{:02x}{:02x}{:02x}", self.0, self.1, self.2)
    }
}

/// `watermark`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Watermark {
    pub opacity: f64,
    pub position: GravityType,
    pub x: f64,
    pub y: f64,
    pub scale: f64,
}

/// `monochrome`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Monochrome {
    pub intensity: f64,
    pub color: Rgb,
}

/// `autoquality`.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoQuality {
    pub method: String,
    pub target: Option<f64>,
    pub min_quality: Option<u8>,
    pub max_quality: Option<u8>,
    pub allowed_error: Option<f64>,
}

/// Per-request overrides of the server's security limits (`msr`, `msfs`, `maf`, `mafr`, `mrd`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SecurityOverrides {
    pub max_src_resolution: Option<f64>,
    pub max_src_file_size: Option<u64>,
    pub max_animation_frames: Option<u32>,
    pub max_animation_frame_resolution: Option<f64>,
    pub max_result_dimension: Option<u32>,
}

impl SecurityOverrides {
    /// The largest source allowed: the server's limit, lowered (never raised) by `msfs`;
    /// `None` and `msfs:0` mean no limit.
    pub fn source_size_limit(&self, server: Option<u64>) -> Option<u64> {
        let url = self.max_src_file_size.filter(|v| *v > 0);
        match (server, url) {
            (Some(s), Some(u)) => Some(s.min(u)),
            (s, u) => s.or(u),
        }
    }
}

/// Every processing option of a request, after defaults, presets and left-to-right overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub resizing_type: ResizingType,
    pub width: u32,
    pub height: u32,
    pub min_width: u32,
    pub min_height: u32,
    pub zoom_x: f64,
    pub zoom_y: f64,
    pub dpr: f64,
    pub enlarge: bool,
    pub extend: Extend,
    pub extend_aspect_ratio: Extend,
    pub gravity: Gravity,
    pub crop: Option<Crop>,
    pub trim: Option<Trim>,
    pub padding: Padding,
    pub auto_rotate: bool,
    /// Normalised to 0, 90, 180 or 270.
    pub rotate: u16,
    pub flip_horizontal: bool,
    pub flip_vertical: bool,
    /// `Some` = flatten onto this colour (`bg`).
    pub background: Option<Rgb>,
    pub blur: f64,
    pub sharpen: f64,
    pub pixelate: u32,
    pub watermark: Option<Watermark>,
    pub strip_metadata: bool,
    pub keep_copyright: bool,
    pub strip_color_profile: bool,
    pub enforce_thumbnail: bool,
    /// 0 = use `format_quality`, then the server default.
    pub quality: u8,
    pub format_quality: BTreeMap<Format, u8>,
    pub max_bytes: u64,
    pub format: Option<Format>,
    /// Set by `Accept` negotiation, never by the URL (so not part of the canonical form,
    /// the negotiation decision is in the cache key): `Some` when `format` was negotiated,
    /// holding the format for an animated result (`None` inside: the source's default).
    pub animated_format: Option<Option<Format>>,
    pub skip_processing: Vec<Format>,
    pub raw: bool,
    pub cachebuster: String,
    pub expires: Option<i64>,
    pub filename: Option<String>,
    pub return_attachment: bool,
    pub security: SecurityOverrides,
    pub crop_aspect_ratio: Option<(f64, bool)>,
    pub brightness: i32,
    pub contrast: f64,
    pub saturation: f64,
    pub monochrome: Option<Monochrome>,
    pub background_alpha: f64,
    pub autoquality: Option<AutoQuality>,
}

impl Default for Options {
    /// imgproxy's built-in defaults (before any server configuration).
    fn default() -> Self {
        Options {
            resizing_type: ResizingType::Fit,
            width: 0,
            height: 0,
            min_width: 0,
            min_height: 0,
            zoom_x: 1.0,
            zoom_y: 1.0,
            dpr: 1.0,
            enlarge: false,
            extend: Extend::default(),
            extend_aspect_ratio: Extend::default(),
            gravity: Gravity::default(),
            crop: None,
            trim: None,
            padding: Padding::default(),
            auto_rotate: true,
            rotate: 0,
            flip_horizontal: false,
            flip_vertical: false,
            background: None,
            blur: 0.0,
            sharpen: 0.0,
            pixelate: 0,
            watermark: None,
            strip_metadata: true,
            keep_copyright: true,
            strip_color_profile: true,
            enforce_thumbnail: false,
            quality: 0,
            format_quality: BTreeMap::new(),
            max_bytes: 0,
            format: None,
            animated_format: None,
            skip_processing: Vec::new(),
            raw: false,
            cachebuster: String::new(),
            expires: None,
            filename: None,
            return_attachment: false,
            security: SecurityOverrides::default(),
            crop_aspect_ratio: None,
            brightness: 0,
            contrast: 1.0,
            saturation: 1.0,
            monochrome: None,
            background_alpha: 1.0,
            autoquality: None,
        }
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
    match name {
        "resize" | "rs" => {
            max_args(name, args, 8)?;
            if let Some(t) = args.first().filter(|a| !a.is_empty()) {
                o.resizing_type = ResizingType::parse(t)
                    .ok_or_else(|| invalid(name, format!("unknown resizing type `{t}`")))?;
            }
            if args.len() > 1 {
                apply_size(o, name, &args[1..])?;
            }
        }
        "size" | "s" => apply_size(o, name, args)?,
        "resizing_type" | "rt" => {
            let t = exactly_one(name, args)?;
            o.resizing_type = ResizingType::parse(t)
                .ok_or_else(|| invalid(name, format!("unknown resizing type `{t}`")))?;
        }
        "width" | "w" => o.width = parse_dimension(name, exactly_one(name, args)?)?,
        "height" | "h" => o.height = parse_dimension(name, exactly_one(name, args)?)?,
        "min-width" | "mw" => o.min_width = parse_dimension(name, exactly_one(name, args)?)?,
        "min-height" | "mh" => o.min_height = parse_dimension(name, exactly_one(name, args)?)?,
        "zoom" | "z" => {
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
        }
        "dpr" => {
            let d = parse_float(name, exactly_one(name, args)?)?;
            if d <= 0.0 {
                return Err(invalid(name, "dpr must be > 0"));
            }
            o.dpr = d;
        }
        "enlarge" | "el" => o.enlarge = parse_bool(exactly_one(name, args)?),
        "extend" | "ex" => o.extend = parse_extend(name, args)?,
        "extend_aspect_ratio" | "extend_ar" | "exar" => {
            o.extend_aspect_ratio = parse_extend(name, args)?
        }
        "gravity" | "g" => o.gravity = parse_gravity(name, args, GravityUse::Main)?,
        "crop" | "c" => {
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
        }
        "trim" | "t" => {
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
        }
        "padding" | "pd" => {
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
        }
        "auto_rotate" | "ar" => o.auto_rotate = parse_bool(exactly_one(name, args)?),
        "rotate" | "rot" => {
            let r: i64 = parse_int(name, exactly_one(name, args)?)?;
            if r % 90 != 0 {
                return Err(invalid(name, "rotation must be a multiple of 90"));
            }
            o.rotate = r.rem_euclid(360) as u16;
        }
        "flip" | "fl" => {
            max_args(name, args, 2)?;
            if let Some(h) = args.first().filter(|a| !a.is_empty()) {
                o.flip_horizontal = parse_bool(h);
            }
            if let Some(v) = args.get(1).filter(|a| !a.is_empty()) {
                o.flip_vertical = parse_bool(v);
            }
        }
        "background" | "bg" => {
            if args.len() == 1 && args[0].is_empty() {
                o.background = None;
            } else {
                o.background = Some(parse_color_args(name, args)?);
            }
        }
        // imgproxy takes any sigma ≥ 0; past these the result no longer changes visibly (a
        // blur of 1000 px is the image's edge-weighted mean on any result pixgate makes),
        // so larger values mean these and share their cache entry.
        "blur" | "bl" => o.blur = non_negative_float(name, args)?.min(MAX_BLUR_SIGMA),
        "sharpen" | "sh" => o.sharpen = non_negative_float(name, args)?.min(MAX_SHARPEN_SIGMA),
        "pixelate" | "pix" => o.pixelate = parse_dimension(name, exactly_one(name, args)?)?,
        "watermark" | "wm" => {
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
        }
        "strip_metadata" | "sm" => o.strip_metadata = parse_bool(exactly_one(name, args)?),
        "keep_copyright" | "kcr" => o.keep_copyright = parse_bool(exactly_one(name, args)?),
        "strip_color_profile" | "scp" => {
            o.strip_color_profile = parse_bool(exactly_one(name, args)?)
        }
        "enforce_thumbnail" | "eth" => o.enforce_thumbnail = parse_bool(exactly_one(name, args)?),
        "quality" | "q" => o.quality = parse_quality(name, exactly_one(name, args)?)?,
        "format_quality" | "fq" => {
            if args.is_empty() || args.len() % 2 != 0 {
                return Err(invalid(name, "pairs of format and quality"));
            }
            for pair in args.chunks(2) {
                let f = parse_format(name, &pair[0])?;
                let q = parse_quality(name, &pair[1])?;
                o.format_quality.insert(f, q);
            }
        }
        "max_bytes" | "mb" => {
            let v: i64 = parse_int(name, exactly_one(name, args)?)?;
            o.max_bytes = u64::try_from(v).map_err(|_| invalid(name, "must be ≥ 0"))?;
        }
        "format" | "f" | "ext" => {
            let f = exactly_one(name, args)?;
            o.format = if f.is_empty() {
                None
            } else {
                Some(parse_format(name, f)?)
            };
        }
        "skip_processing" | "skp" => {
            let mut list = Vec::new();
            for a in args {
                list.push(parse_format(name, a)?);
            }
            list.sort();
            list.dedup();
            o.skip_processing = list;
        }
        "raw" => o.raw = parse_bool(exactly_one(name, args)?),
        "cachebuster" | "cb" => o.cachebuster = exactly_one(name, args)?.to_string(),
        "expires" | "exp" => {
            let t: i64 = parse_int(name, exactly_one(name, args)?)?;
            if t > 0 && t < ctx.now_unix {
                return Err(OptionsError::Expired);
            }
            o.expires = (t > 0).then_some(t);
        }
        "filename" | "fn" => {
            max_args(name, args, 2)?;
            let mut n = args[0].clone();
            if args.get(1).is_some_and(|e| parse_bool(e)) {
                let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(n.trim_end_matches('='))
                    .map_err(|_| invalid(name, "filename is not base64url"))?;
                n = String::from_utf8(bytes).map_err(|_| invalid(name, "filename is not UTF-8"))?;
            }
            o.filename = (!n.is_empty()).then_some(n);
        }
        "return_attachment" | "att" => o.return_attachment = parse_bool(exactly_one(name, args)?),
        "preset" | "pr" => {
            for p in args {
                apply_preset(o, p, ctx, stack)?;
            }
        }
        "max_src_resolution" | "msr" => {
            let v = security(name, ctx, positive_float(name, args))?;
            o.security.max_src_resolution = Some(v);
        }
        "max_src_file_size" | "msfs" => {
            let v = security(
                name,
                ctx,
                exactly_one(name, args).and_then(|a| parse_int(name, a)),
            )?;
            o.security.max_src_file_size = Some(v);
        }
        "max_animation_frames" | "maf" => {
            let v: u32 = security(
                name,
                ctx,
                exactly_one(name, args).and_then(|a| parse_int(name, a)),
            )?;
            if v == 0 {
                return Err(invalid(name, "must be > 0"));
            }
            o.security.max_animation_frames = Some(v);
        }
        "max_animation_frame_resolution" | "mafr" => {
            let v = security(name, ctx, non_negative_float(name, args))?;
            o.security.max_animation_frame_resolution = Some(v);
        }
        "max_result_dimension" | "mrd" => {
            let v = security(
                name,
                ctx,
                exactly_one(name, args).and_then(|a| parse_dimension(name, a)),
            )?;
            o.security.max_result_dimension = Some(v);
        }
        "crop_aspect_ratio" | "crop_ar" | "car" => {
            max_args(name, args, 2)?;
            let ar = parse_float(name, &args[0])?;
            if ar < 0.0 {
                return Err(invalid(name, "aspect ratio must be ≥ 0"));
            }
            let enlarge = args.get(1).is_some_and(|e| parse_bool(e));
            o.crop_aspect_ratio = (ar > 0.0).then_some((ar, enlarge));
        }
        "adjust" | "a" => {
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
        }
        "brightness" | "br" => o.brightness = parse_brightness(name, exactly_one(name, args)?)?,
        "contrast" | "co" => o.contrast = non_negative_float(name, args)?,
        "saturation" | "sa" => o.saturation = non_negative_float(name, args)?,
        "monochrome" | "mc" => {
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
        }
        "background_alpha" | "bga" => {
            let a = parse_float(name, exactly_one(name, args)?)?;
            if !(0.0..=1.0).contains(&a) {
                return Err(invalid(name, "alpha must be within [0, 1]"));
            }
            o.background_alpha = a;
        }
        "autoquality" | "aq" => {
            max_args(name, args, 5)?;
            let method = args[0].clone();
            if !matches!(method.as_str(), "none" | "size" | "dssim" | "ml") {
                return Err(invalid(name, format!("unknown method `{method}`")));
            }
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
            if aq.method == "size" && aq.target.is_none_or(|t| t < 1.0) {
                return Err(invalid(name, "method `size` needs a target in bytes"));
            }
            if aq.target.is_some_and(|t| t < 0.0) {
                return Err(invalid(name, "target must be ≥ 0"));
            }
            // `aq:none` is kept: it turns a server default off.
            o.autoquality = Some(aq);
        }
        _ => return Err(OptionsError::Unknown(name.to_string())),
    }
    Ok(())
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
                self.autoquality.as_ref().is_some_and(|a| a.method == "ml"),
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
        let mut push = |s: String| parts.push(s);
        if self.resizing_type != d.resizing_type {
            push(format!("rt:{}", self.resizing_type.name()));
        }
        if self.width != 0 {
            push(format!("w:{}", self.width));
        }
        if self.height != 0 {
            push(format!("h:{}", self.height));
        }
        if self.min_width != 0 {
            push(format!("mw:{}", self.min_width));
        }
        if self.min_height != 0 {
            push(format!("mh:{}", self.min_height));
        }
        if self.zoom_x != 1.0 || self.zoom_y != 1.0 {
            push(format!("z:{}:{}", fmt_f(self.zoom_x), fmt_f(self.zoom_y)));
        }
        if self.dpr != 1.0 {
            push(format!("dpr:{}", fmt_f(self.dpr)));
        }
        if self.enlarge {
            push("el:1".into());
        }
        for (name, e) in [("ex", &self.extend), ("exar", &self.extend_aspect_ratio)] {
            if e.enabled {
                let mut s = format!("{name}:1:");
                e.gravity.canonical(&mut s);
                push(s);
            }
        }
        if self.gravity != d.gravity {
            let mut s = "g:".to_string();
            self.gravity.canonical(&mut s);
            push(s);
        }
        if let Some(c) = &self.crop {
            let mut s = format!("c:{}:{}", fmt_f(c.width), fmt_f(c.height));
            if let Some(g) = &c.gravity {
                s.push(':');
                g.canonical(&mut s);
            }
            push(s);
        }
        if let Some(t) = &self.trim {
            push(format!(
                "t:{}:{}:{}:{}",
                fmt_f(t.threshold),
                t.color.map(|c| c.hex()).unwrap_or_default(),
                b(t.equal_hor),
                b(t.equal_ver)
            ));
        }
        if !self.padding.is_zero() {
            let p = self.padding;
            push(format!("pd:{}:{}:{}:{}", p.top, p.right, p.bottom, p.left));
        }
        if self.auto_rotate != d.auto_rotate {
            push(format!("ar:{}", b(self.auto_rotate)));
        }
        if self.rotate != 0 {
            push(format!("rot:{}", self.rotate));
        }
        if self.flip_horizontal || self.flip_vertical {
            push(format!(
                "fl:{}:{}",
                b(self.flip_horizontal),
                b(self.flip_vertical)
            ));
        }
        if let Some(c) = self.background {
            push(format!("bg:{}", c.hex()));
        }
        if self.blur != 0.0 {
            push(format!("bl:{}", fmt_f(self.blur)));
        }
        if self.sharpen != 0.0 {
            push(format!("sh:{}", fmt_f(self.sharpen)));
        }
        if self.pixelate != 0 {
            push(format!("pix:{}", self.pixelate));
        }
        if let Some(w) = &self.watermark {
            push(format!(
                "wm:{}:{}:{}:{}:{}",
                fmt_f(w.opacity),
                w.position.name(),
                fmt_f(w.x),
                fmt_f(w.y),
                fmt_f(w.scale)
            ));
        }
        if self.strip_metadata != d.strip_metadata {
            push(format!("sm:{}", b(self.strip_metadata)));
        }
        if self.keep_copyright != d.keep_copyright {
            push(format!("kcr:{}", b(self.keep_copyright)));
        }
        if self.strip_color_profile != d.strip_color_profile {
            push(format!("scp:{}", b(self.strip_color_profile)));
        }
        if self.enforce_thumbnail {
            push("eth:1".into());
        }
        if self.quality != 0 {
            push(format!("q:{}", self.quality));
        }
        if !self.format_quality.is_empty() {
            let mut s = "fq".to_string();
            for (f, q) in &self.format_quality {
                let _ = write!(s, ":{f}:{q}");
            }
            push(s);
        }
        if self.max_bytes != 0 {
            push(format!("mb:{}", self.max_bytes));
        }
        if let Some(f) = self.format {
            push(format!("f:{f}"));
        }
        if !self.skip_processing.is_empty() {
            let list: Vec<&str> = self.skip_processing.iter().map(|f| f.ext()).collect();
            push(format!("skp:{}", list.join(":")));
        }
        if self.raw {
            push("raw:1".into());
        }
        if !self.cachebuster.is_empty() {
            push(format!("cb:{}", self.cachebuster));
        }
        if let Some(e) = self.expires {
            push(format!("exp:{e}"));
        }
        if let Some(n) = &self.filename {
            // Encoded so that `:` and `/` in a name cannot break the canonical grammar.
            let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(n.as_bytes());
            push(format!("fn:{enc}:1"));
        }
        if self.return_attachment {
            push("att:1".into());
        }
        let s = &self.security;
        if let Some(v) = s.max_src_resolution {
            push(format!("msr:{}", fmt_f(v)));
        }
        if let Some(v) = s.max_src_file_size {
            push(format!("msfs:{v}"));
        }
        if let Some(v) = s.max_animation_frames {
            push(format!("maf:{v}"));
        }
        if let Some(v) = s.max_animation_frame_resolution {
            push(format!("mafr:{}", fmt_f(v)));
        }
        if let Some(v) = s.max_result_dimension {
            push(format!("mrd:{v}"));
        }
        if let Some((ar, el)) = self.crop_aspect_ratio {
            push(format!("car:{}:{}", fmt_f(ar), b(el)));
        }
        if self.brightness != 0 || self.contrast != 1.0 || self.saturation != 1.0 {
            push(format!(
                "a:{}:{}:{}",
                self.brightness,
                fmt_f(self.contrast),
                fmt_f(self.saturation)
            ));
        }
        if let Some(m) = &self.monochrome {
            push(format!("mc:{}:{}", fmt_f(m.intensity), m.color.hex()));
        }
        if self.background_alpha != 1.0 {
            push(format!("bga:{}", fmt_f(self.background_alpha)));
        }
        if let Some(aq) = &self.autoquality {
            let o = |v: Option<f64>| v.map(fmt_f).unwrap_or_default();
            let q = |v: Option<u8>| v.map(|v| v.to_string()).unwrap_or_default();
            push(format!(
                "aq:{}:{}:{}:{}:{}",
                aq.method,
                o(aq.target),
                q(aq.min_quality),
                q(aq.max_quality),
                o(aq.allowed_error)
            ));
        }
        parts.join("/")
    }
}

#[cfg(test)]
#[path = "options_tests.rs"]
mod tests;
