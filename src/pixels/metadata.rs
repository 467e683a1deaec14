//! Source metadata: the ceilings every ICC profile and EXIF block is held to (whatever the
//! container, compressed or not: a PNG iCCP chunk is inflated only up to the ceiling, and a
//! larger one is dropped while the image still decodes), and what survives
//! `strip_metadata`: with `keep_copyright`, the EXIF Copyright and Artist tags of the source,
//! rewritten as a minimal EXIF block (kamadak-exif reads and writes it; everything else, GPS
//! positions and camera serials included, is dropped). Also the container side of metadata
//! that probe and decoders share: JPEG APP2 ICC chunks joined, WebP ICCP/EXIF chunks found.

use std::borrow::Cow;

use exif::{In, Tag};

/// Largest ICC profile kept, bytes. Real profiles are 0.5–60 KB (LUT-based print profiles
/// reach ~1 MB); anything larger is treated as absent (the pixels as sRGB).
pub const MAX_ICC_BYTES: usize = 4 << 20;
/// Largest EXIF block kept, bytes (JPEG's APP1 cannot carry more than 64 KB; other
/// containers get this much room).
pub const MAX_EXIF_BYTES: usize = 1 << 20;

/// `icc` when it is within [`MAX_ICC_BYTES`].
pub fn bounded_icc(icc: Option<Vec<u8>>) -> Option<Vec<u8>> {
    icc.filter(|p| p.len() <= MAX_ICC_BYTES)
}

/// `exif` when it is within [`MAX_EXIF_BYTES`].
pub fn bounded_exif(exif: Option<Vec<u8>>) -> Option<Vec<u8>> {
    exif.filter(|e| e.len() <= MAX_EXIF_BYTES)
}

/// A PNG whose iCCP chunk inflates within [`MAX_ICC_BYTES`]: the bytes themselves; when the
/// chunk inflates past it (or not at all), a copy without that chunk, so the decoder never
/// inflates it (the png crate would, up to its allocation limit). Inflating stops at the
/// ceiling: a 512 MiB zlib bomb costs 4 MiB here.
pub fn png_within_limits(data: &[u8]) -> Cow<'_, [u8]> {
    let Some((start, end, chunk)) = png_chunk(data, b"iCCP") else {
        return Cow::Borrowed(data);
    };
    // Keyword (1-79 bytes), NUL, compression method (0), then the zlib stream.
    let inflates = chunk
        .iter()
        .position(|&b| b == 0)
        .and_then(|nul| chunk.get(nul + 2..))
        .is_some_and(|z| fdeflate::decompress_to_vec_bounded(z, MAX_ICC_BYTES).is_ok());
    if inflates {
        return Cow::Borrowed(data);
    }
    tracing::debug!("PNG iCCP chunk inflates past {MAX_ICC_BYTES} bytes or not at all: dropped");
    let mut copy = Vec::with_capacity(data.len() - (end - start));
    copy.extend_from_slice(&data[..start]);
    copy.extend_from_slice(&data[end..]);
    Cow::Owned(copy)
}

/// The first chunk of `kind` before the image data: (its offset, the offset after its CRC,
/// its data).
fn png_chunk<'a>(data: &'a [u8], kind: &[u8; 4]) -> Option<(usize, usize, &'a [u8])> {
    let mut pos = 8;
    while pos + 12 <= data.len() {
        let len = u32::from_be_bytes(data[pos..pos + 4].try_into().ok()?) as usize;
        let end = pos.checked_add(12)?.checked_add(len)?;
        let t = &data[pos + 4..pos + 8];
        if t == b"IDAT" || t == b"IEND" || end > data.len() {
            return None;
        }
        if t == kind {
            return Some((pos, end, &data[pos + 8..pos + 8 + len]));
        }
        pos = end;
    }
    None
}

/// A TIFF-structured EXIF block holding only the source's Copyright and Artist, or `None`
/// when the source has neither (or its EXIF is unreadable).
pub fn copyright_only(tiff: &[u8]) -> Option<Vec<u8>> {
    let exif = exif::Reader::new().read_raw(tiff.to_vec()).ok()?;
    let kept: Vec<&exif::Field> = [Tag::Copyright, Tag::Artist]
        .iter()
        .filter_map(|t| exif.get_field(*t, In::PRIMARY))
        .collect();
    if kept.is_empty() {
        return None;
    }
    let mut w = exif::experimental::Writer::new();
    for f in &kept {
        w.push_field(f);
    }
    let mut out = std::io::Cursor::new(Vec::new());
    w.write(&mut out, exif.little_endian()).ok()?;
    Some(out.into_inner())
}

/// The EXIF facts `/info` reports.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ExifSummary {
    /// Make and model, e.g. "Apple iPhone 15 Pro".
    pub camera: Option<String>,
    /// DateTimeOriginal as written, e.g. "2024:05:01 12:30:00".
    pub taken_at: Option<String>,
    pub copyright: Option<String>,
}

