//! What survives `strip_metadata`: with `keep_copyright`, the EXIF Copyright and Artist
//! tags of the source, rewritten as a minimal EXIF block (kamadak-exif reads and writes it;
//! everything else, GPS positions and camera serials included, is dropped).

use exif::{In, Tag};

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
