//! Configuration: a TOML file, `PIXGATE_<KEY>` environment overrides, imgproxy's
//! `IMGPROXY_KEY`/`IMGPROXY_SALT`/`IMGPROXY_SIGNATURE_SIZE`, then CLI flags — raw values in
//! [`RawConfig`], checked all at once into a typed [`Config`]. Defaults serve the bundled
//! sample images on 127.0.0.1:8080 with signing off. Every resource bound is a field here.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::format::Format;
use crate::pixels::{EncoderConfig, EngineConfig, JpegMode, WebpMode};
use crate::policy::{OnError, PolicySettings, VmLimits};
use crate::request::options::{Options, Presets};

/// One signing key/salt pair (hex in the file), naming the tenant it authenticates.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    pub tenant: String,
    pub key: String,
    pub salt: String,
}

/// The configuration as written: every field optional in the file, defaults from `Default`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    #[serde(deserialize_with = "string_like")]
    pub listen: String,
    /// Simultaneous client connections; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Simultaneous connections from one client address (trusted proxies are exempt);
    /// more are closed at once. 0 = no per-address cap.
    pub max_connections_per_ip: usize,
    /// Seconds a connection may stay open with no request in flight, a new one included
    /// (one that never sends a request is closed after this).
    pub keep_alive_timeout: f64,
    /// Seconds a client may take to send its request headers.
    pub header_read_timeout: f64,
    /// Seconds a whole request may take, queue wait included (503 after).
    pub request_timeout: f64,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    pub shutdown_timeout: f64,
    /// Pixel jobs run at once; 0 = the number of CPU cores.
    pub workers: usize,
    /// Pixel jobs waiting for a worker; beyond this, 503 with Retry-After.
    pub queue_size: usize,
    /// Bytes of pixel buffers all running jobs may hold together, by each job's estimate
    /// from its plan; jobs wait (in the queue, up to their deadline) for room.
    pub memory_budget: u64,
    #[serde(deserialize_with = "string_like")]
    pub log_level: String,
    /// `text` or `json`.
    #[serde(deserialize_with = "string_like")]
    pub log_format: String,

    /// Signing pairs; empty = signing off (any signature accepted, `insecure` by convention).
    pub keys: Vec<RawKey>,
    pub signature_size: usize,
    #[serde(deserialize_with = "string_or_list")]
    pub trusted_signatures: Vec<String>,
    pub presets: BTreeMap<String, String>,
    pub only_presets: bool,
    pub allow_security_options: bool,

    /// Directory behind `local:///`; empty = the bundled sample images.
    #[serde(deserialize_with = "string_like")]
    pub local_root: String,
    /// Prefix patterns a source URL must match (`*` matches within a path segment); empty = any.
    #[serde(deserialize_with = "string_or_list")]
    pub allowed_sources: Vec<String>,
    pub allow_loopback_sources: bool,
    pub allow_private_sources: bool,
    pub allow_link_local_sources: bool,
    /// CIDR blocks reachable despite the address classes above (an internal origin).
    #[serde(deserialize_with = "string_or_list")]
    pub allowed_source_networks: Vec<String>,
    /// Seconds for the whole source download.
    pub download_timeout: f64,
    /// Bytes; enforced while streaming.
    pub max_src_file_size: u64,
    pub max_redirects: usize,
    #[serde(deserialize_with = "string_like")]
    pub user_agent: String,

    pub max_src_resolution: f64,
    /// Animated results with more frames are refused; 1 = first frame only.
    pub max_animation_frames: u32,
    /// Per-frame megapixel cap of animations; 0 = `max_src_resolution`.
    pub max_animation_frame_resolution: f64,
    pub max_result_dimension: u32,
    pub max_result_resolution: f64,
    pub quality: u8,
    pub format_quality: BTreeMap<String, u8>,
    /// `small` (mozjpeg trellis) or `fast`.
    #[serde(deserialize_with = "string_like")]
    pub jpeg_mode: String,
    pub jpeg_progressive: bool,
    pub webp_lossless: bool,
    pub webp_effort: u8,
    /// libaom speed for AVIF, 0 (slow, smallest) ..= 10 (fastest).
    pub avif_speed: u8,
    /// The image `wm` draws: a file, base64 image data, or a URL fetched once at start
    /// (through the same origin rules as sources). At most one of the three.
    #[serde(deserialize_with = "string_like")]
    pub watermark_path: String,
    #[serde(deserialize_with = "string_like")]
    pub watermark_data: String,
    #[serde(deserialize_with = "string_like")]
    pub watermark_url: String,
    /// Bytes of `/upload` bodies held in memory at once (uploads over it: 503).
    pub upload_buffer_size: u64,
    /// Multiplies every `wm` opacity (0..=1).
    pub watermark_opacity: f64,
    /// `autoquality` when the URL has none: `none`, `dssim` (the default target below) or
    /// `size` (needs the URL's target, so not useful as a default).
    #[serde(deserialize_with = "string_like")]
    pub autoquality_method: String,
    /// DSSIM target of `aq:dssim` (0 = identical; 0.02 looks like the original).
    pub autoquality_target: f64,
    pub autoquality_min_quality: u8,
    pub autoquality_max_quality: u8,
    pub autoquality_allowed_error: f64,
    pub auto_rotate: bool,
    pub strip_metadata: bool,
    pub keep_copyright: bool,
    pub strip_color_profile: bool,
    pub return_attachment: bool,
    /// `Cache-Control: max-age` in seconds; 0 sends `no-cache`.
    pub ttl: u64,

    /// Result cache capacity in bytes of encoded images.
    pub cache_size: u64,
    /// Seconds a result stays cached, and seconds it stays without being requested.
    pub cache_ttl: f64,
    pub cache_tti: f64,
    /// Results larger than this fraction of `cache_size` are served but not cached.
    pub cache_max_entry_fraction: f64,
    /// Source cache capacity in bytes (fetched originals; the srcset pattern fetches once).
    pub source_cache_size: u64,
    /// Seconds a source stays cached; at most 3600 (sources are customer data).
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
    pub policy_on_error: String,
    /// Memory cap of one policy VM, bytes.
    pub policy_memory_limit: u64,
    /// Lua instructions one `decide` call may run.
    pub policy_max_instructions: u64,
    /// Seconds one `decide` call may take (a script's top level gets 100 times this).
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
            max_src_resolution: 50.0,
            max_animation_frames: crate::pixels::DEFAULT_MAX_ANIMATION_FRAMES,
            max_animation_frame_resolution: 0.0,
            max_result_dimension: 0,
            max_result_resolution: 50.0,
            quality: 80,
            format_quality: BTreeMap::from([("webp".into(), 79), ("avif".into(), 63)]),
            jpeg_mode: "small".into(),
            jpeg_progressive: false,
            webp_lossless: false,
            webp_effort: 4,
            avif_speed: crate::pixels::encode::DEFAULT_AVIF_SPEED,
            watermark_path: String::new(),
            watermark_data: String::new(),
            watermark_url: String::new(),
            watermark_opacity: 1.0,
            upload_buffer_size: 256 * 1024 * 1024,
            autoquality_method: "none".into(),
            autoquality_target: crate::pixels::DEFAULT_AUTOQUALITY_TARGET,
            autoquality_min_quality: 40,
            autoquality_max_quality: 90,
            autoquality_allowed_error: 0.001,
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
    /// The memory cap and instruction budget of each policy VM.
    pub fn policy_limits(&self) -> VmLimits {
        VmLimits {
            memory: usize::try_from(self.policy_memory_limit).unwrap_or(usize::MAX),
            instructions: i64::try_from(self.policy_max_instructions).unwrap_or(i64::MAX),
            timeout: Duration::try_from_secs_f64(self.policy_timeout)
                .unwrap_or(Duration::from_millis(50)),
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

/// A signing pair, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyPair {
    pub tenant: String,
    pub key: Vec<u8>,
    pub salt: Vec<u8>,
}

/// A CIDR block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Network {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

impl Network {
    pub fn parse(s: &str) -> Option<Network> {
        let (a, p) = s.split_once('/').unwrap_or((s, ""));
        let addr: std::net::IpAddr = a.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if p.is_empty() {
            max
        } else {
            p.trim().parse().ok()?
        };
        (prefix <= max).then_some(Network { addr, prefix })
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr::*;
        let (a, b, bits) = match (self.addr, ip) {
            (V4(a), V4(b)) => (u128::from(a.to_bits()), u128::from(b.to_bits()), 32),
            (V6(a), V6(b)) => (a.to_bits(), b.to_bits(), 128),
            _ => return false,
        };
        let shift = bits - u32::from(self.prefix);
        shift >= bits || (a >> shift) == (b >> shift)
    }
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub raw: RawConfig,
    pub listen: SocketAddr,
    pub header_read_timeout: Duration,
    pub keep_alive_timeout: Duration,
    pub request_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub download_timeout: Duration,
    pub cache_ttl: Duration,
    pub cache_tti: Duration,
    pub source_cache_ttl: Duration,
    pub workers: usize,
    pub keys: Vec<KeyPair>,
    pub presets: Presets,
    /// Server defaults for options the URL does not set.
    pub defaults: Options,
    pub engine: EngineConfig,
    pub local_root: PathBuf,
    pub allowed_sources: Vec<String>,
    pub allowed_source_networks: Vec<Network>,
    /// `None`: no policy, every request allowed.
    pub policy: Option<PolicySettings>,
    pub metrics_listen: Option<SocketAddr>,
    pub trusted_proxies: Vec<Network>,
}

impl Config {
    /// What URL parsing needs, at time `now_unix` (for `exp`).
    pub fn url_context(&self, now_unix: i64) -> crate::request::url::UrlContext<'_> {
        crate::request::url::UrlContext {
            keys: &self.keys,
            signature_size: self.raw.signature_size,
            trusted_signatures: &self.raw.trusted_signatures,
            presets: &self.presets,
            only_presets: self.raw.only_presets,
            allow_security_options: self.raw.allow_security_options,
            defaults: &self.defaults,
            now_unix,
        }
    }
}

