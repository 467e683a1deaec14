//! The transform URL, split exactly as imgproxy does (digest §1.1): raw path cut at `?`,
//! signature segment, `%3A` → `:` in the options part, `scheme:/x` repaired in the plain part,
//! option segments up to the first segment without `:`, then a plain (percent-encoded, `@ext`)
//! or base64 (chunked, `.ext`) source. The signature is checked over the repaired path before
//! any option is parsed. Output: a [`ParsedRequest`] the rest of the server can trust.

use base64::Engine as _;
use percent_encoding::percent_decode_str;

use crate::format::Format;
use crate::request::options::{self, Options, OptionsError, ParseContext, Presets};
use crate::request::signature::{self, SignatureError, Signer};

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UrlError {
    #[error("invalid path: {0}")]
    Path(&'static str),
    #[error("invalid source URL: {0}")]
    Source(String),
    #[error(transparent)]
    Options(#[from] OptionsError),
    #[error(transparent)]
    Signature(#[from] SignatureError),
}

/// Where the source image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `http://` or `https://`.
    Http(String),
    /// `local:///path`: the path below the local root (leading `/` included, decoded).
    Local(String),
    /// `POST /upload`: the request body, named by its SHA-256 (hex).
    Upload(String),
}

impl Source {
    /// The URL as given (for the allow-list and logs).
    pub fn url(&self) -> String {
        match self {
            Source::Http(u) => u.clone(),
            Source::Local(p) => format!("local://{p}"),
            Source::Upload(h) => format!("upload:{h}"),
        }
    }

    /// The file name without extension, for `Content-Disposition` (imgproxy: the last path
    /// segment of the source URL, else `image`).
    pub fn stem(&self) -> String {
        let path = match self {
            Source::Http(u) => u
                .split(['?', '#'])
                .next()
                .unwrap_or_default()
                .splitn(4, '/')
                .nth(3)
                .unwrap_or_default()
                .to_string(),
            Source::Local(p) => p.clone(),
            Source::Upload(_) => "upload".into(),
        };
        let last = path.rsplit('/').next().unwrap_or_default();
        let stem = last.rsplit_once('.').map_or(last, |(s, _)| s);
        if stem.is_empty() {
            "image".into()
        } else {
            stem.to_string()
        }
    }
}

/// A transform request after URL parsing and signature verification.
#[derive(Debug, Clone)]
pub struct ParsedRequest {
    pub signer: Signer,
    pub options: Options,
    pub source: Source,
}

/// What URL parsing needs from the configuration.
pub struct UrlContext<'a> {
    pub keys: &'a [crate::request::signature::KeyPair],
    pub signature_size: usize,
    pub trusted_signatures: &'a [String],
    pub presets: &'a Presets,
    pub only_presets: bool,
    pub allow_security_options: bool,
    pub defaults: &'a Options,
    pub now_unix: i64,
}

impl UrlContext<'_> {
    /// What the option grammar needs of this context.
    pub fn parse_context(&self) -> ParseContext<'_> {
        ParseContext {
            presets: self.presets,
            allow_security_options: self.allow_security_options,
            now_unix: self.now_unix,
            defaults: self.defaults,
        }
    }
}

/// `%3A` → `:` before `/plain/`, and the first `scheme:/x` after it → `scheme://x`
/// (`local:/x` → `local:///x`): repairs of what CDNs and proxies do to URLs.
pub fn fix_path(path: &str) -> String {
    let (opts, plain) = match path.find("/plain/") {
        Some(i) => path.split_at(i),
        None => (path, ""),
    };
    let mut out = opts.replace("%3A", ":").replace("%3a", ":");
    if plain.is_empty() {
        return out;
    }
    let rest = &plain["/plain/".len()..];
    out.push_str("/plain/");
    match rest.find(":/") {
        Some(i) if !rest[i + 2..].starts_with('/') && !rest[..i].contains('/') => {
            let scheme = &rest[..i];
            out.push_str(scheme);
            out.push_str(if scheme == "local" { ":///" } else { "://" });
            out.push_str(&rest[i + 2..]);
        }
        _ => out.push_str(rest),
    }
    out
}

/// Splits a raw request target (still percent-encoded) into signature and signed path.
pub fn split_signature(target: &str) -> Result<(&str, String), UrlError> {
    let path = target.split('?').next().unwrap_or_default();
    let rest = path
        .strip_prefix('/')
        .ok_or(UrlError::Path("must start with /"))?;
    let (sig, after) = rest
        .split_once('/')
        .ok_or(UrlError::Path("no signature segment"))?;
    if sig.is_empty() {
        return Err(UrlError::Path("empty signature segment"));
    }
    Ok((sig, fix_path(&format!("/{after}"))))
}

