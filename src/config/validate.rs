//! Checking the written configuration into typed values, one function per group (server,
//! signing, sources, engine, caches, policy). Pure: every problem is collected, none stops
//! the others, and nothing touches the file system (that is `resolve`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::raw::RawConfig;
use super::{Config, LogFormat, Network, WatermarkSource};
use crate::format::Format;
use crate::pixels::{AutoQualityDefaults, EncoderConfig, EngineConfig, JpegMode, WebpMode};
use crate::policy::{OnError, VmLimits};
use crate::request::options::{AutoQualityMethod, Options, Presets};
use crate::request::signature::KeyPair;

/// Problems found so far, in the order of the fields.
type Problems = Vec<String>;

const DAY: f64 = 86_400.0;

/// Seconds within (0, max], or a problem.
fn secs(p: &mut Problems, name: &str, v: f64, max: f64) -> Duration {
    if v.is_finite() && v > 0.0 && v <= max {
        Duration::from_secs_f64(v)
    } else {
        p.push(format!(
            "{name}: {v} is not a number of seconds in (0, {max}]"
        ));
        Duration::from_secs(1)
    }
}

/// `v > 0`, written to also catch NaN.
fn positive(v: f64) -> bool {
    v.partial_cmp(&0.0) == Some(std::cmp::Ordering::Greater)
}

/// `v >= 0`, written to also catch NaN.
fn non_negative(v: f64) -> bool {
    matches!(
        v.partial_cmp(&0.0),
        Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
    )
}

/// "0 = no limit" in the file becomes `None`.
fn limit<T: PartialEq + Default>(v: T) -> Option<T> {
    (v != T::default()).then_some(v)
}

fn networks(p: &mut Problems, name: &str, what: &str, list: &[String]) -> Vec<Network> {
    let mut out = Vec::new();
    for n in list {
        match Network::parse(n) {
            Some(net) => out.push(net),
            None => p.push(format!("{name}: `{n}` is not {what}")),
        }
    }
    out
}

/// Checks every field and reports every problem at once. The result still needs
/// `resolve` (local root, policy file, watermark file).
pub fn validate(raw: &RawConfig) -> Result<Config, Problems> {
    let mut p = Problems::new();
    let server = server(&mut p, raw);
    let signing = signing(&mut p, raw);
    let sources = sources(&mut p, raw);
    let engine = engine(&mut p, raw);
    let watermark = watermark(&mut p, raw);
    let caches = caches(&mut p, raw);
    let (policy_file, on_error, policy_limits) = policy(&mut p, raw);
    if !p.is_empty() {
        return Err(p);
    }
    let defaults = Options {
        auto_rotate: raw.auto_rotate,
        strip_metadata: raw.strip_metadata,
        keep_copyright: raw.keep_copyright,
        strip_color_profile: raw.strip_color_profile,
        return_attachment: raw.return_attachment,
        ..Options::default()
    };
    Ok(Config {
        listen: server.listen,
        max_connections: raw.max_connections,
        max_connections_per_ip: limit(raw.max_connections_per_ip),
        header_read_timeout: server.header_read_timeout,
        keep_alive_timeout: server.keep_alive_timeout,
        request_timeout: server.request_timeout,
        shutdown_timeout: server.shutdown_timeout,
        workers: match raw.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        },
        queue_size: raw.queue_size,
        memory_budget: raw.memory_budget,
        log_level: raw.log_level.clone(),
        log_format: server.log_format,
        metrics_listen: server.metrics_listen,
        trusted_proxies: server.trusted_proxies,
        keys: signing.keys,
        signature_size: raw.signature_size,
        trusted_signatures: raw.trusted_signatures.clone(),
        presets: signing.presets,
        only_presets: raw.only_presets,
        allow_security_options: raw.allow_security_options,
        development_errors: raw.development_errors,
        defaults,
        local_root: sources.local_root,
        allowed_sources: raw.allowed_sources.clone(),
        allowed_source_networks: sources.networks,
        allow_loopback_sources: raw.allow_loopback_sources,
        allow_private_sources: raw.allow_private_sources,
        allow_link_local_sources: raw.allow_link_local_sources,
        download_timeout: sources.download_timeout,
        max_src_file_size: limit(raw.max_src_file_size),
        max_redirects: raw.max_redirects,
        user_agent: raw.user_agent.clone(),
        engine,
        watermark,
        ttl: raw.ttl,
        cache_size: raw.cache_size,
        cache_ttl: caches.cache_ttl,
        cache_tti: caches.cache_tti,
        cache_max_entry_fraction: raw.cache_max_entry_fraction,
        source_cache_size: raw.source_cache_size,
        source_cache_ttl: caches.source_cache_ttl,
        upload_buffer_size: raw.upload_buffer_size,
        auto_format: raw.auto_format,
        enforce_format: raw.enforce_format,
        policy_file,
        policy_on_error: on_error,
        policy_limits,
        policy_max_buckets: raw.policy_max_buckets,
        policy_threads: match raw.policy_threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        },
        policy_error_rate: limit(raw.policy_error_rate),
        policy: None,
        warnings: Vec::new(),
    })
}