/// Where the shipped default policy is looked for when `policy_file` is unset.
pub const DEFAULT_POLICY_FILE: &str = "lua/policy.lua";

/// Where the bundled sample images live: next to the executable's crate when run from a
/// checkout, which is what `cargo run` does.
pub fn bundled_samples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples")
}

/// Overrides from `PIXGATE_*` (and imgproxy's variables) applied to a TOML table.
pub fn apply_env(
    table: &mut toml::Table,
    vars: impl Iterator<Item = (String, String)>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut imgproxy: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in vars {
        if let Some(name) = k.strip_prefix("PIXGATE_") {
            let key = name.to_ascii_lowercase();
            table.insert(key, env_value(&v));
        } else if matches!(
            k.as_str(),
            "IMGPROXY_KEY" | "IMGPROXY_SALT" | "IMGPROXY_SIGNATURE_SIZE"
        ) {
            imgproxy.insert(k, v);
        }
    }
    if let Some(size) = imgproxy.get("IMGPROXY_SIGNATURE_SIZE") {
        match size.trim().parse::<i64>() {
            Ok(n) => {
                table.insert("signature_size".into(), toml::Value::Integer(n));
            }
            Err(_) => problems.push(format!("IMGPROXY_SIGNATURE_SIZE: `{size}` is not a number")),
        }
    }
    match (imgproxy.get("IMGPROXY_KEY"), imgproxy.get("IMGPROXY_SALT")) {
        (Some(keys), Some(salts)) => {
            let keys: Vec<&str> = keys.split(',').map(str::trim).collect();
            let salts: Vec<&str> = salts.split(',').map(str::trim).collect();
            if keys.len() != salts.len() {
                problems.push(format!(
                    "IMGPROXY_KEY has {} values but IMGPROXY_SALT has {}",
                    keys.len(),
                    salts.len()
                ));
            } else {
                let list = keys
                    .iter()
                    .zip(&salts)
                    .enumerate()
                    .map(|(i, (k, s))| {
                        let mut t = toml::Table::new();
                        let tenant = if i == 0 {
                            "default".to_string()
                        } else {
                            format!("key{}", i + 1)
                        };
                        t.insert("tenant".into(), toml::Value::String(tenant));
                        t.insert("key".into(), toml::Value::String(k.to_string()));
                        t.insert("salt".into(), toml::Value::String(s.to_string()));
                        toml::Value::Table(t)
                    })
                    .collect();
                table.insert("keys".into(), toml::Value::Array(list));
            }
        }
        (None, None) => {}
        _ => problems.push("IMGPROXY_KEY and IMGPROXY_SALT must be set together".into()),
    }
    problems
}

