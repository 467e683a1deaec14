//! `POST /upload` bodies: the image as the raw body or as the `file` part of a
//! `multipart/form-data` form, read within the source size limit (a declared length over it
//! is refused before reading, a streamed one as soon as it passes it), the ids of the
//! short-lived result URLs that JSON answers point to, and that JSON answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::HeaderMap;
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};

use crate::error::Error;

/// Bytes a multipart form may carry besides the file (boundaries, part headers, small
/// fields such as a JSON `data` part).
const MULTIPART_OVERHEAD: u64 = 64 * 1024;

/// Reads the uploaded image from a request body, at most `limit` bytes of image.
pub async fn read_body(headers: &HeaderMap, body: Incoming, limit: u64) -> Result<Bytes, Error> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let multipart = content_type
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("multipart/form-data");
    let allowed = if multipart {
        limit.saturating_add(MULTIPART_OVERHEAD)
    } else {
        limit
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > allowed) {
        // Refused on the header: not one byte of the body is read.
        return Err(Error::BodyTooLarge(limit));
    }
    if multipart {
        let boundary = multer::parse_boundary(content_type)
            .map_err(|e| Error::BadUpload(format!("multipart without a usable boundary: {e}")))?;
        read_file_part(body, &boundary, allowed, limit).await
    } else {
        read_raw(body, limit).await
    }
}

async fn read_raw(mut body: Incoming, limit: u64) -> Result<Bytes, Error> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Error::BadUpload(format!("reading the body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() as u64 + data.len() as u64 > limit {
                return Err(Error::BodyTooLarge(limit));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// The `file` part of a form; other parts are skipped (within the overall bound).
async fn read_file_part(
    body: Incoming,
    boundary: &str,
    allowed: u64,
    limit: u64,
) -> Result<Bytes, Error> {
    // The stream stops with an error once the whole body passes `allowed`; the flag tells
    // that error apart from a malformed form.
    let over = Arc::new(AtomicBool::new(false));
    let seen = over.clone();
    let stream = futures_util::stream::unfold((body, 0u64), move |(mut body, read)| {
        let over = over.clone();
        async move {
            loop {
                match body.frame().await? {
                    Ok(frame) => {
                        let Ok(data) = frame.into_data() else {
                            continue;
                        };
                        let read = read + data.len() as u64;
                        if read > allowed {
                            over.store(true, Ordering::Relaxed);
                            return Some((
                                Err(std::io::Error::other("body too large")),
                                (body, read),
                            ));
                        }
                        return Some((Ok::<Bytes, std::io::Error>(data), (body, read)));
                    }
                    Err(e) => return Some((Err(std::io::Error::other(e)), (body, read))),
                }
            }
        }
    });
    file_part(stream, boundary, limit, &seen).await
}

/// The `file` part of a form read from `stream`; `over` tells a stream cut for its size
/// apart from a malformed form. Separate from the HTTP body so the parser can be fuzzed.
pub async fn file_part<S>(
    stream: S,
    boundary: &str,
    limit: u64,
    over: &AtomicBool,
) -> Result<Bytes, Error>
where
    S: futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
{
    let mut form = multer::Multipart::new(stream, boundary);
    let failed = |e: multer::Error| {
        if over.load(Ordering::Relaxed) {
            Error::BodyTooLarge(limit)
        } else {
            Error::BadUpload(format!("malformed multipart form: {e}"))
        }
    };
    while let Some(mut field) = form.next_field().await.map_err(failed)? {
        if field.name() != Some("file") {
            while field.chunk().await.map_err(failed)?.is_some() {}
            continue;
        }
        let mut buf = BytesMut::new();
        while let Some(chunk) = field.chunk().await.map_err(failed)? {
            if buf.len() as u64 + chunk.len() as u64 > limit {
                return Err(Error::BodyTooLarge(limit));
            }
            buf.extend_from_slice(&chunk);
        }
        return Ok(buf.freeze());
    }
    Err(Error::BadUpload(
        "the form has no `file` part (send the image as `file`, or as the raw body)".into(),
    ))
}

/// Bytes of a refused upload's body read before the connection is dropped (nginx's
/// lingering close, for clients that send the whole body before reading the answer).
const LINGER_BYTES: u64 = 2 * 1024 * 1024;
/// Time a refused upload's body may take to be drained.
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads and drops up to [`LINGER_BYTES`] of a body within [`LINGER_TIME`].
pub async fn linger(mut body: Incoming) {
    let drain = async {
        let mut read = 0u64;
        while read < LINGER_BYTES {
            match body.frame().await {
                Some(Ok(f)) => read += f.data_ref().map_or(0, |d| d.len() as u64),
                _ => return,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

/// A new unguessable id for a result URL: 128 bits from the OS.
pub fn result_id() -> String {
    let mut b = [0u8; 16];
    // getrandom fails only without any OS entropy source; a process cannot serve then.
    getrandom::fill(&mut b).expect("OS random source");
    hex::encode(b)
}

/// The cache key of an uploaded result in the source cache tier.
pub fn result_key(id: &str) -> String {
    format!("upload-result:{id}")
}

/// Whether a routing segment has the shape of a request id (`[A-Za-z0-9_-]{1,64}`).
pub fn valid_route(route: &str) -> bool {
    (1..=64).contains(&route.len())
        && route
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether `{route}/{random}` from a URL has the shape the upload handler makes.
pub fn valid_id(id: &str) -> bool {
    let Some((route, random)) = id.split_once('/') else {
        return false;
    };
    valid_route(route)
        && random.len() == 32
        && random
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// What processing an upload learnt besides the bytes: the JSON answer's facts.
pub struct Facts {
    pub input: crate::pixels::SourceInfo,
    pub input_bytes: usize,
    pub width: u32,
    pub height: u32,
}

/// Whether `Accept` asks for the JSON answer rather than the image.
pub fn wants_json(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',')
            .any(|t| t.split(';').next().unwrap_or_default().trim() == "application/json")
    })
}

/// The JSON answer: input and output facts, and where the result waits for how long.
pub fn describe(
    facts: &Facts,
    result: &crate::response::CachedResult,
    url: &str,
    expires_in: std::time::Duration,
) -> String {
    serde_json::json!({
        "input": {
            "format": facts.input.format.ext(),
            "width": facts.input.width,
            "height": facts.input.height,
            "bytes": facts.input_bytes,
        },
        "output": {
            "format": result.format.ext(),
            "width": facts.width,
            "height": facts.height,
            "bytes": result.bytes.len(),
        },
        "url": url,
        "expires_in": expires_in.as_secs(),
    })
    .to_string()
}
