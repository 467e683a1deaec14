//! Hostile inputs through the real `pixgate transform` binary, with each run's peak memory
//! measured (`wait4`): every shipped hostile file, plus the large ones that
//! `hostile/README.md` says to synthesise at test time. Outcome: exit 0 (a re-encoded image)
//! or exit 1 with a typed 4xx error line; never a crash, a hang or unbounded memory.

use std::io::Write;
use std::time::Duration;

use crate::support::{TempDir, avif_with_ispe, fixture, manifest, path_str, read, run_pixgate};

/// Peak RSS a single transform may reach, far below what any bomb here would need.
const MAX_RSS_KIB: i64 = 512 * 1024;
/// Kills a run that hangs; no run comes close.
const HANG_GUARD: Duration = Duration::from_secs(60);

fn check(name: &str, input: &str, out: &str, expect_ok: Option<bool>) -> crate::support::Run {
    let run = run_pixgate(&["transform", input, "rs:fit:300:300", out], HANG_GUARD);
    assert!(
        run.code.is_some(),
        "{name}: killed (hang or crash): {}",
        run.stderr
    );
    assert!(
        run.max_rss_kib < MAX_RSS_KIB,
        "{name}: peak RSS {} MiB",
        run.max_rss_kib / 1024
    );
    match run.code {
        Some(0) => {}
        Some(1) => {
            let line = run.stderr.trim();
            assert_eq!(line.lines().count(), 1, "{name}: one error line: {line}");
            assert!(line.contains("(4"), "{name}: expected a 4xx: {line}");
        }
        other => panic!("{name}: exit {other:?}: {}", run.stderr),
    }
    if let Some(ok) = expect_ok {
        assert_eq!(run.code == Some(0), ok, "{name}: {}", run.stderr);
    }
    run
}

#[test]
fn shipped_hostile_files_are_survived_within_bounds() {
    let dir = TempDir::new("hostile");
    let mut peak = 0;
    for row in manifest().iter().filter(|r| r.path.starts_with("hostile/")) {
        if row.path.ends_with(".md") {
            continue;
        }
        let out = dir.path("out");
        let run = check(
            &row.path,
            path_str(&fixture(&row.path)),
            path_str(&out),
            None,
        );
        peak = peak.max(run.max_rss_kib);
        if run.code == Some(0) {
            // Re-encoded, never passed through: no trailing archive, no script.
            let bytes = std::fs::read(&out).unwrap();
            let src = read(&row.path);
            assert_ne!(bytes, src, "{}: passed through unchanged", row.path);
            for needle in [&b"<script"[..], b"<html", b"evil.sh", b"PK\x03\x04"] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "{}: output contains {:?}",
                    row.path,
                    String::from_utf8_lossy(needle)
                );
            }
        }
    }
    eprintln!("hostile files: peak RSS {} MiB", peak / 1024);
}

/// PNG chunk: length, type, data, CRC over type and data.
fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

fn png_header(w: u32, h: u32, color_type: u8) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, color_type, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    out
}