/// The signer of a target and the signed path. Cheapest rejection first: the signature is
/// checked before any option is parsed.
fn verified(target: &str, ctx: &UrlContext<'_>) -> Result<(Signer, String), UrlError> {
    let (sig, signed_path) = split_signature(target)?;
    let signer = signature::verify(
        sig,
        &signed_path,
        ctx.keys,
        ctx.signature_size,
        ctx.trusted_signatures,
    )?;
    Ok((signer, signed_path))
}

/// Parses and verifies a transform request target (`/sig/opts.../source`).
pub fn parse(target: &str, ctx: &UrlContext<'_>) -> Result<ParsedRequest, UrlError> {
    let (signer, signed_path) = verified(target, ctx)?;
    let segments: Vec<&str> = signed_path[1..].split('/').collect();
    let pctx = ctx.parse_context();
    let (mut opts, source_segments) = if ctx.only_presets {
        let (first, rest) = segments
            .split_first()
            .ok_or(UrlError::Path("no presets segment"))?;
        (options::parse_presets_only(first, &pctx)?, rest)
    } else {
        let n = segments.iter().take_while(|s| s.contains(':')).count();
        let decoded: Vec<String> = segments[..n]
            .iter()
            .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
            .collect();
        (
            options::parse_segments(decoded.iter().map(String::as_str), &pctx)?,
            &segments[n..],
        )
    };
    let (source, ext) = parse_source(source_segments)?;
    if let Some(ext) = ext {
        if !opts.raw {
            let f = Format::from_name(&ext)
                .ok_or_else(|| UrlError::Source(format!("unknown extension `{ext}`")))?;
            opts.format = Some(f);
        }
    }
    Ok(ParsedRequest {
        signer,
        options: opts,
        source,
    })
}

/// Parses and verifies an upload target (`/sig/opts...`, the part after `/upload`): every
/// segment is an option; the source is the body, named once it has been read.
pub fn parse_upload(target: &str, ctx: &UrlContext<'_>) -> Result<ParsedRequest, UrlError> {
    let (signer, signed_path) = verified(target, ctx)?;
    let segments: Vec<&str> = signed_path[1..]
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    if let Some(s) = segments
        .iter()
        .find(|s| !s.contains(':') && !ctx.only_presets)
    {
        return Err(UrlError::Source(format!(
            "upload URLs carry options only (`{s}` is not one); the image is the body"
        )));
    }
    let pctx = ctx.parse_context();
    let decoded: Vec<String> = segments
        .iter()
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let options = if ctx.only_presets {
        match decoded.as_slice() {
            [] => options::parse_presets_only("", &pctx)?,
            [one] => options::parse_presets_only(one, &pctx)?,
            _ => return Err(UrlError::Path("only one presets segment")),
        }
    } else {
        options::parse_segments(decoded.iter().map(String::as_str), &pctx)?
    };
    Ok(ParsedRequest {
        signer,
        options,
        source: Source::Upload(String::new()),
    })
}

fn parse_source(segments: &[&str]) -> Result<(Source, Option<String>), UrlError> {
    let err = |m: &str| UrlError::Source(m.to_string());
    let (url, ext) = match segments.split_first() {
        None => return Err(err("image URL is empty")),
        Some((&"plain", rest)) => {
            if rest.is_empty() {
                return Err(err("image URL is empty"));
            }
            let joined = rest.join("/");
            let mut parts = joined.split('@');
            let url = parts.next().unwrap_or_default().to_string();
            let ext = parts.next().map(str::to_string);
            if parts.next().is_some() {
                return Err(err("more than one `@` (escape `@` in the URL as %40)"));
            }
            let url = percent_decode_str(&url)
                .decode_utf8()
                .map_err(|_| err("not UTF-8 after percent-decoding"))?
                .into_owned();
            (url, ext)
        }
        Some(_) => {
            let joined: String = segments.concat();
            let mut parts = joined.split('.');
            let enc = parts.next().unwrap_or_default();
            let ext = parts.next().map(str::to_string);
            if parts.next().is_some() {
                return Err(err("more than one `.` after a base64 URL"));
            }
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(enc.trim_end_matches('='))
                .map_err(|_| err("not base64url"))?;
            let url = String::from_utf8(bytes).map_err(|_| err("not UTF-8"))?;
            (url, ext)
        }
    };
    if url.is_empty() {
        return Err(err("image URL is empty"));
    }
    let ext = ext.filter(|e| !e.is_empty());
    let source = if let Some(path) = url.strip_prefix("local://") {
        if !path.starts_with('/') {
            return Err(err("local sources are local:///path"));
        }
        Source::Local(path.to_string())
    } else if url.starts_with("http://") || url.starts_with("https://") {
        Source::Http(url)
    } else {
        return Err(err("unsupported scheme (http, https and local are)"));
    };
    Ok((source, ext))
}