/// An environment value as TOML would read it when it is a bool, number, array or table;
/// otherwise the plain string.
fn env_value(v: &str) -> toml::Value {
    let t = v.trim();
    if let Ok(table) = format!("v = {t}").parse::<toml::Table>() {
        if let Some(val) = table.get("v") {
            if !matches!(val, toml::Value::Datetime(_)) {
                return val.clone();
            }
        }
    }
    toml::Value::String(v.to_string())
}

/// CLI flags that override everything else.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub listen: Option<String>,
    pub local_root: Option<String>,
}

/// Reads the file (if any), applies the environment and flags, and validates.
pub fn load(
    file: Option<&Path>,
    vars: impl Iterator<Item = (String, String)>,
    flags: &Flags,
) -> Result<Config, Vec<String>> {
    let mut table = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| vec![format!("{}: {e}", path.display())])?;
            text.parse::<toml::Table>()
                .map_err(|e| vec![format!("{}: {e}", path.display())])?
        }
        None => toml::Table::new(),
    };
    let mut problems = apply_env(&mut table, vars);
    if let Some(l) = &flags.listen {
        table.insert("listen".into(), toml::Value::String(l.clone()));
    }
    if let Some(r) = &flags.local_root {
        table.insert("local_root".into(), toml::Value::String(r.clone()));
    }
    let raw: RawConfig = match toml::Value::Table(table).try_into() {
        Ok(r) => r,
        Err(e) => {
            problems.push(e.to_string().trim().to_string());
            return Err(problems);
        }
    };
    match validate(raw) {
        Ok(c) if problems.is_empty() => Ok(c),
        Ok(_) => Err(problems),
        Err(mut more) => {
            problems.append(&mut more);
            Err(problems)
        }
    }
}

