//! Header-only facts about a source: its real format (from magic bytes, never from a name or a
//! Content-Type), stored size, EXIF orientation, frame count, alpha and ICC presence. Reads
//! only container structure, never allocates a pixel buffer, and is bounded by the input length:
//! this is where pixel floods and size lies are refused, before any decoder sees the bytes.

pub use super::types::{ProbeError, SourceInfo};
use crate::format::Format;

/// Sniffs the format from magic bytes; `None` means "not an image we know".
pub fn sniff(data: &[u8]) -> Option<Format> {
    if data.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Some(Format::Jpeg);
    }
    if data.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Some(Format::Png);
    }
    if data.starts_with(b"GIF87a") || data.starts_with(b"GIF89a") {
        return Some(Format::Gif);
    }
    if data.len() >= 12 && &data[0..4] == b"RIFF" && &data[8..12] == b"WEBP" {
        return Some(Format::Webp);
    }
    if data.len() >= 12 && &data[4..8] == b"ftyp" {
        let size = be32(data, 0) as usize;
        let end = size.clamp(12, data.len().min(256));
        // The major brand and the compatible brands, 4 bytes each.
        let brands: Vec<&[u8]> = std::iter::once(&data[8..12])
            .chain(data[16.min(end)..end].chunks_exact(4))
            .collect();
        if brands.iter().any(|b| *b == b"avif" || *b == b"avis") {
            return Some(Format::Avif);
        }
        let heif: [&[u8]; 6] = [b"heic", b"heix", b"mif1", b"msf1", b"heim", b"heis"];
        if brands.iter().any(|b| heif.contains(b)) {
            return Some(Format::Heic);
        }
        return None;
    }
    if data.starts_with(b"BM") && data.len() >= 26 {
        return Some(Format::Bmp);
    }
    if data.starts_with(b"II*\0") || data.starts_with(b"MM\0*") {
        return Some(Format::Tiff);
    }
    if data.len() >= 6 && data[0..4] == [0, 0, 1, 0] && (data[4] != 0 || data[5] != 0) {
        return Some(Format::Ico);
    }
    if data.starts_with(&[0xFF, 0x0A]) || data.starts_with(b"\0\0\0\x0cJXL \r\n\x87\n") {
        return Some(Format::Jxl);
    }
    if looks_like_svg(data) {
        return Some(Format::Svg);
    }
    None
}

/// An SVG document: optional BOM, XML declaration, comments, doctype, then `<svg`.
fn looks_like_svg(data: &[u8]) -> bool {
    let head = &data[..data.len().min(32 * 1024)];
    let Ok(text) = std::str::from_utf8(head).or_else(|e| {
        // A cut in the middle of a multi-byte character at the 32 KiB boundary is fine.
        std::str::from_utf8(&head[..e.valid_up_to()])
    }) else {
        return false;
    };
    let mut rest = text.trim_start_matches('\u{feff}').trim_start();
    loop {
        if rest.starts_with("<svg") {
            return true;
        }
        let skip = if rest.starts_with("<?") {
            rest.find("?>").map(|i| i + 2)
        } else if rest.starts_with("<!--") {
            rest.find("-->").map(|i| i + 3)
        } else if rest.starts_with("<!") {
            // A DOCTYPE, possibly with an internal subset.
            match (rest.find('['), rest.find('>')) {
                (Some(b), Some(g)) if b < g => rest.find("]>").map(|i| i + 2),
                (_, Some(g)) => Some(g + 1),
                _ => None,
            }
        } else {
            None
        };
        match skip {
            Some(n) => rest = rest[n..].trim_start(),
            None => return false,
        }
    }
}

fn be16(d: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([d[at], d[at + 1]])
}
fn be32(d: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]])
}
fn le16(d: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([d[at], d[at + 1]])
}
fn le24(d: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([d[at], d[at + 1], d[at + 2], 0])
}
fn le32(d: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]])
}

/// Reads the header of `data`. Formats whose decoding this build does not support are still
/// probed (their facts feed `/info` and clear errors).
pub fn probe(data: &[u8]) -> Result<SourceInfo, ProbeError> {
    if data.is_empty() {
        return Err(ProbeError::Empty);
    }
    let format = sniff(data).ok_or(ProbeError::NotAnImage)?;
    let info = match format {
        Format::Jpeg => probe_jpeg(data)?,
        Format::Png => probe_png(data)?,
        Format::Gif => probe_gif(data)?,
        Format::Webp => probe_webp(data)?,
        Format::Tiff => probe_tiff(data)?,
        Format::Svg => super::svg::probe(data)?,
        Format::Avif => super::avif::probe(data)?,
        other => probe_generic(other, data)?,
    };
    if info.width == 0 || info.height == 0 {
        return Err(ProbeError::Corrupt(format, "zero width or height"));
    }
    Ok(info)
}