/// 900-megapixel RGBA PNG (3.6 GB decoded), streamed row by row into one zlib stream.
fn bomb_png_rgba8_30000() -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    let row = vec![0u8; 1 + 30000 * 4];
    for _ in 0..30000 {
        z.write_all(&row).unwrap();
    }
    let stream = z.finish().unwrap();
    let mut out = png_header(30000, 30000, 6);
    for part in stream.chunks(1 << 20) {
        png_chunk(&mut out, b"IDAT", part);
    }
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// A 6x6 palette PNG whose PLTE holds 13 bytes (not a whole number of RGB entries).
fn png_plte_13() -> Vec<u8> {
    let mut out = png_header(6, 6, 3);
    png_chunk(
        &mut out,
        b"PLTE",
        &[0, 255, 255, 255, 0, 0, 0, 0, 119, 255, 255, 0, 255],
    );
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&[0u8; 6 * 7]).unwrap();
    png_chunk(&mut out, b"IDAT", &z.finish().unwrap());
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// 8x8 RGB PNG behind 150 tEXt chunks of 65 KB each.
fn png_150_text_chunks() -> Vec<u8> {
    let mut out = png_header(8, 8, 2);
    let mut text = b"k\0".to_vec();
    text.extend(std::iter::repeat_n(b'A', 65000));
    for _ in 0..150 {
        png_chunk(&mut out, b"tEXt", &text);
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&[0u8; 200]).unwrap();
    png_chunk(&mut out, b"IDAT", &z.finish().unwrap());
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// Annex K luminance quantisation (quality 50) and the standard luminance Huffman tables.
const LUMA_Q: [u8; 64] = [
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113,
    92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
];
const DC_COUNTS: [u8; 16] = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
const AC_COUNTS: [u8; 16] = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d];
const AC_SYMBOLS: [u8; 162] = [
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07,
    0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0,
    0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28,
    0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49,
    0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69,
    0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
    0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
    0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5,
    0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2,
    0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa,
];

fn jpeg_segment(out: &mut Vec<u8>, marker: u8, data: &[u8]) {
    out.extend_from_slice(&[0xFF, marker]);
    out.extend_from_slice(&((data.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(data);
}

/// A valid 400-megapixel greyscale baseline JPEG (uniform grey), 4.7 MB.
fn bomb_jpeg_gray_20000() -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8];
    jpeg_segment(&mut out, 0xE0, b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0");
    let mut dqt = vec![0u8];
    dqt.extend_from_slice(&LUMA_Q);
    jpeg_segment(&mut out, 0xDB, &dqt);
    jpeg_segment(&mut out, 0xC0, &[8, 0x4E, 0x20, 0x4E, 0x20, 1, 1, 0x11, 0]);
    let mut dht = vec![0x00];
    dht.extend_from_slice(&DC_COUNTS);
    dht.extend(0..12u8);
    jpeg_segment(&mut out, 0xC4, &dht);
    let mut dht = vec![0x10];
    dht.extend_from_slice(&AC_COUNTS);
    dht.extend_from_slice(&AC_SYMBOLS);
    jpeg_segment(&mut out, 0xC4, &dht);
    jpeg_segment(&mut out, 0xDA, &[1, 1, 0x00, 0, 63, 0]);
    for _ in 0..1_562_500 {
        out.extend_from_slice(&[0x28, 0xA2, 0x8A]);
    }
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

/// `testorig.jpg` behind 128 maximum-size segments built by `segment`.
fn jpeg_behind_segments(segment: impl Fn(u8) -> Vec<u8>) -> Vec<u8> {
    let base = read("conformance/jpeg/libjpeg-turbo-testimages/testorig.jpg");
    let mut out = vec![0xFF, 0xD8];
    for n in 1..=128u8 {
        out.extend(segment(n));
    }
    out.extend_from_slice(&base[2..]);
    out
}

fn jpeg_128_app1() -> Vec<u8> {
    jpeg_behind_segments(|_| {
        let mut s = vec![0xFF, 0xE1, 0xFF, 0xFD];
        s.extend_from_slice(b"Exif\0\0II\x2A\0\x08\0\0\0\0\0");
        s.resize(65535, 0);
        s
    })
}

fn jpeg_icc_128_chunks() -> Vec<u8> {
    jpeg_behind_segments(|n| {
        let mut s = vec![0xFF, 0xE2, 0xFF, 0xEC];
        s.extend_from_slice(b"ICC_PROFILE\0");
        s.extend_from_slice(&[n, 128]);
        s.resize(2 + 65516, 0);
        s
    })
}

fn half(rel: &str) -> Vec<u8> {
    let b = read(rel);
    b[..b.len() / 2].to_vec()
}

/// A GIF whose logical screen is 65535x65535 with one 1x1 frame: 4.3 GP from an 800-byte
/// header.
fn gif_huge_screen() -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = gif::Encoder::new(&mut out, 65535, 65535, &[]).unwrap();
    let mut px = vec![255u8, 0, 0, 255];
    enc.write_frame(&gif::Frame::from_rgba(1, 1, &mut px))
        .unwrap();
    drop(enc);
    out
}

/// `n` distinct 4x4 frames.
fn gif_frames(n: u16) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = gif::Encoder::new(&mut out, 4, 4, &[]).unwrap();
    for i in 0..n {
        let mut px = [(i % 256) as u8, (i / 256) as u8, 7, 255].repeat(16);
        enc.write_frame(&gif::Frame::from_rgba(4, 4, &mut px))
            .unwrap();
    }
    drop(enc);
    out
}

/// A 1x1 screen whose only frame claims `w`x`h` at (`left`, 0): every pixel encoded (one
/// colour, so the file stays small), all but what falls on the screen clipped away.
fn gif_frame_beyond_screen(w: u16, h: u16, left: u16) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = gif::Encoder::new(&mut out, 1, 1, &[0, 0, 255, 255, 0, 0]).unwrap();
    let frame = gif::Frame {
        left,
        width: w,
        height: h,
        buffer: std::borrow::Cow::Owned(vec![1u8; usize::from(w) * usize::from(h)]),
        ..gif::Frame::default()
    };
    enc.write_frame(&frame).unwrap();
    drop(enc);
    out
}

