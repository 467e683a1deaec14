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

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use env::{EnvLayer, apply_env};
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
    /// Error bodies carry the specific reason.
    pub development_errors: bool,
    /// Server defaults for options the URL does not set.
    pub defaults: Options,

    /// Directory behind `local:///` (canonical once resolved); `None`: not set and no
    /// samples found ([`bundled_samples`]), so `local:///` answers 404.
    pub local_root: Option<PathBuf>,
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
    /// What loading noticed without refusing (logged at `warn` when the server starts).
    pub warnings: Vec<String>,
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

/// Where the sample images are found when `local_root` is not set, in this order: `samples/`
/// beside the binary; `../share/pixgate/samples` from the binary's folder (`/usr/bin` →
/// `/usr/share/pixgate/samples`, `/usr/local/bin` → `/usr/local/share/...`);
/// `/usr/share/pixgate/samples`; `samples/` of the checkout a cargo-built binary sits in
/// (`target/<profile>/pixgate`); `samples/` in the working directory. `None`: nowhere, and
/// `local:///` answers 404.
pub fn bundled_samples() -> Option<PathBuf> {
    let exe = std::env::current_exe()
        .ok()
        .and_then(|e| e.canonicalize().ok());
    let dir = exe.as_deref().and_then(Path::parent);
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(d) = dir {
        candidates.push(d.join("samples"));
        candidates.push(d.join("../share/pixgate/samples"));
    }
    candidates.push(PathBuf::from("/usr/share/pixgate/samples"));
    if let Some(d) = dir {
        // target/<profile>/pixgate, target/<triple>/<profile>/pixgate, and the test binaries
        // in target/<profile>/deps.
        candidates.extend(
            d.ancestors()
                .skip(1)
                .take(3)
                .filter(|a| a.join("Cargo.toml").is_file())
                .map(|a| a.join("samples")),
        );
    }
    candidates.push(PathBuf::from("samples"));
    candidates
        .into_iter()
        .find(|c| c.is_dir())
        .and_then(|c| c.canonicalize().ok())
}

/// CLI flags that override everything else.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub listen: Option<String>,
    pub local_root: Option<String>,
}

/// Where a key's value was written, so a problem is reported under the operator's name
/// for it.
#[derive(Debug, Clone)]
enum Origin {
    File(String),
    Env(String),
    Flag(&'static str),
}

impl Origin {
    /// The key as its origin spells it: `PIXGATE_CACHE_SIZE`, `--listen`, or the key in
    /// its file.
    fn name(&self, key: &str) -> String {
        match self {
            Origin::File(path) => format!("{path}: {key}"),
            Origin::Env(var) => var.clone(),
            Origin::Flag(flag) => (*flag).to_string(),
        }
    }
}

/// The nearest known key to a misspelt one, when it is near enough to be the intent.
fn did_you_mean(word: &str, known: &[&'static str]) -> Option<&'static str> {
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(word, k), *k))
        .min()
        .filter(|(d, k)| {
            *d <= 2 || (*d <= 3 && k.len() >= 12) || (k.starts_with(word) && word.len() >= 4)
        })
        .map(|(_, k)| k)
}

/// Reads the file (if any), applies the environment and flags, validates and resolves.
/// Every problem is reported at once: unknown keys (with the nearest known one), values of
/// the wrong type or unit, and what validation and the file system find, each under the
/// name it was written as (the file's key, `PIXGATE_*` variable or flag).
pub fn load(
    file: Option<&Path>,
    vars: impl Iterator<Item = (String, String)>,
    flags: &Flags,
) -> Result<Config, Vec<String>> {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let mut table = toml::Table::new();
    let mut origins: BTreeMap<String, Origin> = BTreeMap::new();
    if let Some(path) = file {
        let text =
            std::fs::read_to_string(path).map_err(|e| vec![format!("{}: {e}", path.display())])?;
        match text.parse::<toml::Table>() {
            Ok(t) => table = t,
            Err(e) => problems.push(format!("{}: {}", path.display(), e.to_string().trim())),
        }
        let shown = path.display().to_string();
        origins.extend(
            table
                .keys()
                .map(|k| (k.clone(), Origin::File(shown.clone()))),
        );
    }
    let env = apply_env(&mut table, vars);
    problems.extend(env.problems);
    origins.extend(env.origins.into_iter().map(|(k, v)| (k, Origin::Env(v))));
    for (flag, key, value) in [
        ("--listen", "listen", &flags.listen),
        ("--local-root", "local_root", &flags.local_root),
    ] {
        if let Some(v) = value {
            table.insert(key.into(), toml::Value::String(v.clone()));
            origins.insert(key.into(), Origin::Flag(flag));
        }
    }

    let known = raw::known_keys();
    let mut keys: Vec<String> = table.keys().cloned().collect();
    keys.sort();
    for key in keys {
        let origin = origins
            .get(&key)
            .cloned()
            .unwrap_or(Origin::Flag("(built in)"));
        if !known.contains(&key.as_str()) {
            table.remove(&key);
            let near = did_you_mean(&key, known);
            match (&origin, near) {
                (Origin::Env(var), Some(k)) => problems.push(format!(
                    "{var}: not a setting; did you mean PIXGATE_{}?",
                    k.to_ascii_uppercase()
                )),
                // Scripts keep their own PIXGATE_* variables (PIXGATE_BIN, ...): a name
                // near no setting is theirs, not a typo.
                (Origin::Env(var), None) => {
                    warnings.push(format!("{var} is not a pixgate setting; ignored"))
                }
                (_, Some(k)) => problems.push(format!(
                    "{}: unknown key; did you mean `{k}`?",
                    origin.name(&key)
                )),
                (_, None) => problems.push(format!(
                    "{}: unknown key (see README.md, \"Configuration\")",
                    origin.name(&key)
                )),
            }
            continue;
        }
        // Each key alone over the defaults: its own type or unit error, under its name.
        let mut one = toml::Table::new();
        one.insert(key.clone(), table[&key].clone());
        if let Err(e) = toml::Value::Table(one).try_into::<RawConfig>() {
            problems.push(format!("{}: {}", origin.name(&key), clean(&e.to_string())));
            table.remove(&key);
        }
    }
    let raw: RawConfig = match toml::Value::Table(table).try_into() {
        Ok(r) => r,
        Err(e) => {
            problems.push(clean(&e.to_string()));
            RawConfig::default()
        }
    };
    let named = |p: String| -> String {
        // Validation speaks of keys; say which variable or flag set the one it names.
        let key = p
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .next()
            .unwrap_or_default();
        match origins.get(key) {
            Some(o @ (Origin::Env(_) | Origin::Flag(_))) => format!("{}: {p}", o.name(key)),
            _ => p,
        }
    };
    match from_raw(raw) {
        Ok(mut c) if problems.is_empty() => {
            c.warnings.extend(warnings);
            Ok(c)
        }
        Ok(_) => Err(problems),
        Err(more) => {
            problems.extend(more.into_iter().map(named));
            Err(problems)
        }
    }
}

/// A deserializer message on one line, without serde's noise.
fn clean(e: &str) -> String {
    e.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
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