fn probe_generic(format: Format, data: &[u8]) -> Result<SourceInfo, ProbeError> {
    let size =
        imagesize::blob_size(data).map_err(|_| ProbeError::Corrupt(format, "unreadable header"))?;
    let w = u32::try_from(size.width).map_err(|_| ProbeError::Corrupt(format, "width"))?;
    let h = u32::try_from(size.height).map_err(|_| ProbeError::Corrupt(format, "height"))?;
    let mut info = SourceInfo::new(format, w, h);
    info.has_alpha = matches!(format, Format::Ico | Format::Avif);
    Ok(info)
}

/// JPEG marker segments up to the first scan: `(marker, payload)`, bounded by the data.
/// Markers without a payload (RSTn, TEM) are skipped; fill bytes are allowed.
struct JpegSegments<'a> {
    d: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> Iterator for JpegSegments<'a> {
    type Item = Result<(u8, &'a [u8]), ProbeError>;

    fn next(&mut self) -> Option<Self::Item> {
        const F: Format = Format::Jpeg;
        let d = self.d;
        loop {
            if self.done {
                return None;
            }
            while self.pos + 1 < d.len() && d[self.pos] == 0xFF && d[self.pos + 1] == 0xFF {
                self.pos += 1;
            }
            let pos = self.pos;
            if pos + 4 > d.len() {
                self.done = true;
                return Some(Err(ProbeError::Corrupt(
                    F,
                    "truncated before the frame header",
                )));
            }
            if d[pos] != 0xFF {
                self.done = true;
                return Some(Err(ProbeError::Corrupt(F, "expected a marker")));
            }
            let marker = d[pos + 1];
            if (0xD0..=0xD7).contains(&marker) || marker == 0x01 {
                self.pos += 2;
                continue;
            }
            let len = usize::from(be16(d, pos + 2));
            if len < 2 || pos + 2 + len > d.len() {
                self.done = true;
                return Some(Err(ProbeError::Corrupt(F, "segment runs past the end")));
            }
            self.pos = pos + 2 + len;
            // The scan follows SOS; nothing after it is header.
            self.done = marker == 0xDA || marker == 0xD9;
            return Some(Ok((marker, &d[pos + 4..pos + 2 + len])));
        }
    }
}

fn jpeg_segments(d: &[u8]) -> JpegSegments<'_> {
    JpegSegments {
        d,
        pos: 2,
        done: false,
    }
}

fn probe_jpeg(d: &[u8]) -> Result<SourceInfo, ProbeError> {
    const F: Format = Format::Jpeg;
    let mut info: Option<SourceInfo> = None;
    let mut orientation = 1;
    let mut has_icc = false;
    let mut adobe = false;
    let mut scan = false;
    for segment in jpeg_segments(d) {
        let (marker, seg) = segment?;
        match marker {
            0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                if seg.len() < 6 {
                    return Err(ProbeError::Corrupt(F, "short frame header"));
                }
                if seg[0] != 8 {
                    return Err(ProbeError::Unsupported(
                        F,
                        "sample precision other than 8 bits",
                    ));
                }
                if marker == 0xC3 || marker >= 0xC5 && marker != 0xC9 && marker != 0xCA {
                    return Err(ProbeError::Unsupported(
                        F,
                        "lossless or hierarchical coding",
                    ));
                }
                let h = u32::from(be16(seg, 1));
                let w = u32::from(be16(seg, 3));
                let comps = seg[5];
                let mut i = SourceInfo::new(F, w, h);
                i.cmyk = comps == 4;
                info = Some(i);
            }
            0xE1 if seg.starts_with(b"Exif\0\0") && orientation == 1 => {
                orientation = exif_orientation(&seg[6..]).unwrap_or(1);
            }
            0xE2 if seg.starts_with(b"ICC_PROFILE\0") => has_icc = true,
            0xEE if seg.starts_with(b"Adobe") => adobe = true,
            0xDA => scan = true,
            0xD9 => return Err(ProbeError::Corrupt(F, "end of image before any scan")),
            _ => {}
        }
    }
    if !scan {
        return Err(ProbeError::Corrupt(F, "truncated before the frame header"));
    }
    let mut info = info.ok_or(ProbeError::Corrupt(F, "no frame header before the scan"))?;
    info.orientation = orientation;
    info.has_icc = has_icc;
    info.adobe = adobe;
    Ok(info)
}