#[test]
fn generated_hostile_files_are_survived_within_bounds() {
    let dir = TempDir::new("hostile-gen");
    // (name, bytes, expect success?)
    let cases: Vec<(&str, Vec<u8>, Option<bool>)> = vec![
        (
            "bomb_jpeg_gray_20000x20000.jpg",
            bomb_jpeg_gray_20000(),
            Some(false),
        ),
        (
            "bomb_png_rgba8_30000x30000.png",
            bomb_png_rgba8_30000(),
            Some(false),
        ),
        (
            "jpeg_128_app1_segments_8MB.jpg",
            jpeg_128_app1(),
            Some(true),
        ),
        (
            "jpeg_icc_128_chunks_8MB.jpg",
            jpeg_icc_128_chunks(),
            Some(true),
        ),
        (
            "png_150_text_chunks_10MB.png",
            png_150_text_chunks(),
            Some(true),
        ),
        (
            "truncated.avif",
            half("conformance/avif/libavif-testdata/io/kodim23_yuv420_8bpc.avif"),
            Some(false),
        ),
        (
            "truncated.webp",
            half("conformance/webp/image-webp/regression/tiny.webp"),
            Some(false),
        ),
        ("gif_screen_65535x65535.gif", gif_huge_screen(), Some(false)),
        // Found by the transform fuzzer: the gif crate sizes its buffers by the frame's
        // claim, not the screen's (a 10x10 GIF allocated 275 MB); frames are now read row
        // by row onto the screen.
        (
            "gif_frame_11000x11000_on_a_1x1_screen.gif",
            gif_frame_beyond_screen(11000, 11000, 0),
            Some(true),
        ),
        (
            "gif_frame_11000x11000_beside_a_1x1_screen.gif",
            gif_frame_beyond_screen(11000, 11000, 5),
            Some(true),
        ),
        // Found by the transform fuzzer: a palette of 13 bytes panicked inside the png
        // crate (a 500 in the server).
        ("png_plte_13_bytes.png", png_plte_13(), Some(false)),
        (
            "gif_600_frames_over_the_cap.gif",
            gif_frames(600),
            Some(false),
        ),
        (
            "avif_ispe_claims_20000x20000.avif",
            avif_with_ispe(20000, 20000),
            Some(false),
        ),
        (
            "avif_ispe_claims_16x16.avif",
            avif_with_ispe(16, 16),
            Some(false),
        ),
    ];
    for (name, bytes, expect_ok) in cases {
        let input = dir.path(name);
        std::fs::write(&input, &bytes).unwrap();
        let out = dir.path("out");
        let run = check(name, path_str(&input), path_str(&out), expect_ok);
        if run.code == Some(0) {
            let out = std::fs::read(&out).unwrap();
            assert!(
                out.len() < 100_000,
                "{name}: metadata copied into the output ({} bytes)",
                out.len()
            );
        }
        eprintln!(
            "{name}: exit {:?}, peak RSS {} MiB",
            run.code,
            run.max_rss_kib / 1024
        );
    }
}

