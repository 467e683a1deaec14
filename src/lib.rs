//! pixgate: an imgproxy-compatible image transform proxy.
//!
//! ```text
//! server::run        the one startup path (binary and tests): Listeners bound →
//!                    state::State::start (policy loaded, watermark fetched) → connections
//!                    (HTTP/1.1 + HTTP/2), caps, idle timeouts, graceful shutdown;
//!                    policy::Policy::watch reloads the Lua policy on edits and SIGHUP
//! handler::handle    one request: id, deadline, router::route → one function per route,
//!                    then finish (headers, log line, metrics)
//!   handler::admit     every image route's prologue:
//!     request::url       raw path → ParsedRequest (signature checked, then options) 404/403
//!     negotiate          options + Accept → format decision (never the raw header)
//!     policy::Policy     client::Caller + parsed URL → Lua decide(req) on a policy
//!                        thread → governor bucket                    401/402/403/429/503
//!   cache::Store       result key → cached answer (hit, 304) or one coalesced fill:
//!   state::source      Source → SourceBytes via the source cache and origin::fetch
//!                      (guarded, bounded)                      404/4xx/502/504/422
//!   pixels::prepare    bytes + Options → Job: probe header, limits, format, plan     422
//!     pixels::probe      magic bytes → SourceInfo (dispatch to codec probes)
//!     plan::build        Options + header facts → Plan (pure geometry, result limits)
//!   cpu::CpuGate::run  Job::run on a blocking thread within the memory budget: decode
//!                      (DCT-scaled JPEG) → ops → encode (mozjpeg, libwebp, ...)  503/500/422
//!   response::image    CachedResult → Response (headers of API.md §4)
//! error::Error       every failure's status, code, message, headers, log level and metric
//! config             raw (fields, defaults) → validate (pure) → resolve (files) → Config
//! ```

pub mod cache;
pub mod client;
pub mod config;
pub mod cpu;
pub mod error;
pub mod format;
#[doc(hidden)]
pub mod fuzzing;
pub mod handler;
pub mod healthcheck;
pub mod info;
pub mod metrics;
pub mod negotiate;
pub mod origin;
pub mod pixels;
pub mod plan;
pub mod policy;
pub mod request;
pub mod response;
pub mod router;
pub mod server;
pub mod state;
pub mod upload;

pub use error::Error;
pub use format::Format;
pub use pixels::{Encoded, EngineConfig};
pub use request::options::Options;

/// The release version and the git commit it was built from (`0.1.0 (git 1a2b3c4d5e6f)`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("PIXGATE_GIT_HASH"),
    ")"
);

/// The git commit of this build (`unknown` when built outside a git checkout).
pub const GIT_HASH: &str = env!("PIXGATE_GIT_HASH");

/// Parses an option string with default server settings and runs the engine on `src`: what
/// `pixgate transform` does.
pub fn transform(src: &[u8], options: &str, cfg: &EngineConfig) -> Result<Encoded, Error> {
    transform_as(src, options, None, cfg)
}

/// [`transform`] with the output format the caller's file name asks for, used when the
/// options name none; options naming another format are refused (a `.png` file must not
/// receive JPEG bytes).
pub fn transform_as(
    src: &[u8],
    options: &str,
    wanted: Option<Format>,
    cfg: &EngineConfig,
) -> Result<Encoded, Error> {
    let defaults = Options::default();
    let presets = request::options::Presets::default();
    let ctx = request::options::ParseContext::operator(&presets, &defaults, now_unix());
    let mut opts = request::options::parse(options, &ctx)?;
    match (opts.format, wanted) {
        (Some(f), Some(w)) if f != w => {
            return Err(Error::FormatMismatch {
                options: f,
                file: w,
            });
        }
        (None, Some(w)) => opts.format = Some(w),
        _ => {}
    }
    Ok(pixels::transform(src, &opts, cfg)?)
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::path::PathBuf;

    /// A file under `tests/fixtures/`, with a clear failure when the folder is missing.
    pub fn fixture(rel: &str) -> PathBuf {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        assert!(
            root.is_dir(),
            "fixtures not found at {}: tests/fixtures is part of the repository",
            root.display()
        );
        root.join(rel)
    }
}
