//! Configuration: the written form ([`RawConfig`]: a TOML file, then `PIXGATE_<KEY>` and
//! imgproxy's variables, then CLI flags — in that order of precedence, see [`load`]) checked
//! all at once into the typed [`Config`] every other module reads. Defaults serve the bundled
//! sample images on 127.0.0.1:8080 with signing off. Every resource bound is a field here.
//!
//! `raw` holds the fields and their defaults, `env` the environment layer, `validate` the
//! pure checks, `resolve` the file-system side (local root, policy file, watermark file).

mod env;
mod raw;
mod resolve;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use env::apply_env;
pub use raw::{RawConfig, RawKey};

use crate::pixels::EngineConfig;
use crate::policy::{OnError, PolicySettings, VmLimits};
use crate::request::options::{Options, Presets};
use crate::request::signature::KeyPair;

/// Where the shipped default policy is looked for when `policy_file` is unset.
pub const DEFAULT_POLICY_FILE: &str = "lua/policy.lua";

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

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where the watermark comes from, before it is read (`resolve`) or fetched (at start).
#[derive(Debug, Clone, PartialEq)]
pub enum WatermarkSource {
    None,
    Path(PathBuf),
    /// Decoded from `watermark_data`'s base64.
    Data(Vec<u8>),
    /// Fetched once at start through the origin's rules.
    Url(String),
}

/// The checked configuration. Durations are `Duration`s, "no limit" is `None`.
#[derive(Debug, Clone)]
pub struct Config {
    /// API listener address.
    pub listen: SocketAddr,
    /// Client connections at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Connections at once from one client address; `None`: no per-address cap.
    pub max_connections_per_ip: Option<usize>,
    pub header_read_timeout: Duration,
    /// How long a connection may stay with no request in flight.
    pub keep_alive_timeout: Duration,
    /// How long a whole request may take, queue wait included.
    pub request_timeout: Duration,
    /// How long in-flight requests get after SIGTERM/SIGINT.
    pub shutdown_timeout: Duration,
    /// Pixel jobs at once (the core count when the file says 0).
    pub workers: usize,
    /// Pixel jobs waiting for a worker.
    pub queue_size: usize,
    /// Bytes of pixel buffers all running jobs may hold together.
    pub memory_budget: u64,
    /// A tracing filter.
    pub log_level: String,
    pub log_format: LogFormat,
    /// `None`: no metrics listener.
    pub metrics_listen: Option<SocketAddr>,
    /// Proxies whose forwarded-for headers are believed.
    pub trusted_proxies: Vec<Network>,

    /// Signing pairs; empty: signing off.
    pub keys: Vec<KeyPair>,
    /// Bytes of HMAC in a signature.
    pub signature_size: usize,
    pub trusted_signatures: Vec<String>,
    pub presets: Presets,
    pub only_presets: bool,
    pub allow_security_options: bool,
    /// Server defaults for options the URL does not set.
    pub defaults: Options,

    /// Directory behind `local:///` (canonical once resolved).
    pub local_root: PathBuf,
    pub allowed_sources: Vec<String>,
    pub allowed_source_networks: Vec<Network>,
    pub allow_loopback_sources: bool,
    pub allow_private_sources: bool,
    pub allow_link_local_sources: bool,
    /// The whole download of one source.
    pub download_timeout: Duration,
    /// Largest source in bytes; `None`: no limit.
    pub max_src_file_size: Option<u64>,
    pub max_redirects: usize,
    pub user_agent: String,

    pub engine: EngineConfig,
    /// Where the watermark comes from; a file or data is in `engine.watermark` once
    /// resolved, a URL is fetched at start.
    pub watermark: WatermarkSource,

    /// `Cache-Control: max-age` of results, seconds (0: `no-cache`).
    pub ttl: u64,
    /// Result cache capacity, bytes.
    pub cache_size: u64,
    pub cache_ttl: Duration,
    pub cache_tti: Duration,
    /// Results over this fraction of `cache_size` are served, not kept.
    pub cache_max_entry_fraction: f64,
    /// Source cache capacity, bytes.
    pub source_cache_size: u64,
    pub source_cache_ttl: Duration,
    /// Bytes of upload bodies held at once.
    pub upload_buffer_size: u64,
    pub auto_format: bool,
    pub enforce_format: bool,

    /// `policy_file` as written (`None`: unset, the default file when it exists).
    pub policy_file: Option<String>,
    pub policy_on_error: OnError,
    /// Limits of each policy VM (also what `pixgate policy check|eval` run under).
    pub policy_limits: VmLimits,
    pub policy_max_buckets: usize,
    /// Threads running `decide` (the core count when the file says 0).
    pub policy_threads: usize,
    /// Requests a second per key while `decide` fails; `None`: unlimited.
    pub policy_error_rate: Option<f64>,
    /// The policy to load, once resolved; `None`: every request allowed.
    pub policy: Option<PolicySettings>,
}

impl Config {
    /// The built-in defaults (what `pixgate serve` runs with and no file or environment).
    pub fn defaults() -> Config {
        from_raw(RawConfig::default()).expect("built-in defaults are valid")
    }

    /// What URL parsing needs, at time `now_unix` (for `exp`).
    pub fn url_context(&self, now_unix: i64) -> crate::request::url::UrlContext<'_> {
        crate::request::url::UrlContext {
            keys: &self.keys,
            signature_size: self.signature_size,
            trusted_signatures: &self.trusted_signatures,
            presets: &self.presets,
            only_presets: self.only_presets,
            allow_security_options: self.allow_security_options,
            defaults: &self.defaults,
            now_unix,
        }
    }

    /// The largest source a request may use: the server's limit, lowered by the URL's `msfs`.
    pub fn source_size_limit(&self, options: &Options) -> Option<u64> {
        options.security.source_size_limit(self.max_src_file_size)
    }

    /// The watermark URL to fetch at start, if that is where it comes from.
    pub fn watermark_url(&self) -> Option<&str> {
        match &self.watermark {
            WatermarkSource::Url(u) => Some(u),
            _ => None,
        }
    }
}

/// Where the bundled sample images live: next to the executable's crate when run from a
/// checkout, which is what `cargo run` does.
pub fn bundled_samples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples")
}

/// CLI flags that override everything else.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub listen: Option<String>,
    pub local_root: Option<String>,
}

/// Reads the file (if any), applies the environment and flags, validates and resolves.
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
    match from_raw(raw) {
        Ok(c) if problems.is_empty() => Ok(c),
        Ok(_) => Err(problems),
        Err(mut more) => {
            problems.append(&mut more);
            Err(problems)
        }
    }
}

/// The written configuration checked and resolved; every problem at once.
pub fn from_raw(raw: RawConfig) -> Result<Config, Vec<String>> {
    let checked = validate::validate(&raw);
    // The file system is looked at even when fields are wrong, so one run lists every
    // problem.
    let (mut config, mut problems) = match checked {
        Ok(c) => (Some(c), Vec::new()),
        Err(p) => (None, p),
    };
    match &mut config {
        Some(c) => problems.extend(resolve::resolve(c)),
        None => problems.extend(resolve::check_paths(&raw)),
    }
    match config {
        Some(c) if problems.is_empty() => Ok(c),
        _ => Err(problems),
    }
}

#[cfg(test)]
mod tests;