/// Checks every field and reports every problem at once.
pub fn validate(raw: RawConfig) -> Result<Config, Vec<String>> {
    let mut p = Vec::new();
    let listen = raw
        .listen
        .parse::<SocketAddr>()
        .map_err(|_| p.push(format!("listen: `{}` is not an address:port", raw.listen)))
        .ok();
    let mut secs = |name: &str, v: f64, max: f64| {
        if v.is_finite() && v > 0.0 && v <= max {
            Duration::from_secs_f64(v)
        } else {
            p.push(format!(
                "{name}: {v} is not a number of seconds in (0, {max}]"
            ));
            Duration::from_secs(1)
        }
    };
    const DAY: f64 = 86_400.0;
    let header_read_timeout = secs("header_read_timeout", raw.header_read_timeout, DAY);
    let keep_alive_timeout = secs("keep_alive_timeout", raw.keep_alive_timeout, DAY);
    let request_timeout = secs("request_timeout", raw.request_timeout, DAY);
    let shutdown_timeout = secs("shutdown_timeout", raw.shutdown_timeout, DAY);
    let download_timeout = secs("download_timeout", raw.download_timeout, DAY);
    let cache_ttl = secs("cache_ttl", raw.cache_ttl, 365.0 * DAY);
    let cache_tti = secs("cache_tti", raw.cache_tti, 365.0 * DAY);
    let source_cache_ttl = secs("source_cache_ttl", raw.source_cache_ttl, DAY);
    if raw.source_cache_ttl > 3600.0 {
        p.push(format!(
            "source_cache_ttl: {} s is over 3600 (sources are customer data: one hour at most)",
            raw.source_cache_ttl
        ));
    }
    let f = raw.cache_max_entry_fraction;
    if f.is_nan() || f <= 0.0 || f > 1.0 {
        p.push(format!(
            "cache_max_entry_fraction: {} is not within (0, 1]",
            raw.cache_max_entry_fraction
        ));
    }
    if raw.memory_budget < 64 << 20 {
        p.push(format!(
            "memory_budget: {} bytes is below the minimum of 67108864 (64 MiB)",
            raw.memory_budget
        ));
    }
    if raw.max_connections == 0 {
        p.push("max_connections must be > 0".into());
    }
    if !(1..=32).contains(&raw.signature_size) {
        p.push(format!(
            "signature_size: {} is not within 1..=32",
            raw.signature_size
        ));
    }
    let mut keys = Vec::new();
    for (i, k) in raw.keys.iter().enumerate() {
        let key = hex::decode(k.key.trim());
        let salt = hex::decode(k.salt.trim());
        if key.is_err() {
            p.push(format!("keys[{i}] ({}): key is not hex", k.tenant));
        }
        if salt.is_err() {
            p.push(format!("keys[{i}] ({}): salt is not hex", k.tenant));
        }
        if k.tenant.is_empty() {
            p.push(format!("keys[{i}]: tenant must not be empty"));
        }
        if let (Ok(key), Ok(salt)) = (key, salt) {
            if key.is_empty() {
                p.push(format!("keys[{i}] ({}): key is empty", k.tenant));
            }
            keys.push(KeyPair {
                tenant: k.tenant.clone(),
                key,
                salt,
            });
        }
    }
    let presets = match Presets::parse(&raw.presets) {
        Ok(ps) => ps,
        Err(errs) => {
            p.extend(errs.into_iter().map(|e| format!("presets: {e}")));
            Presets::default()
        }
    };
    if raw.only_presets && presets.is_empty() {
        p.push("only_presets is on but no presets are defined".into());
    }
    let local_root = if raw.local_root.is_empty() {
        bundled_samples()
    } else {
        PathBuf::from(&raw.local_root)
    };
    let local_root = match local_root.canonicalize() {
        Ok(r) if r.is_dir() => r,
        _ => {
            p.push(format!(
                "local_root: {} is not a directory",
                local_root.display()
            ));
            local_root
        }
    };
    let mut networks = Vec::new();
    for n in &raw.allowed_source_networks {
        match Network::parse(n) {
            Some(net) => networks.push(net),
            None => p.push(format!(
                "allowed_source_networks: `{n}` is not a CIDR block"
            )),
        }
    }
    for s in &raw.allowed_sources {
        if !s.contains("://") {
            p.push(format!(
                "allowed_sources: `{s}` has no scheme (e.g. https://img.example.com/)"
            ));
        }
    }
    if !(1..=100).contains(&raw.quality) {
        p.push(format!("quality: {} is not within 1..=100", raw.quality));
    }
    let mut format_quality = BTreeMap::new();
    for (name, q) in &raw.format_quality {
        match Format::from_name(name) {
            Some(f) if (1..=100).contains(q) => {
                format_quality.insert(f, *q);
            }
            Some(_) => p.push(format!("format_quality.{name}: {q} is not within 1..=100")),
            None => p.push(format!("format_quality: unknown format `{name}`")),
        }
    }
    let jpeg_mode = match raw.jpeg_mode.as_str() {
        "small" => JpegMode::Small,
        "fast" => JpegMode::Fast,
        other => {
            p.push(format!("jpeg_mode: `{other}` is not `small` or `fast`"));
            JpegMode::Small
        }
    };
    if raw.webp_effort > 6 {
        p.push(format!(
            "webp_effort: {} is not within 0..=6",
            raw.webp_effort
        ));
    }
    if raw.avif_speed > 10 {
        p.push(format!(
            "avif_speed: {} is not within 0..=10",
            raw.avif_speed
        ));
    }
    if !(0.0..=1.0).contains(&raw.watermark_opacity) {
        p.push("watermark_opacity must be within 0..=1".into());
    }
    let watermark = load_watermark(&raw).unwrap_or_else(|e| {
        p.push(e);
        None
    });
    if !matches!(raw.autoquality_method.as_str(), "none" | "dssim" | "size") {
        p.push(format!(
            "autoquality_method: `{}` is not none, dssim or size",
            raw.autoquality_method
        ));
    }
    // Written to also catch NaN.
    if raw.autoquality_target.partial_cmp(&0.0).is_none() || raw.autoquality_target < 0.0 {
        p.push("autoquality_target must be >= 0".into());
    }
    if raw.autoquality_min_quality == 0
        || raw.autoquality_max_quality > 100
        || raw.autoquality_min_quality > raw.autoquality_max_quality
    {
        p.push("autoquality_min_quality..=autoquality_max_quality must be within 1..=100".into());
    }
    // Written to also catch NaN.
    if raw.max_src_resolution.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        p.push("max_src_resolution must be > 0".into());
    }
    if raw.max_result_resolution.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        p.push("max_result_resolution must be > 0".into());
    }
    if raw.max_animation_frames == 0 {
        p.push("max_animation_frames must be at least 1 (1 = first frame only)".into());
    }
    // Written to also catch NaN.
    if raw
        .max_animation_frame_resolution
        .partial_cmp(&0.0)
        .is_none()
        || raw.max_animation_frame_resolution < 0.0
    {
        p.push("max_animation_frame_resolution must be >= 0 (0 = max_src_resolution)".into());
    }
    let metrics_listen = if raw.metrics_listen.is_empty() {
        None
    } else {
        raw.metrics_listen
            .parse::<SocketAddr>()
            .map_err(|_| {
                p.push(format!(
                    "metrics_listen: `{}` is not an address:port (or empty to disable)",
                    raw.metrics_listen
                ))
            })
            .ok()
    };
    let on_error = match raw.policy_on_error.as_str() {
        "allow" => OnError::Allow,
        "deny" => OnError::Deny,
        other => {
            p.push(format!(
                "policy_on_error: `{other}` is not `allow` or `deny`"
            ));
            OnError::Allow
        }
    };
    let policy_file = match raw.policy_file.as_deref() {
        None => Some(PathBuf::from(DEFAULT_POLICY_FILE)).filter(|f| f.is_file()),
        Some("") => None,
        Some(f) => {
            if !Path::new(f).is_file() {
                p.push(format!("policy_file: {f} is not a file"));
            }
            Some(PathBuf::from(f))
        }
    };
    if raw.policy_memory_limit < 1024 * 1024 {
        p.push("policy_memory_limit must be at least 1048576 bytes".into());
    }
    if !(1000..=1_000_000_000).contains(&raw.policy_max_instructions) {
        p.push("policy_max_instructions is not within 1000..=1000000000".into());
    }
    if raw.policy_max_buckets == 0 {
        p.push("policy_max_buckets must be > 0".into());
    }
    if !(raw.policy_timeout.is_finite() && (0.001..=10.0).contains(&raw.policy_timeout)) {
        p.push(format!(
            "policy_timeout: {} is not a number of seconds within 0.001..=10",
            raw.policy_timeout
        ));
    }
    if !(raw.policy_error_rate.is_finite() && raw.policy_error_rate >= 0.0) {
        p.push("policy_error_rate must be a number ≥ 0 (0 = unlimited)".into());
    }
    let policy = policy_file.map(|file| PolicySettings {
        file,
        on_error,
        limits: raw.policy_limits(),
        max_buckets: raw.policy_max_buckets,
        threads: raw.policy_threads,
        error_rate: raw.policy_error_rate,
    });
    let mut trusted_proxies = Vec::new();
    for n in &raw.trusted_proxies {
        match Network::parse(n) {
            Some(net) => trusted_proxies.push(net),
            None => p.push(format!(
                "trusted_proxies: `{n}` is not an address or CIDR block"
            )),
        }
    }
    if !matches!(raw.log_format.as_str(), "text" | "json") {
        p.push(format!(
            "log_format: `{}` is not `text` or `json`",
            raw.log_format
        ));
    }
    if tracing_subscriber::EnvFilter::try_new(&raw.log_level).is_err() {
        p.push(format!(
            "log_level: `{}` is not a level or filter",
            raw.log_level
        ));
    }
    if !p.is_empty() {
        return Err(p);
    }
    let workers = if raw.workers == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        raw.workers
    };
    let engine = EngineConfig {
        max_src_resolution: raw.max_src_resolution,
        max_src_file_size: raw.max_src_file_size,
        max_result_dimension: raw.max_result_dimension,
        max_result_resolution: raw.max_result_resolution,
        max_animation_frames: raw.max_animation_frames,
        max_animation_frame_resolution: raw.max_animation_frame_resolution,
        quality: raw.quality,
        format_quality,
        jpeg_shrink_margin: if jpeg_mode == JpegMode::Fast {
            1.0
        } else {
            1.5
        },
        encoder: EncoderConfig {
            jpeg_mode,
            jpeg_progressive: raw.jpeg_progressive,
            webp_mode: if raw.webp_lossless {
                WebpMode::Lossless
            } else {
                WebpMode::Lossy
            },
            webp_effort: raw.webp_effort,
            avif_speed: raw.avif_speed,
        },
        watermark,
        watermark_opacity: raw.watermark_opacity,
        autoquality: crate::pixels::AutoQualityDefaults {
            method: raw.autoquality_method.clone(),
            target: raw.autoquality_target,
            min_quality: raw.autoquality_min_quality,
            max_quality: raw.autoquality_max_quality,
            allowed_error: raw.autoquality_allowed_error,
        },
    };
    let defaults = Options {
        auto_rotate: raw.auto_rotate,
        strip_metadata: raw.strip_metadata,
        keep_copyright: raw.keep_copyright,
        strip_color_profile: raw.strip_color_profile,
        return_attachment: raw.return_attachment,
        ..Options::default()
    };
    Ok(Config {
        listen: listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
        header_read_timeout,
        keep_alive_timeout,
        request_timeout,
        shutdown_timeout,
        download_timeout,
        cache_ttl,
        cache_tti,
        source_cache_ttl,
        workers,
        keys,
        presets,
        defaults,
        engine,
        local_root,
        allowed_sources: raw.allowed_sources.clone(),
        allowed_source_networks: networks,
        policy,
        trusted_proxies,
        metrics_listen,
        raw,
    })
}