/// 512 MiB of zeros as one zlib stream (about 0.5 MB).
fn zlib_bomb_512mib() -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let block = vec![0u8; 1 << 20];
    for _ in 0..512 {
        z.write_all(&block).unwrap();
    }
    z.finish().unwrap()
}

/// An 8x8 RGB PNG with `chunks` before its image data.
fn png_with(chunks: &[(&[u8; 4], Vec<u8>)]) -> Vec<u8> {
    let mut out = png_header(8, 8, 2);
    for (kind, data) in chunks {
        png_chunk(&mut out, kind, data);
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&[0u8; 8 * 25]).unwrap();
    png_chunk(&mut out, b"IDAT", &z.finish().unwrap());
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// A small photo encoded by pixgate's own encoders with `icc` and `exif` embedded.
fn photo_with_metadata(format: pixgate::Format, icc: &[u8], exif: &[u8]) -> Vec<u8> {
    use pixgate::pixels::encode::{EncoderConfig, Metadata, encode};
    let img = image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(64, 48, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 5) as u8, 90])
    }));
    let meta = Metadata {
        icc: Some(icc),
        exif: Some(exif),
    };
    encode(
        &img,
        format,
        80,
        &EncoderConfig::default(),
        meta,
        &pixgate::pixels::Deadline::none(),
    )
    .unwrap()
}

/// A baseline 8x8 greyscale TIFF whose ICC tag (34675) holds `icc_len` bytes.
fn tiff_with_icc(icc_len: usize) -> Vec<u8> {
    let entries: u16 = 9;
    let ifd = 8u32;
    let after_ifd = ifd + 2 + u32::from(entries) * 12 + 4;
    let pixels_at = after_ifd;
    let icc_at = pixels_at + 64;
    let mut out = b"II*\0".to_vec();
    out.extend_from_slice(&ifd.to_le_bytes());
    out.extend_from_slice(&entries.to_le_bytes());
    let mut entry = |tag: u16, kind: u16, count: u32, value: u32| {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&value.to_le_bytes());
    };
    entry(256, 3, 1, 8); // width
    entry(257, 3, 1, 8); // height
    entry(258, 3, 1, 8); // bits per sample
    entry(259, 3, 1, 1); // no compression
    entry(262, 3, 1, 1); // black is zero
    entry(273, 4, 1, pixels_at); // strip offsets
    entry(278, 3, 1, 8); // rows per strip
    entry(279, 4, 1, 64); // strip byte counts
    entry(34675, 7, icc_len as u32, icc_at); // ICC profile (undefined bytes)
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend((0..64u8).map(|i| i * 4));
    out.resize(out.len() + icc_len, 0x41);
    out
}

