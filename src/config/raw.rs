//! The configuration as written (TOML file, environment, flags), with the server's defaults:
//! every field optional in the file, each documented with its unit. Sizes may also be written
//! with units (`256MB` = 256·10⁶, `1GiB` = 2³⁰ bytes), durations too (`30s`, `500ms`, `1h`). The engine's own defaults
//! (qualities, limits) come from `EngineConfig::default`, so the CLI, the benches and the
//! server cannot drift apart.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::pixels::EngineConfig;

/// One signing key/salt pair (hex in the file), naming the tenant it authenticates.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    pub tenant: String,
    pub key: String,
    pub salt: String,
}

/// The configuration as written: every field optional in the file, defaults from `Default`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    /// `address:port` of the API listener; port 0 picks a free port.
    #[serde(deserialize_with = "string_like")]
    pub listen: String,
    /// Simultaneous client connections; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Simultaneous connections from one client address (trusted proxies are exempt);
    /// more are closed at once. 0 = no per-address cap.
    pub max_connections_per_ip: usize,
    /// Seconds a connection may stay open with no request in flight, a new one included
    /// (one that never sends a request is closed after this).
    #[serde(deserialize_with = "seconds")]
    pub keep_alive_timeout: f64,
    /// Seconds a client may take to send its request headers.
    #[serde(deserialize_with = "seconds")]
    pub header_read_timeout: f64,
    /// Seconds a whole request may take, queue wait included (503 after).
    #[serde(deserialize_with = "seconds")]
    pub request_timeout: f64,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    #[serde(deserialize_with = "seconds")]
    pub shutdown_timeout: f64,
    /// Pixel jobs run at once; 0 = the number of CPU cores.
    pub workers: usize,
    /// Pixel jobs waiting for a worker; beyond this, 503 with Retry-After.
    pub queue_size: usize,
    /// Bytes of pixel buffers all running jobs may hold together, by each job's estimate
    /// from its plan; jobs wait (in the queue, up to their deadline) for room.
    #[serde(deserialize_with = "size")]
    pub memory_budget: u64,
    /// A level (`info`) or a tracing filter (`pixgate=debug,hyper=warn`).
    #[serde(deserialize_with = "string_like")]
    pub log_level: String,
    /// `text` or `json`.
    #[serde(deserialize_with = "string_like")]
    pub log_format: String,

    /// Signing pairs; empty = signing off (any signature accepted, `insecure` by convention).
    pub keys: Vec<RawKey>,
    /// Bytes of the HMAC kept in signatures, 1..=32 (imgproxy's `SIGNATURE_SIZE`).
    pub signature_size: usize,
    /// Signatures accepted without checking (imgproxy's `TRUSTED_SIGNATURES`).
    #[serde(deserialize_with = "string_or_list")]
    pub trusted_signatures: Vec<String>,
    /// Named option strings usable as `pr:NAME`; `default` applies to every URL.
    pub presets: BTreeMap<String, String>,
    /// Refuse option strings that are not presets (imgproxy's `ONLY_PRESETS`).
    pub only_presets: bool,
    /// Let URLs set the security options (`msr`, `msfs`, `maf`, `mafr`).
    pub allow_security_options: bool,
    /// Error bodies give the specific reason (`unknown preset `nope``) instead of the
    /// public message (imgproxy's `DEVELOPMENT_ERRORS_MODE`). The reason may name paths and
    /// addresses: not for the internet.
    pub development_errors: bool,

    /// Directory behind `local:///`; empty = the bundled sample images, looked for beside
    /// the binary, in `../share/pixgate/samples`, `/usr/share/pixgate/samples`, the checkout
    /// and the working directory (README, "Configuration").
    #[serde(deserialize_with = "string_like")]
    pub local_root: String,
    /// Prefix patterns a source URL must match (`*` matches within a path segment); empty = any.
    #[serde(deserialize_with = "string_or_list")]
    pub allowed_sources: Vec<String>,
    /// Let sources resolve to loopback addresses (127.0.0.0/8, ::1).
    pub allow_loopback_sources: bool,
    /// Let sources resolve to private addresses (RFC 1918, fc00::/7, CGNAT).
    pub allow_private_sources: bool,
    /// Let sources resolve to link-local addresses (169.254.0.0/16 — cloud metadata — and
    /// fe80::/10).
    pub allow_link_local_sources: bool,
    /// CIDR blocks reachable despite the address classes above (an internal origin).
    #[serde(deserialize_with = "string_or_list")]
    pub allowed_source_networks: Vec<String>,
    /// Seconds for the whole source download.
    #[serde(deserialize_with = "seconds")]
    pub download_timeout: f64,
    /// Largest source in bytes, enforced while streaming; 0 = no limit.
    #[serde(deserialize_with = "size")]
    pub max_src_file_size: u64,
    /// Redirects followed per source fetch (each target checked like the first URL).
    pub max_redirects: usize,
    /// `User-Agent` of source fetches.
    #[serde(deserialize_with = "string_like")]
    pub user_agent: String,

    /// Largest source in megapixels (width × height × frames processed), from the header.
    pub max_src_resolution: f64,
    /// Animated results with more frames are refused; 1 = first frame only.
    pub max_animation_frames: u32,
    /// Per-frame megapixel cap of animations; 0 = `max_src_resolution`.
    pub max_animation_frame_resolution: f64,
    /// Largest side of a result in pixels; 0 = only the output format's own maximum.
    pub max_result_dimension: u32,
    /// Largest result in megapixels.
    pub max_result_resolution: f64,
    /// Default quality, 1..=100, when neither `q` nor `format_quality` says.
    pub quality: u8,
    /// Default quality per output format (`webp = 79`), 1..=100.
    pub format_quality: BTreeMap<String, u8>,
    /// `small` (mozjpeg trellis) or `fast`.
    #[serde(deserialize_with = "string_like")]
    pub jpeg_mode: String,
    /// Progressive JPEG by default (`jp` overrides).
    pub jpeg_progressive: bool,
    /// Lossless WebP by default.
    pub webp_lossless: bool,
    /// libwebp method, 0 (fast) ..= 6 (smallest).
    pub webp_effort: u8,
    /// libaom speed for AVIF, 0 (slow, smallest) ..= 10 (fastest).
    pub avif_speed: u8,
    /// The image `wm` draws: a file, base64 image data, or a URL fetched once at start
    /// (through the same origin rules as sources). At most one of the three.
    #[serde(deserialize_with = "string_like")]
    pub watermark_path: String,
    /// Base64 image data of the watermark.
    #[serde(deserialize_with = "string_like")]
    pub watermark_data: String,
    /// URL of the watermark, fetched once at start.
    #[serde(deserialize_with = "string_like")]
    pub watermark_url: String,
    /// Bytes of `/upload` bodies held in memory at once (uploads over it: 503).
    #[serde(deserialize_with = "size")]
    pub upload_buffer_size: u64,
    /// Multiplies every `wm` opacity (0..=1).
    pub watermark_opacity: f64,
    /// `autoquality` when the URL has none: `none`, `dssim` (the default target below) or
    /// `size` (needs the URL's target, so not useful as a default).
    #[serde(deserialize_with = "string_like")]
    pub autoquality_method: String,
    /// DSSIM target of `aq:dssim` (0 = identical; 0.02 looks like the original).
    pub autoquality_target: f64,
    /// Lowest quality the autoquality search tries, 1..=100.
    pub autoquality_min_quality: u8,
    /// Highest quality the autoquality search tries, 1..=100.
    pub autoquality_max_quality: u8,
    /// The DSSIM search stops once within this of the target (below it).
    pub autoquality_allowed_error: f64,
    /// Rotate by the EXIF orientation unless the URL says `ar:0`.
    pub auto_rotate: bool,
    /// Drop EXIF/XMP/IPTC unless the URL says `sm:0`.
    pub strip_metadata: bool,
    /// Keep the copyright fields when stripping.
    pub keep_copyright: bool,
    /// Convert to sRGB and drop the ICC profile unless the URL says `scp:0`.
    pub strip_color_profile: bool,
    /// `Content-Disposition: attachment` unless the URL says `att:0`.
    pub return_attachment: bool,
    /// `Cache-Control: max-age` in seconds; 0 sends `no-cache`.
    #[serde(deserialize_with = "whole_seconds")]
    pub ttl: u64,

    /// Result cache capacity in bytes of encoded images.
    #[serde(deserialize_with = "size")]
    pub cache_size: u64,
    /// Seconds a result stays cached.
    #[serde(deserialize_with = "seconds")]
    pub cache_ttl: f64,
    /// Seconds a result stays cached without being requested.
    #[serde(deserialize_with = "seconds")]
    pub cache_tti: f64,
    /// Results larger than this fraction of `cache_size` are served but not cached.
    pub cache_max_entry_fraction: f64,
    /// Source cache capacity in bytes (fetched originals; the srcset pattern fetches once).
    #[serde(deserialize_with = "size")]
    pub source_cache_size: u64,
    /// Seconds a source stays cached; at most 3600 (sources are customer data).
    #[serde(deserialize_with = "seconds")]
    pub source_cache_ttl: f64,
    /// With no format in the URL, pick WebP (AVIF once it can be written) when `Accept`
    /// allows, and answer `Vary: Accept`.
    pub auto_format: bool,
    /// imgproxy's ENFORCE_*: negotiate from `Accept` even when the URL names a format.
    pub enforce_format: bool,
    /// The Lua policy. Unset: `lua/policy.lua` when it exists, else no policy (everything
    /// allowed, said at start). Empty string: no policy. A path that does not exist is an error.
    pub policy_file: Option<String>,
    /// Where `/metrics` is served (its own listener, so it is never exposed with the API);
    /// empty: no metrics listener.
    pub metrics_listen: String,
    /// `allow` or `deny` a request when `decide` fails at run time.
    #[serde(deserialize_with = "string_like")]
    pub policy_on_error: String,
    /// Memory cap of one policy VM, bytes.
    #[serde(deserialize_with = "size")]
    pub policy_memory_limit: u64,
    /// Lua instructions one `decide` call may run.
    pub policy_max_instructions: u64,
    /// Seconds one `decide` call may take (a script's top level gets 100 times this).
    #[serde(deserialize_with = "seconds")]
    pub policy_timeout: f64,
    /// Threads running `decide`, off the async runtime; 0 = the number of cores.
    pub policy_threads: usize,
    /// With `policy_on_error = "allow"`: requests a second each API key (or client address)
    /// gets while `decide` fails; 0 = unlimited (not recommended: a typo would lift every
    /// limit).
    pub policy_error_rate: f64,
    /// Rate-limit buckets held at once (refilled buckets are swept and cost nothing).
    pub policy_max_buckets: usize,
    /// Proxies (addresses or CIDR blocks) whose `X-Forwarded-For`/`X-Real-IP` are believed.
    #[serde(deserialize_with = "string_or_list")]
    pub trusted_proxies: Vec<String>,
}