/// The watermark from `watermark_path` or `watermark_data` (the URL is fetched by the
/// server at start, see `handler::State::fetch_watermark`).
fn load_watermark(raw: &RawConfig) -> Result<Option<std::sync::Arc<image::RgbaImage>>, String> {
    let given = [&raw.watermark_path, &raw.watermark_data, &raw.watermark_url];
    if given.iter().filter(|v| !v.is_empty()).count() > 1 {
        return Err("set only one of watermark_path, watermark_data, watermark_url".into());
    }
    let (what, bytes) = if !raw.watermark_path.is_empty() {
        let b = std::fs::read(&raw.watermark_path)
            .map_err(|e| format!("watermark_path: {}: {e}", raw.watermark_path))?;
        ("watermark_path", b)
    } else if !raw.watermark_data.is_empty() {
        use base64::Engine;
        let b = base64::engine::general_purpose::STANDARD
            .decode(raw.watermark_data.trim())
            .map_err(|e| format!("watermark_data: not base64: {e}"))?;
        ("watermark_data", b)
    } else {
        return Ok(None);
    };
    crate::pixels::decode_watermark(&bytes)
        .map(|w| Some(std::sync::Arc::new(w)))
        .map_err(|e| format!("{what}: {e}"))
}

impl Config {
    /// The built-in defaults (what `pixgate serve` runs with and no file or environment).
    pub fn defaults() -> Config {
        validate(RawConfig::default()).expect("built-in defaults are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn defaults_serve_the_samples_unsigned() {
        let c = Config::defaults();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert!(c.keys.is_empty());
        assert_eq!(c.local_root, bundled_samples().canonicalize().unwrap());
        assert!(!c.raw.allow_loopback_sources && !c.raw.allow_private_sources);
    }

    #[test]
    fn precedence_is_defaults_file_env_flags() {
        let dir = std::env::temp_dir().join(format!("pixgate-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pixgate.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\nquality = 70\nworkers = 3\n[presets]\nthumb = \"rs:fill:100:100\"\n",
        )
        .unwrap();
        let c = load(
            Some(&file),
            env(&[
                ("PIXGATE_QUALITY", "60"),
                ("PIXGATE_ALLOW_LOOPBACK_SOURCES", "true"),
                (
                    "PIXGATE_ALLOWED_SOURCES",
                    "https://a.example/, https://b.example/",
                ),
                ("PIXGATE_USER_AGENT", "12345"),
                ("UNRELATED", "x"),
            ]),
            &Flags {
                listen: Some("127.0.0.1:0".into()),
                local_root: None,
            },
        )
        .unwrap();
        assert_eq!(c.listen.port(), 0, "flag beats file");
        assert_eq!(c.engine.quality, 60, "env beats file");
        assert_eq!(c.workers, 3, "file beats default");
        assert!(c.raw.allow_loopback_sources);
        assert_eq!(
            c.allowed_sources,
            vec!["https://a.example/", "https://b.example/"]
        );
        assert_eq!(c.raw.user_agent, "12345");
        assert!(c.presets.get("thumb").is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn imgproxy_variables_make_key_pairs() {
        let c = load(
            None,
            env(&[
                ("IMGPROXY_KEY", "736563726574,6b657932"),
                ("IMGPROXY_SALT", "68656C6C6F,73616c7432"),
                ("IMGPROXY_SIGNATURE_SIZE", "8"),
            ]),
            &Flags::default(),
        )
        .unwrap();
        assert_eq!(c.keys.len(), 2);
        assert_eq!(c.keys[0].key, b"secret");
        assert_eq!(c.keys[0].salt, b"hello");
        assert_eq!(c.keys[1].tenant, "key2");
        assert_eq!(c.raw.signature_size, 8);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let errs = load(
            None,
            env(&[
                ("PIXGATE_LISTEN", "nowhere"),
                ("PIXGATE_QUALITY", "0"),
                ("PIXGATE_JPEG_MODE", "turbo"),
                ("PIXGATE_LOCAL_ROOT", "/nonexistent/pixgate"),
                ("PIXGATE_DOWNLOAD_TIMEOUT", "-1"),
                ("PIXGATE_ALLOWED_SOURCE_NETWORKS", "10.0.0.0/99"),
                ("IMGPROXY_KEY", "zz"),
                ("IMGPROXY_SALT", "00"),
            ]),
            &Flags::default(),
        )
        .unwrap_err();
        for needle in [
            "listen",
            "quality",
            "jpeg_mode",
            "local_root",
            "download_timeout",
            "allowed_source_networks",
            "key is not hex",
        ] {
            assert!(
                errs.iter().any(|e| e.contains(needle)),
                "{needle} missing from {errs:?}"
            );
        }
        let errs = load(None, env(&[("PIXGATE_NOPE", "1")]), &Flags::default()).unwrap_err();
        assert!(errs[0].contains("nope"), "{errs:?}");
    }

    #[test]
    fn networks() {
        let n = Network::parse("127.0.0.2/32").unwrap();
        assert!(n.contains("127.0.0.2".parse().unwrap()));
        assert!(!n.contains("127.0.0.1".parse().unwrap()));
        let n = Network::parse("10.0.0.0/8").unwrap();
        assert!(n.contains("10.200.1.1".parse().unwrap()));
        assert!(!n.contains("::1".parse().unwrap()));
        assert!(
            Network::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(
            Network::parse("fd00::/8")
                .unwrap()
                .contains("fd12::1".parse().unwrap())
        );
    }
}