struct Server {
    listen: SocketAddr,
    header_read_timeout: Duration,
    keep_alive_timeout: Duration,
    request_timeout: Duration,
    shutdown_timeout: Duration,
    log_format: LogFormat,
    metrics_listen: Option<SocketAddr>,
    trusted_proxies: Vec<Network>,
}

/// Listeners, timeouts, connection and worker limits, logs.
fn server(p: &mut Problems, raw: &RawConfig) -> Server {
    let listen = raw
        .listen
        .parse::<SocketAddr>()
        .map_err(|_| p.push(format!("listen: `{}` is not an address:port", raw.listen)))
        .unwrap_or_else(|()| SocketAddr::from(([127, 0, 0, 1], 8080)));
    let header_read_timeout = secs(p, "header_read_timeout", raw.header_read_timeout, DAY);
    let keep_alive_timeout = secs(p, "keep_alive_timeout", raw.keep_alive_timeout, DAY);
    let request_timeout = secs(p, "request_timeout", raw.request_timeout, DAY);
    let shutdown_timeout = secs(p, "shutdown_timeout", raw.shutdown_timeout, DAY);
    if raw.memory_budget < 64 << 20 {
        p.push(format!(
            "memory_budget: {} bytes is below the minimum of 67108864 (64 MiB)",
            raw.memory_budget
        ));
    }
    if raw.max_connections == 0 {
        p.push("max_connections must be > 0".into());
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
    let trusted_proxies = networks(
        p,
        "trusted_proxies",
        "an address or CIDR block",
        &raw.trusted_proxies,
    );
    let log_format = match raw.log_format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            p.push(format!("log_format: `{other}` is not `text` or `json`"));
            LogFormat::Text
        }
    };
    if tracing_subscriber::EnvFilter::try_new(&raw.log_level).is_err() {
        p.push(format!(
            "log_level: `{}` is not a level or filter",
            raw.log_level
        ));
    }
    Server {
        listen,
        header_read_timeout,
        keep_alive_timeout,
        request_timeout,
        shutdown_timeout,
        log_format,
        metrics_listen,
        trusted_proxies,
    }
}

struct Signing {
    keys: Vec<KeyPair>,
    presets: Presets,
}

/// Key pairs, signature size, presets.
fn signing(p: &mut Problems, raw: &RawConfig) -> Signing {
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
    Signing { keys, presets }
}

struct Sources {
    local_root: Option<PathBuf>,
    networks: Vec<Network>,
    download_timeout: Duration,
}

/// Where sources may come from and how they are fetched.
fn sources(p: &mut Problems, raw: &RawConfig) -> Sources {
    let local_root = raw.local_root_path();
    let networks = networks(
        p,
        "allowed_source_networks",
        "a CIDR block",
        &raw.allowed_source_networks,
    );
    for s in &raw.allowed_sources {
        if !s.contains("://") {
            p.push(format!(
                "allowed_sources: `{s}` has no scheme (e.g. https://img.example.com/)"
            ));
        }
    }
    Sources {
        local_root,
        networks,
        download_timeout: secs(p, "download_timeout", raw.download_timeout, DAY),
    }
}