/// The ICC profile and EXIF block (TIFF structure) a source carries, read from its header
/// structures only (no pixel decoding); for `/info`.
pub fn header_metadata(d: &[u8], format: Format) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    match format {
        Format::Jpeg => {
            let mut exif = None;
            let mut chunks: Vec<(u8, u8, &[u8])> = Vec::new();
            for (marker, seg) in jpeg_segments(d).map_while(Result::ok) {
                match marker {
                    0xE1 if exif.is_none() && seg.starts_with(b"Exif\0\0") => {
                        exif = Some(seg[6..].to_vec());
                    }
                    0xE2 if seg.len() > 14 && seg.starts_with(b"ICC_PROFILE\0") => {
                        chunks.push((seg[12], seg[13], &seg[14..]));
                    }
                    _ => {}
                }
            }
            (super::metadata::assemble_icc(chunks), exif)
        }
        Format::Webp => (
            super::metadata::webp_icc(d),
            // Some writers keep the JPEG-style prefix.
            super::metadata::webp_exif(d).map(|e| match e.strip_prefix(b"Exif\0\0") {
                Some(tiff) => tiff.to_vec(),
                None => e,
            }),
        ),
        Format::Avif => super::avif::metadata(d),
        Format::Png | Format::Tiff => {
            use super::metadata::{bounded_exif, bounded_icc, png_within_limits};
            let (image_format, d) = if format == Format::Png {
                (image::ImageFormat::Png, png_within_limits(d))
            } else {
                (image::ImageFormat::Tiff, std::borrow::Cow::Borrowed(d))
            };
            let reader =
                image::ImageReader::with_format(std::io::Cursor::new(&d[..]), image_format);
            match reader.into_decoder() {
                Ok(mut dec) => {
                    use image::ImageDecoder;
                    (
                        bounded_icc(dec.icc_profile().ok().flatten()),
                        bounded_exif(dec.exif_metadata().ok().flatten()),
                    )
                }
                Err(_) => (None, None),
            }
        }
        _ => (None, None),
    }
}

/// Orientation tag (0x0112) of IFD0 in a TIFF structure (EXIF payload or a TIFF file).
/// Bounded: reads IFD0 only.
pub fn exif_orientation(tiff: &[u8]) -> Option<u8> {
    let (at, le) = orientation_slot(tiff)?;
    let b = [tiff[at], tiff[at + 1]];
    let v = if le {
        u16::from_le_bytes(b)
    } else {
        u16::from_be_bytes(b)
    };
    (1..=8).contains(&v).then_some(v as u8)
}

/// Marks a TIFF structure's orientation as upright (1), if it has the tag.
pub fn reset_exif_orientation(tiff: &mut [u8]) {
    if let Some((at, le)) = orientation_slot(tiff) {
        let one = if le {
            1u16.to_le_bytes()
        } else {
            1u16.to_be_bytes()
        };
        tiff[at..at + 2].copy_from_slice(&one);
    }
}

/// Offset of the orientation tag's value in IFD0, and whether the structure is little-endian.
fn orientation_slot(tiff: &[u8]) -> Option<(usize, bool)> {
    let le = match tiff.get(0..2)? {
        b"II" => true,
        b"MM" => false,
        _ => return None,
    };
    let r16 = |at: usize| -> Option<u16> {
        let b = tiff.get(at..at + 2)?;
        Some(if le {
            u16::from_le_bytes([b[0], b[1]])
        } else {
            u16::from_be_bytes([b[0], b[1]])
        })
    };
    let ifd = {
        let b = tiff.get(4..8)?;
        let v = [b[0], b[1], b[2], b[3]];
        (if le {
            u32::from_le_bytes(v)
        } else {
            u32::from_be_bytes(v)
        }) as usize
    };
    let count = usize::from(r16(ifd)?);
    (0..count.min(512))
        .map(|i| ifd + 2 + i * 12)
        .find(|&e| r16(e) == Some(0x0112))
        .map(|e| e + 8)
        .filter(|&at| at + 2 <= tiff.len())
        .map(|at| (at, le))
}