/// imgproxy's allow-list: prefix patterns where `*` matches any run of characters but `/`.
pub fn source_allowed(url: &str, patterns: &[String]) -> bool {
    patterns.is_empty()
        || patterns
            .iter()
            .any(|p| prefix_match(p.as_bytes(), url.as_bytes()))
}

fn prefix_match(pattern: &[u8], s: &[u8]) -> bool {
    match pattern.split_first() {
        None => true,
        Some((b'*', rest)) => {
            let mut i = 0;
            loop {
                if prefix_match(rest, &s[i..]) {
                    return true;
                }
                if i >= s.len() || s[i] == b'/' {
                    return false;
                }
                i += 1;
            }
        }
        Some((c, rest)) => s.first() == Some(c) && prefix_match(rest, &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::signature::KeyPair;

    fn ctx<'a>(keys: &'a [KeyPair], presets: &'a Presets, defaults: &'a Options) -> UrlContext<'a> {
        UrlContext {
            keys,
            signature_size: 32,
            trusted_signatures: &[],
            presets,
            only_presets: false,
            allow_security_options: false,
            defaults,
            now_unix: 1_700_000_000,
        }
    }

    fn parse_unsigned(target: &str) -> Result<ParsedRequest, UrlError> {
        let presets = Presets::default();
        let d = Options::default();
        parse(target, &ctx(&[], &presets, &d))
    }

    #[test]
    fn fixes_colons_and_collapsed_slashes() {
        assert_eq!(
            fix_path("/rs%3Afit%3A10/plain/http:/a.com/x"),
            "/rs:fit:10/plain/http://a.com/x"
        );
        assert_eq!(fix_path("/plain/local:/x.png"), "/plain/local:///x.png");
        assert_eq!(
            fix_path("/plain/https://a.com/b%3Ac"),
            "/plain/https://a.com/b%3Ac"
        );
        assert_eq!(fix_path("/w:1/aHR0cDovL2E"), "/w:1/aHR0cDovL2E");
    }

    #[test]
    fn plain_sources_with_extension() {
        let r = parse_unsigned(
            "/insecure/rs:fit:300:0/plain/https://a.com/b%20c.jpg%3Fx%3D1@webp?key=k",
        )
        .unwrap();
        assert_eq!(r.source, Source::Http("https://a.com/b c.jpg?x=1".into()));
        assert_eq!(r.options.format, Some(Format::Webp));
        assert_eq!(r.options.width, 300);
        assert_eq!(r.signer, Signer::Unsigned);
        let r = parse_unsigned("/_/f:png/plain/local:///dir/a.jpg@jpg").unwrap();
        assert_eq!(r.source, Source::Local("/dir/a.jpg".into()));
        assert_eq!(
            r.options.format,
            Some(Format::Jpeg),
            "extension overrides f:"
        );
        assert!(matches!(
            parse_unsigned("/_/plain/a@b@c"),
            Err(UrlError::Source(_))
        ));
        assert!(matches!(
            parse_unsigned("/_/plain/https://a.com/x@nope"),
            Err(UrlError::Source(_))
        ));
        assert!(matches!(
            parse_unsigned("/_/plain"),
            Err(UrlError::Source(_))
        ));
        assert!(matches!(
            parse_unsigned("/_/plain/ftp://a.com/x"),
            Err(UrlError::Source(_))
        ));
        assert!(matches!(
            parse_unsigned("/_/plain/local://etc/passwd"),
            Err(UrlError::Source(_))
        ));
    }

    #[test]
    fn base64_sources_chunked() {
        // "http://example.com/images/curiosity.jpg" in 16-character chunks (vector A).
        let r = parse_unsigned(
            "/x/rs:fill:300:400:0/aHR0cDovL2V4YW1w/bGUuY29tL2ltYWdl/cy9jdXJpb3NpdHku/anBn.png",
        )
        .unwrap();
        assert_eq!(
            r.source,
            Source::Http("http://example.com/images/curiosity.jpg".into())
        );
        assert_eq!(r.options.format, Some(Format::Png));
        let r =
            parse_unsigned("/x/aHR0cDovL2V4YW1wbGUuY29tL2ltYWdlcy9jdXJpb3NpdHkuanBn==").unwrap();
        assert_eq!(r.source.url(), "http://example.com/images/curiosity.jpg");
        assert!(matches!(
            parse_unsigned("/x/aHR0c.a.b"),
            Err(UrlError::Source(_))
        ));
        assert!(matches!(parse_unsigned("/x/!!!"), Err(UrlError::Source(_))));
    }

    #[test]
    fn path_errors() {
        assert!(matches!(parse_unsigned("/"), Err(UrlError::Path(_))));
        assert!(matches!(parse_unsigned("/sig"), Err(UrlError::Path(_))));
        assert!(matches!(
            parse_unsigned("//rs:fit:1:1/plain/x"),
            Err(UrlError::Path(_))
        ));
        assert!(matches!(
            parse_unsigned("/_/rs:fit:1:1"),
            Err(UrlError::Source(_))
        ));
        assert!(matches!(
            parse_unsigned("/rs:fit:1:1/plain/http://a/b"),
            Err(UrlError::Signature(SignatureError::LooksLikeOption(_)))
        ));
        assert!(matches!(
            parse_unsigned("/_/bogus:1/plain/http://a/b"),
            Err(UrlError::Options(_))
        ));
        assert!(matches!(
            parse_unsigned("/_/exp:1600000000/plain/http://a/b"),
            Err(UrlError::Options(OptionsError::Expired))
        ));
        let r = parse_unsigned("/_/fn:my%20photo/plain/http://a/b").unwrap();
        assert_eq!(r.options.filename.as_deref(), Some("my photo"));
    }

    #[test]
    fn signed_urls_and_colon_repair() {
        let keys = vec![KeyPair {
            tenant: "acme".into(),
            key: b"secret".to_vec(),
            salt: b"hello".to_vec(),
        }];
        let presets = Presets::default();
        let d = Options::default();
        let c = ctx(&keys, &presets, &d);
        let path =
            "/rs:fill:300:400:0/g:sm/aHR0cDovL2V4YW1w/bGUuY29tL2ltYWdl/cy9jdXJpb3NpdHku/anBn.png";
        let r = parse(
            &format!("/oKfUtW34Dvo2BGQehJFR4Nr0_rIjOtdtzJ3QFsUcXH8{path}"),
            &c,
        )
        .unwrap();
        assert_eq!(r.signer, Signer::Tenant("acme".into()));
        // A CDN that encoded the colons: the signature is over the repaired path.
        let encoded = path.replace(':', "%3A");
        let r = parse(
            &format!("/oKfUtW34Dvo2BGQehJFR4Nr0_rIjOtdtzJ3QFsUcXH8{encoded}"),
            &c,
        )
        .unwrap();
        assert_eq!(r.options.width, 300);
        assert!(matches!(
            parse(
                &format!("/oKfUtW34Dvo2BGQehJFR4Nr0_rIjOtdtzJ3QFsUcXH9{path}"),
                &c
            ),
            Err(UrlError::Signature(_))
        ));
    }

    #[test]
    fn only_presets_mode() {
        let defs = [
            ("thumb".to_string(), "rs:fill:100:100".to_string()),
            ("sq".to_string(), "q:50".to_string()),
        ]
        .into_iter()
        .collect();
        let presets = Presets::parse(&defs).unwrap();
        let d = Options::default();
        let mut c = ctx(&[], &presets, &d);
        c.only_presets = true;
        let r = parse("/_/thumb:sq/plain/http://a/b.jpg", &c).unwrap();
        assert_eq!((r.options.width, r.options.quality), (100, 50));
        let r = parse("/_/thumb/plain/http://a/b.jpg", &c).unwrap();
        assert_eq!(r.options.width, 100);
        assert!(parse("/_/w:10/plain/http://a/b.jpg", &c).is_err());
    }

    #[test]
    fn allow_list_prefix_patterns() {
        let p = vec![
            "https://img.example.com/".to_string(),
            "https://*.cdn.example.com/".to_string(),
        ];
        assert!(source_allowed("https://img.example.com/a.jpg", &p));
        assert!(source_allowed("https://eu.cdn.example.com/a.jpg", &p));
        assert!(!source_allowed(
            "https://img.example.com.evil.com/a.jpg",
            &p
        ));
        assert!(!source_allowed("https://a/b.cdn.example.com/x", &p));
        assert!(!source_allowed("http://img.example.com/a.jpg", &p));
        assert!(source_allowed("anything", &[]));
    }

    #[test]
    fn disposition_stems() {
        assert_eq!(
            Source::Http("https://a.com/x/photo.large.jpg?v=1".into()).stem(),
            "photo.large"
        );
        assert_eq!(Source::Http("https://a.com/".into()).stem(), "image");
        assert_eq!(Source::Http("https://a.com".into()).stem(), "image");
        assert_eq!(Source::Local("/dir/cat.png".into()).stem(), "cat");
    }
}
