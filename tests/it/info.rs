//! `/info`: header facts and the planned result as JSON, for every format family, through
//! the real server (same URL grammar, signature and policy as transforms).

use exif::{Field, In, Tag, Value};

use crate::support::{Pixgate, test_config};
use crate::support::{TempDir, fixture, path_str, read};

/// A JPEG carrying an EXIF block with camera, capture time, copyright and orientation 6.
fn jpeg_with_exif() -> Vec<u8> {
    let fields = [
        Field {
            tag: Tag::Make,
            ifd_num: In::PRIMARY,
            value: Value::Ascii(vec![b"Canon".to_vec()]),
        },
        Field {
            tag: Tag::Model,
            ifd_num: In::PRIMARY,
            value: Value::Ascii(vec![b"Canon EOS R5".to_vec()]),
        },
        Field {
            tag: Tag::DateTimeOriginal,
            ifd_num: In::PRIMARY,
            value: Value::Ascii(vec![b"2024:05:01 12:30:00".to_vec()]),
        },
        Field {
            tag: Tag::Copyright,
            ifd_num: In::PRIMARY,
            value: Value::Ascii(vec![b"(c) Example".to_vec()]),
        },
        Field {
            tag: Tag::Orientation,
            ifd_num: In::PRIMARY,
            value: Value::Short(vec![6]),
        },
    ];
    let mut w = exif::experimental::Writer::new();
    for f in &fields {
        w.push_field(f);
    }
    let mut tiff = std::io::Cursor::new(Vec::new());
    w.write(&mut tiff, false).unwrap();
    let mut payload = b"Exif\0\0".to_vec();
    payload.extend_from_slice(tiff.get_ref());
    let src = read("photos/lomiri16_seeding_baseline.jpg");
    let small =
        pixgate::transform(&src, "rs:fit:64:0/f:jpg", &pixgate::EngineConfig::default()).unwrap();
    let mut out = small.bytes[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&small.bytes[2..]);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_describes_every_format_family_from_headers() {
    let dir = TempDir::new("info");
    std::fs::write(dir.path("camera.jpg"), jpeg_with_exif()).unwrap();
    for (name, rel) in [
        ("icc.jpg", "photos/libavif_dog_exif_orient6_icc_xmp.jpg"),
        (
            "moon.gif",
            "conformance/gif/image-gif-tests/samples/moon_impact.gif",
        ),
        (
            "anim.webp",
            "conformance/webp/image-webp/animated/random_lossy.webp",
        ),
        (
            "rot.avif",
            "conformance/avif/libavif-testdata/abc_color_irot_alpha_irot.avif",
        ),
        ("a.svg", "hostile/svg_script_onload.svg"),
        ("basn6a08.png", "conformance/png/pngsuite/basn6a08.png"),
    ] {
        std::fs::copy(fixture(rel), dir.path(name)).unwrap();
    }
    let px = Pixgate::start(pixgate::config::RawConfig {
        local_root: path_str(&dir.0).into(),
        ..test_config()
    })
    .await;
    let info = |path: &'static str| {
        let px = &px;
        async move {
            let r = px.get(&format!("/info/insecure/{path}")).await;
            assert_eq!(
                r.status,
                200,
                "{path}: {}",
                String::from_utf8_lossy(&r.body)
            );
            assert_eq!(r.header("content-type"), Some("application/json"));
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()
        }
    };

    let j = info("rs:fit:100:100/plain/local:///camera.jpg").await;
    assert_eq!(j["format"], "jpg");
    assert_eq!(j["mime"], "image/jpeg");
    // Stored 64x36, orientation 6: shown 36x64.
    assert_eq!(
        (j["width"].as_u64(), j["height"].as_u64()),
        (Some(36), Some(64))
    );
    assert_eq!(j["orientation"], 6);
    assert_eq!(j["exif"]["camera"], "Canon EOS R5");
    assert_eq!(j["exif"]["taken_at"], "2024:05:01 12:30:00");
    assert_eq!(j["exif"]["copyright"], "(c) Example");
    assert_eq!(j["color_profile"], serde_json::Value::Null);
    // Not enlarged: the result stays 36x64.
    assert_eq!(j["result"]["width"], 36);
    assert_eq!(j["result"]["format"], "jpg");

    let j = info("rs:fit:400:400/f:webp/plain/local:///icc.jpg").await;
    assert!(
        j["color_profile"].as_str().is_some_and(|n| !n.is_empty()),
        "{j}"
    );
    assert_eq!(
        (j["width"].as_u64(), j["height"].as_u64()),
        (Some(3024), Some(4032))
    );
    assert_eq!(
        (
            j["result"]["width"].as_u64(),
            j["result"]["height"].as_u64()
        ),
        (Some(300), Some(400))
    );
    assert_eq!(j["result"]["format"], "webp");

    let j = info("rs:fit:50:50/plain/local:///moon.gif").await;
    assert_eq!(
        (j["format"].as_str(), j["frames"].as_u64()),
        (Some("gif"), Some(14))
    );
    assert_eq!(j["result"]["animated"], true);
    let j = info("f:png/plain/local:///anim.webp").await;
    assert_eq!(
        (j["frames"].as_u64(), j["result"]["animated"].as_bool()),
        (Some(4), Some(false))
    );

    let j = info("plain/local:///rot.avif").await;
    assert_eq!(j["format"], "avif");
    assert_eq!(
        (
            j["width"].as_u64(),
            j["height"].as_u64(),
            j["orientation"].as_u64()
        ),
        (Some(256), Some(512), Some(8))
    );
    assert_eq!(j["has_alpha"], true);

    let j = info("plain/local:///a.svg").await;
    assert_eq!(
        (j["format"].as_str(), j["result"]["format"].as_str()),
        (Some("svg"), Some("svg"))
    );

    let j = info("plain/local:///basn6a08.png").await;
    assert_eq!(
        (j["format"].as_str(), j["has_alpha"].as_bool()),
        (Some("png"), Some(true))
    );
    assert_eq!(
        j["bytes"].as_u64(),
        Some(std::fs::metadata(dir.path("basn6a08.png")).unwrap().len())
    );

    // Options the source cannot satisfy: the facts, and why there is no result.
    let j = info("f:jxl/plain/local:///basn6a08.png").await;
    assert_eq!(j["result"], serde_json::Value::Null);
    assert_eq!(j["result_error"], "unsupported-output-format");

    // Not an image: the transform's error.
    std::fs::write(dir.path("notes.txt"), b"hello").unwrap();
    let r = px.get("/info/insecure/plain/local:///notes.txt").await;
    assert_eq!((r.status, r.code().as_str()), (422, "not-an-image"));
    px.stop().await;
}