impl Default for RawConfig {
    fn default() -> Self {
        let e = EngineConfig::default();
        RawConfig {
            listen: "127.0.0.1:8080".into(),
            max_connections: 2048,
            max_connections_per_ip: 128,
            keep_alive_timeout: 10.0,
            header_read_timeout: 10.0,
            request_timeout: 10.0,
            shutdown_timeout: 20.0,
            workers: 0,
            queue_size: 64,
            memory_budget: 2 << 30,
            log_level: "info".into(),
            log_format: "text".into(),
            keys: Vec::new(),
            signature_size: 32,
            trusted_signatures: Vec::new(),
            presets: BTreeMap::new(),
            only_presets: false,
            allow_security_options: false,
            development_errors: false,
            local_root: String::new(),
            allowed_sources: Vec::new(),
            allow_loopback_sources: false,
            allow_private_sources: false,
            allow_link_local_sources: false,
            allowed_source_networks: Vec::new(),
            download_timeout: 5.0,
            max_src_file_size: 50 * 1024 * 1024,
            max_redirects: 10,
            user_agent: format!("pixgate/{}", env!("CARGO_PKG_VERSION")),
            max_src_resolution: e.max_src_resolution,
            max_animation_frames: e.max_animation_frames,
            max_animation_frame_resolution: e.max_animation_frame_resolution.unwrap_or_default(),
            max_result_dimension: e.max_result_dimension.unwrap_or_default(),
            max_result_resolution: e.max_result_resolution,
            quality: e.quality,
            format_quality: e
                .format_quality
                .iter()
                .map(|(f, q)| (f.ext().to_string(), *q))
                .collect(),
            jpeg_mode: "small".into(),
            jpeg_progressive: e.encoder.jpeg_progressive,
            webp_lossless: e.encoder.webp_mode == crate::pixels::WebpMode::Lossless,
            webp_effort: e.encoder.webp_effort,
            avif_speed: e.encoder.avif_speed,
            watermark_path: String::new(),
            watermark_data: String::new(),
            watermark_url: String::new(),
            watermark_opacity: e.watermark_opacity,
            upload_buffer_size: 256 * 1024 * 1024,
            autoquality_method: e.autoquality.method.name().into(),
            autoquality_target: e.autoquality.target,
            autoquality_min_quality: e.autoquality.min_quality,
            autoquality_max_quality: e.autoquality.max_quality,
            autoquality_allowed_error: e.autoquality.allowed_error,
            auto_rotate: true,
            strip_metadata: true,
            keep_copyright: true,
            strip_color_profile: true,
            return_attachment: false,
            ttl: 31_536_000,
            cache_size: 256 * 1024 * 1024,
            cache_ttl: 86_400.0,
            cache_tti: 3_600.0,
            cache_max_entry_fraction: 0.05,
            source_cache_size: 128 * 1024 * 1024,
            source_cache_ttl: 3_600.0,
            auto_format: true,
            enforce_format: false,
            policy_file: None,
            metrics_listen: "127.0.0.1:9464".into(),
            policy_on_error: "allow".into(),
            policy_memory_limit: 64 * 1024 * 1024,
            policy_max_instructions: 200_000,
            policy_timeout: 0.05,
            policy_threads: 0,
            policy_error_rate: 10.0,
            policy_max_buckets: 1_000_000,
            trusted_proxies: Vec::new(),
        }
    }
}

