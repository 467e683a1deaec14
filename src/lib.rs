//! pixgate: an imgproxy-compatible image transform engine and (next) proxy.
//!
//! ```text
//! request::options   option string → Options (typed, canonical form = cache key)   404/403
//! pixels::prepare    bytes + Options → Job: probe header, limits, format, plan        422
//!   pixels::probe      magic bytes → SourceInfo (format, size, orientation, frames)
//!   plan::build        Options + header facts → Plan (pure geometry, result limits)
//! Job::run           decode (DCT-scaled JPEG) → ops (orient, crop+resize, embed,
//!                    flatten) → encode (mozjpeg, libwebp, png, ...)                   422/500
//! error::Error       the one place failures become statuses and stable codes
//! ```

pub mod error;
pub mod format;
pub mod pixels;
pub mod plan;
pub mod request;

pub use error::Error;
pub use format::Format;
pub use pixels::{Encoded, EngineConfig};
pub use request::options::Options;

/// Parses an option string with default server settings and runs the engine on `src`: what
/// `pixgate transform` does.
pub fn transform(src: &[u8], options: &str, cfg: &EngineConfig) -> Result<Encoded, Error> {
    let defaults = Options::default();
    let presets = request::options::Presets::default();
    let ctx = request::options::ParseContext {
        presets: &presets,
        allow_security_options: true,
        now_unix: now_unix(),
        defaults: &defaults,
    };
    let opts = request::options::parse(options, &ctx)?;
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

    /// A file under `../shared/fixtures/`, with a clear failure when the folder is missing.
    pub fn fixture(rel: &str) -> PathBuf {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures");
        assert!(
            root.is_dir(),
            "fixtures not found at {}: tests need ../shared/fixtures beside the crate",
            root.display()
        );
        root.join(rel)
    }
}