fn probe_png(d: &[u8]) -> Result<SourceInfo, ProbeError> {
    const F: Format = Format::Png;
    if d.len() < 33 {
        return Err(ProbeError::Corrupt(F, "truncated inside the header"));
    }
    if &d[12..16] != b"IHDR" || be32(d, 8) != 13 {
        return Err(ProbeError::Corrupt(F, "IHDR is not the first chunk"));
    }
    if crc32fast::hash(&d[12..29]) != be32(d, 29) {
        return Err(ProbeError::Corrupt(F, "IHDR checksum mismatch"));
    }
    let (w, h) = (be32(d, 16), be32(d, 20));
    if w > i32::MAX as u32 || h > i32::MAX as u32 {
        return Err(ProbeError::Corrupt(F, "dimension out of range"));
    }
    let color_type = d[25];
    let mut info = SourceInfo::new(F, w, h);
    info.has_alpha = matches!(color_type, 4 | 6);
    let mut pos = 33;
    // Walk ancillary chunks up to the first IDAT: acTL (frames), tRNS (alpha), iCCP, eXIf.
    while pos + 8 <= d.len() {
        let len = be32(d, pos) as usize;
        let kind = &d[pos + 4..pos + 8];
        let Some(end) = (pos + 8).checked_add(len).filter(|&e| e <= d.len()) else {
            break;
        };
        let body = &d[pos + 8..end];
        match kind {
            b"IDAT" | b"IEND" => break,
            b"acTL" if body.len() >= 4 => info.frames = be32(body, 0).max(1),
            // The png crate indexes the palette in threes (found by fuzzing: a 13-byte PLTE
            // panicked inside it).
            b"PLTE" if body.is_empty() || body.len() % 3 != 0 || body.len() > 768 => {
                return Err(ProbeError::Corrupt(F, "PLTE is not 1 to 256 RGB entries"));
            }
            b"tRNS" => info.has_alpha = true,
            b"iCCP" => info.has_icc = true,
            b"eXIf" => info.orientation = exif_orientation(body).unwrap_or(1),
            _ => {}
        }
        pos = end + 4;
    }
    Ok(info)
}

fn probe_gif(d: &[u8]) -> Result<SourceInfo, ProbeError> {
    const F: Format = Format::Gif;
    if d.len() < 13 {
        return Err(ProbeError::Corrupt(F, "truncated inside the header"));
    }
    let (w, h) = (u32::from(le16(d, 6)), u32::from(le16(d, 8)));
    let mut info = SourceInfo::new(F, w, h);
    let flags = d[10];
    let mut pos = 13;
    if flags & 0x80 != 0 {
        pos += 3 << ((flags & 7) + 1);
    }
    // Count image descriptors by skipping sub-blocks; no LZW decoding. A truncated file
    // counts the frames seen so far.
    let mut frames = 0u32;
    let skip_blocks = |mut p: usize| -> Option<usize> {
        loop {
            let n = usize::from(*d.get(p)?);
            p += 1;
            if n == 0 {
                return Some(p);
            }
            p += n;
        }
    };
    while let Some(&b) = d.get(pos) {
        match b {
            0x2C => {
                if pos + 10 > d.len() {
                    break;
                }
                let (fw, fh) = (le16(d, pos + 5), le16(d, pos + 7));
                if fw == 0 || fh == 0 {
                    return Err(ProbeError::Corrupt(F, "empty frame"));
                }
                let lflags = d[pos + 9];
                pos += 10;
                if lflags & 0x80 != 0 {
                    pos += 3 << ((lflags & 7) + 1);
                }
                let Some(&code_size) = d.get(pos) else { break };
                if !(1..=12).contains(&code_size) {
                    return Err(ProbeError::Corrupt(F, "bad LZW code size"));
                }
                frames += 1;
                match skip_blocks(pos + 1) {
                    Some(p) => pos = p,
                    None => break,
                }
            }
            0x21 => {
                if d.get(pos + 1) == Some(&0xF9) && d.get(pos + 2) == Some(&4) {
                    // Graphic control extension: transparency flag.
                    if d.get(pos + 3).is_some_and(|f| f & 1 != 0) {
                        info.has_alpha = true;
                    }
                }
                // Application extension NETSCAPE2.0 (or ANIMEXTS1.0): sub-block 1 holds the
                // repeat count, 0 meaning forever.
                if d.get(pos + 1) == Some(&0xFF)
                    && d.get(pos + 2) == Some(&11)
                    && d.get(pos + 3..pos + 14)
                        .is_some_and(|id| id == b"NETSCAPE2.0" || id == b"ANIMEXTS1.0")
                    && d.get(pos + 14) == Some(&3)
                    && d.get(pos + 15) == Some(&1)
                    && pos + 18 <= d.len()
                {
                    let repeats = u32::from(le16(d, pos + 16));
                    info.plays = if repeats == 0 { 0 } else { repeats + 1 };
                }
                match skip_blocks(pos + 2) {
                    Some(p) => pos = p,
                    None => break,
                }
            }
            0x3B => break,
            _ => return Err(ProbeError::Corrupt(F, "unknown block")),
        }
    }
    if frames == 0 {
        return Err(ProbeError::Corrupt(F, "no image data"));
    }
    info.frames = frames;
    Ok(info)
}