impl RawConfig {
    /// The directory behind `local:///` as written; empty means the bundled samples where
    /// they are found (`None`: nowhere).
    pub(super) fn local_root_path(&self) -> Option<std::path::PathBuf> {
        if self.local_root.is_empty() {
            super::bundled_samples()
        } else {
            Some(std::path::PathBuf::from(&self.local_root))
        }
    }
}

/// Accepts a string, or a number/bool written where a string was meant (env values).
fn string_like<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Int(i64),
        Float(f64),
        Bool(bool),
    }
    Ok(match Scalar::deserialize(d)? {
        Scalar::Text(s) => s,
        Scalar::Int(i) => i.to_string(),
        Scalar::Float(f) => f.to_string(),
        Scalar::Bool(b) => b.to_string(),
    })
}

/// Accepts a list, or one comma-separated string (env values).
fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum L {
        L(Vec<String>),
        S(String),
    }
    Ok(match L::deserialize(d)? {
        L::L(v) => v,
        L::S(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

/// A number or a string, as written, for the fields that take units.
enum Written {
    Int(i128),
    Float(f64),
    Text(String),
}

impl<'de> Deserialize<'de> for Written {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Written;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number, or a string with a unit")
            }
            fn visit_i64<E>(self, v: i64) -> Result<Written, E> {
                Ok(Written::Int(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Written, E> {
                Ok(Written::Int(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Written, E> {
                Ok(Written::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Written, E> {
                Ok(Written::Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Bytes: a plain number, or a number with a unit as `bytesize` reads it (`256MB` is
/// 256·10⁶, `256MiB` 256·2²⁰, case-insensitive, a space allowed).
fn size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let bad = |t: &dyn std::fmt::Display| {
        serde::de::Error::custom(format!(
            "`{t}` is not a size (a whole number of bytes, or with a unit: 256MB, 1GiB)"
        ))
    };
    match Written::deserialize(d)? {
        Written::Int(n) => u64::try_from(n).map_err(|_| bad(&n)),
        Written::Float(f) if f >= 0.0 && f.fract() == 0.0 && f < 1.8e19 => Ok(f as u64),
        Written::Float(f) => Err(bad(&f)),
        Written::Text(t) => t
            .trim()
            .parse::<bytesize::ByteSize>()
            .map(|b| b.as_u64())
            .map_err(|_| bad(&t)),
    }
}

/// Seconds: a plain number (fractions allowed), or a duration as `humantime` reads it
/// (`30s`, `500ms`, `1h 30m`).
fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    match Written::deserialize(d)? {
        Written::Int(n) => Ok(n as f64),
        Written::Float(f) => Ok(f),
        Written::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
    }
}

/// Whole seconds (`ttl`): a plain number or a duration (`1d`, `365days`).
fn whole_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let secs = match Written::deserialize(d)? {
        Written::Int(n) => n as f64,
        Written::Float(f) => f,
        Written::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom)?,
    };
    if secs >= 0.0 && secs.fract() == 0.0 && secs < 1.8e19 {
        Ok(secs as u64)
    } else {
        Err(serde::de::Error::custom(format!(
            "{secs} is not a whole number of seconds"
        )))
    }
}

fn parse_duration(t: &str) -> Result<f64, String> {
    let t = t.trim();
    t.parse::<f64>()
        .ok()
        .filter(|n| n.is_finite())
        .or_else(|| humantime::parse_duration(t).ok().map(|d| d.as_secs_f64()))
        .ok_or_else(|| format!("`{t}` is not a duration (seconds, or with a unit: 30s, 500ms, 1h)"))
}

/// Every key the file may set, in declaration order (serde's own list, so it cannot drift
/// from the struct).
pub fn known_keys() -> &'static [&'static str] {
    use serde::de::{self, Visitor};
    struct Grab<'a>(&'a mut &'static [&'static str]);
    impl<'de> Deserializer<'de> for Grab<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("fields taken"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    static KEYS: std::sync::OnceLock<&'static [&'static str]> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let mut fields: &'static [&'static str] = &[];
        let _ = RawConfig::deserialize(Grab(&mut fields));
        fields
    })
}