/// The camera, capture time and copyright of a TIFF-structured EXIF block.
pub fn summary(tiff: &[u8]) -> ExifSummary {
    let Ok(exif) = exif::Reader::new().read_raw(tiff.to_vec()) else {
        return ExifSummary::default();
    };
    let text = |tag: Tag| {
        exif.get_field(tag, In::PRIMARY)
            .and_then(|f| match &f.value {
                exif::Value::Ascii(parts) => {
                    let s: String = parts
                        .iter()
                        .map(|p| String::from_utf8_lossy(p).trim().to_string())
                        .filter(|p| !p.is_empty())
                        .collect::<Vec<_>>()
                        .join(" ");
                    // Bounded: the JSON answer must stay small whatever the file says.
                    (!s.is_empty()).then(|| s.chars().take(200).collect::<String>())
                }
                _ => None,
            })
    };
    let camera = match (text(Tag::Make), text(Tag::Model)) {
        // Models often repeat the make ("Canon" + "Canon EOS R5").
        (Some(make), Some(model)) if model.starts_with(&make) => Some(model),
        (Some(make), Some(model)) => Some(format!("{make} {model}")),
        (make, model) => make.or(model),
    };
    ExifSummary {
        camera,
        taken_at: text(Tag::DateTimeOriginal).or_else(|| text(Tag::DateTime)),
        copyright: text(Tag::Copyright),
    }
}

/// Joins ICC_PROFILE APP2 chunks in sequence order; an incomplete or inconsistent set, or
/// one larger than `metadata::MAX_ICC_BYTES`, is dropped (the image is then treated as
/// sRGB), never an error.
pub(crate) fn assemble_icc(mut chunks: Vec<(u8, u8, &[u8])>) -> Option<Vec<u8>> {
    let size: usize = chunks.iter().map(|c| c.2.len()).sum();
    if size > MAX_ICC_BYTES {
        return None;
    }
    let total = chunks.first()?.1;
    if total == 0 || chunks.len() != usize::from(total) || chunks.iter().any(|c| c.1 != total) {
        return None;
    }
    chunks.sort_by_key(|c| c.0);
    if chunks
        .iter()
        .enumerate()
        .any(|(i, c)| usize::from(c.0) != i + 1)
    {
        return None;
    }
    let profile: Vec<u8> = chunks.iter().flat_map(|c| c.2.iter().copied()).collect();
    // An ICC profile starts with its own size and carries `acsp` at offset 36.
    (profile.len() >= 128 && &profile[36..40] == b"acsp").then_some(profile)
}

/// The ICC profile of a WebP file.
pub fn webp_icc(data: &[u8]) -> Option<Vec<u8>> {
    webp_chunk(data, b"ICCP", MAX_ICC_BYTES)
}

/// The EXIF chunk of a WebP file, as stored.
pub fn webp_exif(data: &[u8]) -> Option<Vec<u8>> {
    webp_chunk(data, b"EXIF", MAX_EXIF_BYTES)
}

/// A top-level RIFF chunk's payload (ICCP, EXIF), bounded by the data; `None` when it is
/// larger than `max` (dropped, never copied).
fn webp_chunk(d: &[u8], kind: &[u8; 4], max: usize) -> Option<Vec<u8>> {
    let mut pos = 12;
    while pos + 8 <= d.len() {
        let len = u32::from_le_bytes([d[pos + 4], d[pos + 5], d[pos + 6], d[pos + 7]]) as usize;
        let end = (pos + 8).checked_add(len)?;
        if &d[pos..pos + 4] == kind {
            return d
                .get(pos + 8..end)
                .filter(|c| c.len() <= max)
                .map(<[u8]>::to_vec);
        }
        pos = end + (len & 1);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use exif::{Field, Value};

    fn block(fields: &[Field]) -> Vec<u8> {
        let mut w = exif::experimental::Writer::new();
        for f in fields {
            w.push_field(f);
        }
        let mut out = std::io::Cursor::new(Vec::new());
        w.write(&mut out, false).unwrap();
        out.into_inner()
    }

    fn ascii(tag: Tag, s: &str) -> Field {
        Field {
            tag,
            ifd_num: In::PRIMARY,
            value: Value::Ascii(vec![s.as_bytes().to_vec()]),
        }
    }

    #[test]
    fn keeps_copyright_and_artist_and_nothing_else() {
        let src = block(&[
            ascii(Tag::Copyright, "(c) 2026 Ada"),
            ascii(Tag::Artist, "Ada"),
            ascii(Tag::Make, "Camera Co"),
            ascii(Tag::BodySerialNumber, "SN123"),
        ]);
        let kept = copyright_only(&src).unwrap();
        let exif = exif::Reader::new().read_raw(kept).unwrap();
        let tags: Vec<Tag> = exif.fields().map(|f| f.tag).collect();
        assert_eq!(tags.len(), 2, "{tags:?}");
        let c = exif.get_field(Tag::Copyright, In::PRIMARY).unwrap();
        assert_eq!(c.display_value().to_string(), "\"(c) 2026 Ada\"");
        assert!(exif.get_field(Tag::Artist, In::PRIMARY).is_some());
    }

    #[test]
    fn nothing_to_keep_is_none() {
        assert_eq!(
            copyright_only(&block(&[ascii(Tag::Make, "Camera Co")])),
            None
        );
        assert_eq!(copyright_only(b"not exif"), None);
        assert_eq!(copyright_only(&[]), None);
    }
}