fn probe_webp(d: &[u8]) -> Result<SourceInfo, ProbeError> {
    const F: Format = Format::Webp;
    let mut info: Option<SourceInfo> = None;
    let mut frames = 0u32;
    let mut orientation = 1;
    let mut plays = 0;
    let mut pos = 12;
    while pos + 8 <= d.len() {
        let kind = &d[pos..pos + 4];
        let len = le32(d, pos + 4) as usize;
        let body = &d[pos + 8..(pos + 8).saturating_add(len).min(d.len())];
        match kind {
            b"VP8X" if body.len() >= 10 => {
                let flags = body[0];
                let mut i = SourceInfo::new(F, le24(body, 4) + 1, le24(body, 7) + 1);
                i.has_icc = flags & 0x20 != 0;
                i.has_alpha = flags & 0x10 != 0;
                info = Some(i);
            }
            b"VP8 " if info.is_none() => {
                if body.len() < 10 || body[3..6] != [0x9D, 0x01, 0x2A] {
                    return Err(ProbeError::Corrupt(F, "bad VP8 frame header"));
                }
                let w = u32::from(le16(body, 6) & 0x3FFF);
                let h = u32::from(le16(body, 8) & 0x3FFF);
                info = Some(SourceInfo::new(F, w, h));
            }
            b"VP8L" if info.is_none() => {
                if body.len() < 5 || body[0] != 0x2F {
                    return Err(ProbeError::Corrupt(F, "bad VP8L header"));
                }
                let bits = le32(body, 1);
                let mut i = SourceInfo::new(F, (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1);
                i.has_alpha = bits & (1 << 28) != 0;
                info = Some(i);
            }
            b"ANMF" => frames += 1,
            b"ANIM" if body.len() >= 6 => plays = u32::from(le16(body, 4)),
            b"EXIF" => {
                // Some writers keep the JPEG-style prefix.
                let tiff = body.strip_prefix(b"Exif\0\0").unwrap_or(body);
                orientation = exif_orientation(tiff).unwrap_or(1);
            }
            _ => {}
        }
        // Chunks are padded to an even size.
        pos = pos.saturating_add(8).saturating_add(len + (len & 1));
    }
    let mut info = info.ok_or(ProbeError::Corrupt(F, "no image chunk"))?;
    info.frames = frames.max(1);
    info.plays = if frames > 1 { plays } else { 1 };
    info.orientation = orientation;
    Ok(info)
}

fn probe_tiff(d: &[u8]) -> Result<SourceInfo, ProbeError> {
    let mut info = probe_generic(Format::Tiff, d)?;
    info.orientation = exif_orientation(d).unwrap_or(1);
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_by_content_not_name() {
        assert_eq!(sniff(b"\xFF\xD8\xFF\xE0"), Some(Format::Jpeg));
        assert_eq!(sniff(b"<html><script>"), None);
        assert_eq!(
            sniff(b"<?xml version=\"1.0\"?>\n<!-- c -->\n<svg xmlns=\"x\"/>"),
            Some(Format::Svg)
        );
        assert_eq!(
            sniff(b"<!DOCTYPE svg [<!ENTITY a \"b\">]><svg/>"),
            Some(Format::Svg)
        );
        assert_eq!(sniff(b"{\"error\": 1}"), None);
        assert_eq!(probe(b""), Err(ProbeError::Empty));
    }

    #[test]
    fn exif_orientation_both_byte_orders() {
        let mut le = b"II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0\x06\0\0\0".to_vec();
        assert_eq!(exif_orientation(&le), Some(6));
        le[18] = 9;
        assert_eq!(
            exif_orientation(&le),
            None,
            "invalid value treated as absent"
        );
        let be = b"MM\0*\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x08\0\0";
        assert_eq!(exif_orientation(be), Some(8));
        assert_eq!(exif_orientation(b"II*\0\xff\xff\0\0"), None);
    }

    #[test]
    fn png_header_lie_is_read_not_trusted() {
        let d = std::fs::read(crate::test_support::fixture(
            "hostile/header_lie_png_65535x65535_tiny_idat.png",
        ))
        .unwrap();
        let i = probe(&d).unwrap();
        assert_eq!((i.width, i.height), (65535, 65535));
    }
}
