//! Fuzz targets as plain functions: `fuzz/` runs them under libFuzzer (cargo-fuzz, with a
//! counting allocator asserting the memory bound), `tests/it/fuzz.rs` replays every saved
//! crash and the seed corpora through them on stable. Each must return normally for any
//! input: an error is fine, a panic, a hang or unbounded memory is a finding. Not part of
//! the API.

use std::time::{Duration, Instant};

use crate::request::options::{Options, ParseContext, Presets};
use crate::request::url::{self, UrlContext};

/// Source and result limits of the transform target: small, so each run is quick and the
/// memory bound (`TRANSFORM_MEMORY_BOUND`) is tight.
pub const TRANSFORM_MAX_MEGAPIXELS: f64 = 1.0;
/// Peak bytes one transform run may allocate under those limits.
pub const TRANSFORM_MEMORY_BOUND: usize = 256 << 20;

fn presets() -> Presets {
    let defs = [
        ("thumb".to_string(), "rs:fill:100:100/q:60".to_string()),
        ("loop".to_string(), "pr:loop".to_string()),
    ]
    .into_iter()
    .collect();
    Presets::parse(&defs).unwrap_or_default()
}

/// URL paths: the signature-checked and the unsigned parser, uploads, and the property that
/// the canonical options (the cache key) read back as themselves.
pub fn url(data: &[u8]) {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let presets = presets();
    let defaults = Options::default();
    let keys = [crate::request::signature::KeyPair {
        tenant: "t".into(),
        key: b"secret".to_vec(),
        salt: b"salt".to_vec(),
    }];
    for (keys, security) in [(&keys[..], false), (&[][..], true)] {
        let ctx = UrlContext {
            keys,
            signature_size: 32,
            trusted_signatures: &[],
            presets: &presets,
            only_presets: false,
            allow_security_options: security,
            defaults: &defaults,
            now_unix: 1_700_000_000,
        };
        if let Ok(parsed) = url::parse(path, &ctx) {
            let _ = parsed.source.url();
            roundtrip(&parsed.options, &presets);
        }
        let _ = url::parse_upload(path, &ctx);
    }
    let pctx = ParseContext::operator(&presets, &defaults, 1_700_000_000);
    if let Ok(o) = crate::request::options::parse(path, &pctx) {
        roundtrip(&o, &presets);
    }
}

/// Equivalent URLs share one cache key: the canonical form must parse back to itself.
fn roundtrip(o: &Options, presets: &Presets) {
    let canonical = o.canonical();
    let defaults = Options::default();
    let ctx = ParseContext::operator(presets, &defaults, 1_700_000_000);
    match crate::request::options::parse(&canonical, &ctx) {
        Ok(again) => assert_eq!(
            again.canonical(),
            canonical,
            "the canonical options do not read back as themselves"
        ),
        Err(e) => panic!("the canonical options `{canonical}` do not parse: {e}"),
    }
}

/// The header probe and the metadata reader, on any bytes.
pub fn probe(data: &[u8]) {
    if let Ok(info) = crate::pixels::probe::probe(data) {
        let _ = crate::pixels::probe::header_metadata(data, info.format);
    }
}

/// The whole engine: the first line is the option string, the rest the source. Runs under
/// small limits with a deadline; every outcome but a panic is fine.
pub fn transform(data: &[u8]) {
    let split = data.iter().take(512).position(|&b| b == b'\n');
    let Some(at) = split else {
        return;
    };
    let options = String::from_utf8_lossy(&data[..at]);
    let src = &data[at + 1..];
    let defaults = Options::default();
    let presets = presets();
    let ctx = ParseContext {
        allow_security_options: false,
        ..ParseContext::operator(&presets, &defaults, 1_700_000_000)
    };
    let Ok(opts) = crate::request::options::parse(&options, &ctx) else {
        return;
    };
    let cfg = crate::pixels::EngineConfig {
        max_src_resolution: TRANSFORM_MAX_MEGAPIXELS,
        max_result_resolution: TRANSFORM_MAX_MEGAPIXELS,
        max_animation_frames: 8,
        ..crate::pixels::EngineConfig::default()
    };
    let _ = crate::info::describe(src, &opts, &cfg);
    if let Ok(job) = crate::pixels::prepare(src, &opts, &cfg) {
        let _ = job.memory_estimate();
        let _ = job.run_until(src, Some(Instant::now() + Duration::from_secs(20)));
    }
}

/// `multipart/form-data` upload bodies: the first line is the boundary, the rest the body,
/// cut into chunks where the bytes say so (the parser sees every split).
pub fn multipart(data: &[u8]) {
    let split = data.iter().take(128).position(|&b| b == b'\n');
    let Some(at) = split else {
        return;
    };
    let boundary = String::from_utf8_lossy(&data[..at]).into_owned();
    let body = bytes::Bytes::copy_from_slice(&data[at + 1..]);
    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = (0..body.len())
        .step_by(step)
        .map(|i| Ok(body.slice(i..(i + step).min(body.len()))))
        .collect();
    let over = std::sync::atomic::AtomicBool::new(false);
    let rt = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(rt) => rt,
        Err(_) => return,
    };
    let _ = rt.block_on(crate::upload::file_part(
        futures_util::stream::iter(chunks),
        &boundary,
        1 << 20,
        &over,
    ));
}

/// The policy sandbox and decision validator: the input is the expression `decide`
/// returns (and may run arbitrary Lua before it).
pub fn decision(data: &[u8]) {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    let script = crate::policy::Script {
        name: "@fuzz.lua".into(),
        source: format!("function decide(req)\n{body}\nend\n"),
        modules: Default::default(),
    };
    let limits = crate::policy::VmLimits {
        memory: 8 << 20,
        instructions: 100_000,
        timeout: Duration::from_millis(200),
    };
    let t = Instant::now();
    for req in crate::policy::canned_requests().iter().take(2) {
        let _ = crate::policy::eval_once(&script, limits, req);
    }
    // The load budget (100× a call) and two calls: far below this.
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "a policy ran {:?} despite its deadlines",
        t.elapsed()
    );
}