/// Qualities, codecs, limits and autoquality defaults of the engine.
fn engine(p: &mut Problems, raw: &RawConfig) -> EngineConfig {
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
    // `ml` is a URL's to ask for (and be refused); as a default it would fail every request.
    let autoquality_method = match AutoQualityMethod::parse(&raw.autoquality_method) {
        Some(m) if m != AutoQualityMethod::Ml => m,
        _ => {
            p.push(format!(
                "autoquality_method: `{}` is not none, dssim or size",
                raw.autoquality_method
            ));
            AutoQualityMethod::None
        }
    };
    if !non_negative(raw.autoquality_target) {
        p.push("autoquality_target must be >= 0".into());
    }
    if raw.autoquality_min_quality == 0
        || raw.autoquality_max_quality > 100
        || raw.autoquality_min_quality > raw.autoquality_max_quality
    {
        p.push("autoquality_min_quality..=autoquality_max_quality must be within 1..=100".into());
    }
    if !positive(raw.max_src_resolution) {
        p.push("max_src_resolution must be > 0".into());
    }
    if !positive(raw.max_result_resolution) {
        p.push("max_result_resolution must be > 0".into());
    }
    if raw.max_animation_frames == 0 {
        p.push("max_animation_frames must be at least 1 (1 = first frame only)".into());
    }
    if !non_negative(raw.max_animation_frame_resolution) {
        p.push("max_animation_frame_resolution must be >= 0 (0 = max_src_resolution)".into());
    }
    EngineConfig {
        max_src_resolution: raw.max_src_resolution,
        max_src_file_size: limit(raw.max_src_file_size),
        max_result_dimension: limit(raw.max_result_dimension),
        max_result_resolution: raw.max_result_resolution,
        max_animation_frames: raw.max_animation_frames,
        max_animation_frame_resolution: limit(raw.max_animation_frame_resolution),
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
        watermark: None,
        watermark_opacity: raw.watermark_opacity,
        autoquality: AutoQualityDefaults {
            method: autoquality_method,
            target: raw.autoquality_target,
            min_quality: raw.autoquality_min_quality,
            max_quality: raw.autoquality_max_quality,
            allowed_error: raw.autoquality_allowed_error,
        },
    }
}

/// Which of `watermark_path`, `watermark_data`, `watermark_url` gives the watermark.
fn watermark(p: &mut Problems, raw: &RawConfig) -> WatermarkSource {
    let given = [&raw.watermark_path, &raw.watermark_data, &raw.watermark_url];
    if given.iter().filter(|v| !v.is_empty()).count() > 1 {
        p.push("set only one of watermark_path, watermark_data, watermark_url".into());
        return WatermarkSource::None;
    }
    if !raw.watermark_path.is_empty() {
        WatermarkSource::Path(PathBuf::from(&raw.watermark_path))
    } else if !raw.watermark_data.is_empty() {
        use base64::Engine;
        match base64::engine::general_purpose::STANDARD.decode(raw.watermark_data.trim()) {
            Ok(b) => WatermarkSource::Data(b),
            Err(e) => {
                p.push(format!("watermark_data: not base64: {e}"));
                WatermarkSource::None
            }
        }
    } else if !raw.watermark_url.is_empty() {
        WatermarkSource::Url(raw.watermark_url.clone())
    } else {
        WatermarkSource::None
    }
}

struct Caches {
    cache_ttl: Duration,
    cache_tti: Duration,
    source_cache_ttl: Duration,
}

/// Result and source cache lifetimes and sizes.
fn caches(p: &mut Problems, raw: &RawConfig) -> Caches {
    let cache_ttl = secs(p, "cache_ttl", raw.cache_ttl, 365.0 * DAY);
    let cache_tti = secs(p, "cache_tti", raw.cache_tti, 365.0 * DAY);
    let source_cache_ttl = secs(p, "source_cache_ttl", raw.source_cache_ttl, DAY);
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
    Caches {
        cache_ttl,
        cache_tti,
        source_cache_ttl,
    }
}

/// The policy file as named (`None`: unset, look for the default), its failure mode and
/// the limits of its VMs.
fn policy(p: &mut Problems, raw: &RawConfig) -> (Option<String>, OnError, VmLimits) {
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
    let limits = VmLimits {
        memory: usize::try_from(raw.policy_memory_limit).unwrap_or(usize::MAX),
        instructions: i64::try_from(raw.policy_max_instructions).unwrap_or(i64::MAX),
        timeout: Duration::try_from_secs_f64(raw.policy_timeout)
            .unwrap_or(Duration::from_millis(50)),
    };
    (raw.policy_file.clone(), on_error, limits)
}
