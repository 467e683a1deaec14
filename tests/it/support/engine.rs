//! The engine called in-process, as `pixgate transform` does: results as bytes or decoded.

use pixgate::EngineConfig;

use super::image::decode;

/// The encoded result of `opts` on `src`; a failure fails the test with the options.
pub fn encode(src: &[u8], opts: &str, cfg: &EngineConfig) -> Vec<u8> {
    pixgate::transform(src, opts, cfg)
        .unwrap_or_else(|e| panic!("{opts}: {e}"))
        .bytes
}

/// The result of `opts` on `src` as PNG, decoded.
pub fn render_with(src: &[u8], opts: &str, cfg: &EngineConfig) -> image::DynamicImage {
    decode(&encode(src, &format!("{opts}/f:png"), cfg))
}

/// [`render_with`] on the default engine configuration.
pub fn render(src: &[u8], opts: &str) -> image::DynamicImage {
    render_with(src, opts, &EngineConfig::default())
}