/// Every metadata path that inflates or copies: each source decodes, its oversized profile
/// or EXIF block is dropped (never inflated past the ceiling, never copied into the
/// output), and the run stays small — with metadata kept (`sm:0/scp:0`) as well.
#[test]
fn oversized_and_compressed_metadata_is_capped_while_the_image_decodes() {
    use pixgate::Format;
    let dir = TempDir::new("hostile-meta");
    let bomb = zlib_bomb_512mib();
    let big = vec![0x5Au8; 8 << 20];
    let tiff_exif = {
        let mut e = b"MM\0*\0\0\0\x08".to_vec();
        e.resize(8 << 20, 0);
        e
    };
    let mut iccp = b"bomb\0\0".to_vec();
    iccp.extend_from_slice(&bomb);
    let mut itxt = b"comment\0\x01\0\0\0".to_vec();
    itxt.extend_from_slice(&bomb);
    let mut ztxt = b"comment\0\0".to_vec();
    ztxt.extend_from_slice(&bomb);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "png_iccp_zlib_bomb_512MiB.png",
            png_with(&[(b"iCCP", iccp)]),
        ),
        (
            "png_itxt_zlib_bomb_512MiB.png",
            png_with(&[(b"iTXt", itxt)]),
        ),
        (
            "png_ztxt_zlib_bomb_512MiB.png",
            png_with(&[(b"zTXt", ztxt)]),
        ),
        (
            "png_exif_8MiB.png",
            png_with(&[(b"eXIf", tiff_exif.clone())]),
        ),
        // 8 MiB profiles written by pixgate's own encoders (JPEG: 129 APP2 chunks; PNG:
        // deflated to a small iCCP that inflates to 8 MiB; WebP: ICCP and EXIF chunks;
        // AVIF: a colr box and an Exif item).
        (
            "jpeg_icc_8MiB.jpg",
            photo_with_metadata(Format::Jpeg, &big, &[]),
        ),
        (
            "png_icc_8MiB.png",
            photo_with_metadata(Format::Png, &big, &[]),
        ),
        (
            "webp_icc_exif_8MiB.webp",
            photo_with_metadata(Format::Webp, &big, &tiff_exif),
        ),
        (
            "avif_icc_exif_8MiB.avif",
            photo_with_metadata(Format::Avif, &big, &tiff_exif),
        ),
        ("tiff_icc_8MiB.tiff", tiff_with_icc(8 << 20)),
    ];
    for (name, bytes) in cases {
        let input = dir.path(name);
        std::fs::write(&input, &bytes).unwrap();
        for opts in ["rs:fit:50:50", "rs:fit:50:50/sm:0/scp:0"] {
            let out = dir.path("out");
            let run = run_pixgate(
                &["transform", path_str(&input), opts, path_str(&out)],
                HANG_GUARD,
            );
            assert_eq!(run.code, Some(0), "{name} {opts}: {}", run.stderr);
            assert!(
                run.max_rss_kib < 160 * 1024,
                "{name} {opts}: peak RSS {} MiB",
                run.max_rss_kib / 1024
            );
            let out = std::fs::read(&out).unwrap();
            assert!(
                out.len() < 1 << 20,
                "{name} {opts}: {} bytes of metadata copied into the output",
                out.len()
            );
            eprintln!("{name} {opts}: peak RSS {} MiB", run.max_rss_kib / 1024);
        }
    }
}

/// `/info` reads the same metadata; four concurrent bombs stay small.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_on_metadata_bombs_stays_small() {
    let dir = TempDir::new("hostile-info");
    let mut iccp = b"bomb\0\0".to_vec();
    iccp.extend_from_slice(&zlib_bomb_512mib());
    std::fs::write(dir.path("bomb.png"), png_with(&[(b"iCCP", iccp)])).unwrap();
    let root = path_str(&dir.0).to_string();
    let (mut child, addr) = crate::support::spawn_binary(
        &[("PIXGATE_LOG_LEVEL", "warn"), ("PIXGATE_LOCAL_ROOT", &root)],
        false,
    );
    let pid = child.id();
    for path in [
        "/info/insecure/plain/local:///bomb.png",
        "/insecure/w:20/cb:1/plain/local:///bomb.png",
    ] {
        let all = (0..4).map(|i| {
            let url = format!("http://{addr}{path}?n={i}");
            tokio::spawn(async move { crate::support::get(&url, &[]).await.status })
        });
        for s in futures_util::future::join_all(all).await {
            assert_eq!(s.unwrap(), 200, "{path}");
        }
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hwm: i64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    eprintln!(
        "/info and transforms of 4 concurrent iCCP bombs: peak RSS {} MiB",
        hwm / 1024
    );
    assert!(hwm < 192 * 1024, "peak RSS {} MiB", hwm / 1024);
}
