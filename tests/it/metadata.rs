//! Metadata through the engine: stripped by default except the EXIF Copyright and Artist
//! (`keep_copyright`), nothing with `kcr:0`, everything with `sm:0`; JPEG and WebP output.

use exif::{Field, In, Tag, Value};

fn ascii(tag: Tag, s: &str) -> Field {
    Field {
        tag,
        ifd_num: In::PRIMARY,
        value: Value::Ascii(vec![s.as_bytes().to_vec()]),
    }
}

/// A 64×48 JPEG whose EXIF says who made it, with what, and where it was.
fn tagged_jpeg() -> Vec<u8> {
    let mut w = exif::experimental::Writer::new();
    let fields = [
        ascii(Tag::Copyright, "(c) 2026 Ada Example"),
        ascii(Tag::Artist, "Ada Example"),
        ascii(Tag::Make, "Camera Co"),
        ascii(Tag::BodySerialNumber, "SN-12345"),
    ];
    for f in &fields {
        w.push_field(f);
    }
    let mut tiff = std::io::Cursor::new(Vec::new());
    w.write(&mut tiff, false).unwrap();
    let tiff = tiff.into_inner();
    let img = image::RgbImage::from_fn(64, 48, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 5) as u8, 90])
    });
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode_image(&img)
        .unwrap();
    // APP1 right after SOI.
    let mut seg = vec![0xFF, 0xE1];
    seg.extend_from_slice(&((tiff.len() + 8) as u16).to_be_bytes());
    seg.extend_from_slice(b"Exif\0\0");
    seg.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&seg);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// The EXIF tags in an encoded JPEG or WebP.
fn tags(bytes: &[u8]) -> Vec<Tag> {
    let tiff = if bytes.starts_with(b"RIFF") {
        let at = bytes.windows(4).position(|w| w == b"EXIF");
        at.map(|i| {
            let len = u32::from_le_bytes(bytes[i + 4..i + 8].try_into().unwrap()) as usize;
            bytes[i + 8..i + 8 + len].to_vec()
        })
    } else {
        let at = bytes.windows(6).position(|w| w == b"Exif\0\0");
        at.map(|i| {
            let len = u16::from_be_bytes([bytes[i - 2], bytes[i - 1]]) as usize;
            bytes[i + 6..i - 2 + len].to_vec()
        })
    };
    let Some(tiff) = tiff else { return Vec::new() };
    let mut t: Vec<Tag> = exif::Reader::new()
        .read_raw(tiff)
        .unwrap()
        .fields()
        .map(|f| f.tag)
        .filter(|t| *t != Tag::Orientation)
        .collect();
    t.sort_by_key(|t| t.number());
    t
}

#[test]
fn strip_metadata_keeps_only_copyright_and_artist_unless_told_otherwise() {
    let src = tagged_jpeg();
    let cfg = pixgate::EngineConfig::default();
    for ext in ["jpg", "webp"] {
        let run = |opts: &str| {
            let out =
                pixgate::transform(&src, &format!("rs:fit:32:0/f:{ext}{opts}"), &cfg).unwrap();
            tags(&out.bytes)
        };
        assert_eq!(run(""), [Tag::Artist, Tag::Copyright], "{ext} default");
        assert_eq!(run("/kcr:0"), [], "{ext} kcr:0");
        let all = run("/sm:0");
        for t in [Tag::Artist, Tag::Make, Tag::Copyright] {
            assert!(all.contains(&t), "{ext} sm:0 keeps {t}: {all:?}");
        }
    }
}
