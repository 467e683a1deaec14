//! SVG sources: drawn at the planned size, sanitised when served as SVG, and hostile
//! documents (entity bombs, external entities and images, `<use>` explosions, huge canvases,
//! embedded image bombs) refused or drawn within bounds, never fetching anything.

use std::time::Duration;

use base64::Engine;
use pixgate::EngineConfig;

use crate::support::{Pixgate, get, test_config};
use crate::support::{TempDir, decode, fixture, path_str, read, run_pixgate};

const CIRCLE: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" width="40" height="40" viewBox="0 0 40 40"><circle cx="20" cy="20" r="16" fill="#1e90ff"/></svg>"##;

#[test]
fn vectors_are_drawn_at_the_target_size_not_scaled_up() {
    let cfg = EngineConfig::default();
    let out = pixgate::transform(CIRCLE.as_bytes(), "rs:fit:400:400/f:png", &cfg).unwrap();
    assert_eq!((out.width, out.height), (400, 400));
    let img = decode(&out.bytes).to_rgba8();
    assert_eq!(img.get_pixel(200, 200).0, [0x1e, 0x90, 0xff, 255]);
    assert_eq!(img.get_pixel(5, 5)[3], 0, "corners stay transparent");
    // A crisp edge: across the circle's rim (r = 160 px at this size) alpha goes from
    // opaque to clear within 2 px; a 10x upscale of a 40 px bitmap would take ~20.
    let row: Vec<u8> = (350..370).map(|x| img.get_pixel(x, 200)[3]).collect();
    let partial = row.iter().filter(|&&a| a > 10 && a < 245).count();
    assert!(partial <= 2, "soft edge: {row:?}");
    // JPEG output flattens onto white.
    let jpg = pixgate::transform(CIRCLE.as_bytes(), "rs:fit:100:100/f:jpg", &cfg).unwrap();
    let img = decode(&jpg.bytes).to_rgb8();
    assert!(img.get_pixel(1, 1).0.iter().all(|&c| c > 245));
}

#[test]
fn svg_output_is_sanitised() {
    let cfg = EngineConfig::default();
    let src = read("hostile/svg_script_onload.svg");
    for opts in ["rs:fit:50:50", "f:svg", "skp:svg"] {
        let out = pixgate::transform(&src, opts, &cfg).unwrap();
        assert_eq!(out.format, pixgate::Format::Svg, "{opts}");
        let text = String::from_utf8(out.bytes).unwrap();
        for bad in ["script", "onload", "alert", "fetch"] {
            assert!(!text.contains(bad), "{opts}: `{bad}` in {text}");
        }
        assert!(
            text.contains("<path"),
            "{opts}: the drawing is kept: {text}"
        );
    }
    // SVG cannot be written from a bitmap.
    let e = pixgate::transform(&read("photos/lomiri16_seeding_baseline.jpg"), "f:svg", &cfg)
        .unwrap_err();
    assert_eq!(e.code(), "unsupported-output-format");
}

#[test]
fn entity_tricks_are_refused_and_never_read_files() {
    let cfg = EngineConfig::default();
    for name in ["svg_billion_laughs.svg", "svg_xxe_file_passwd.svg"] {
        let t = std::time::Instant::now();
        let e = pixgate::transform(&read(&format!("hostile/{name}")), "f:png", &cfg).unwrap_err();
        assert_eq!(e.status(), 422, "{name}: {e}");
        assert!(!e.to_string().contains("root:"), "{name}: {e}");
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{name}: {:?}",
            t.elapsed()
        );
    }
    // A few internal entities (Illustrator declares its namespaces this way) are fine.
    let ok = r#"<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY ns "http://www.w3.org/2000/svg"><!ENTITY c "red">]><svg xmlns="&ns;" width="10" height="10"><rect width="10" height="10" fill="&c;"/></svg>"#;
    let out = pixgate::transform(ok.as_bytes(), "f:png", &cfg).unwrap();
    assert_eq!(
        decode(&out.bytes).to_rgba8().get_pixel(5, 5).0,
        [255, 0, 0, 255]
    );
}

#[test]
fn external_images_are_never_fetched_and_embedded_ones_are_checked() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="20" height="20"><image xlink:href="http://{addr}/x.png" width="20" height="20"/><image href="file:///etc/passwd" width="20" height="20"/><image href="/etc/hostname" width="20" height="20"/><rect width="5" height="5" fill="lime"/></svg>"#
    );
    let cfg = EngineConfig::default();
    let out = pixgate::transform(svg.as_bytes(), "f:png", &cfg).unwrap();
    assert_eq!(
        decode(&out.bytes).to_rgba8().get_pixel(2, 2).0,
        [0, 255, 0, 255]
    );
    assert!(
        listener.accept().is_err(),
        "pixgate connected to the SVG's URL"
    );
    let shipped = read("hostile/svg_external_image_ssrf.svg");
    assert!(pixgate::transform(&shipped, "f:png", &cfg).is_ok());

    // A small embedded PNG is drawn; an embedded pixel bomb (65535² header) is dropped
    // without being decoded.
    let png = |rel: &str| base64::engine::general_purpose::STANDARD.encode(read(rel));
    let small = png("conformance/png/pngsuite/basn2c08.png");
    let bomb = png("hostile/bomb_png_1bit_65535x65535.png");
    let svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="64" height="32"><image href="data:image/png;base64,{small}" width="32" height="32"/><image x="32" href="data:image/png;base64,{bomb}" width="32" height="32"/></svg>"#
    );
    let out = pixgate::transform(svg.as_bytes(), "f:png", &cfg).unwrap();
    let img = decode(&out.bytes).to_rgba8();
    assert_eq!(img.get_pixel(16, 16)[3], 255, "embedded PNG drawn");
    assert_eq!(img.get_pixel(48, 16)[3], 0, "bomb dropped");
}

/// `<use>` chains of 10 references over 9 levels: 10^9 elements once expanded.
fn use_explosion() -> String {
    let mut s = String::from(
        r#"<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="100" height="100"><defs><rect id="l0" width="1" height="1"/>"#,
    );
    for i in 1..10 {
        s.push_str(&format!(r#"<g id="l{i}">"#));
        for _ in 0..10 {
            s.push_str(&format!(r##"<use xlink:href="#l{}"/>"##, i - 1));
        }
        s.push_str("</g>");
    }
    s.push_str(r##"</defs><use xlink:href="#l9"/></svg>"##);
    s
}

#[test]
fn hostile_documents_fail_fast_in_bounded_memory() {
    let dir = TempDir::new("svg-hostile");
    let deep = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg">{}{}</svg>"#,
        "<g>".repeat(5000),
        "</g>".repeat(5000)
    );
    let many = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg">{}</svg>"#,
        r#"<rect width="1" height="1"/>"#.repeat(300_000)
    );
    for (name, body) in [
        ("use.svg", use_explosion()),
        ("deep.svg", deep),
        ("many.svg", many),
    ] {
        let input = dir.path(name);
        std::fs::write(&input, body).unwrap();
        let t = std::time::Instant::now();
        let run = run_pixgate(
            &[
                "transform",
                path_str(&input),
                "f:png",
                path_str(&dir.path("out")),
            ],
            Duration::from_secs(60),
        );
        assert_eq!(run.code, Some(1), "{name}: {}", run.stderr);
        assert!(run.stderr.contains("(422)"), "{name}: {}", run.stderr);
        assert!(
            run.max_rss_kib < 256 * 1024,
            "{name}: {} MiB",
            run.max_rss_kib / 1024
        );
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{name}: {:?}",
            t.elapsed()
        );
    }
    // The 100000 px canvas: refused at its own size, drawn when a size is asked for.
    let huge = read("hostile/svg_huge_canvas_100000x100000.svg");
    let cfg = EngineConfig::default();
    let e = pixgate::transform(&huge, "f:png", &cfg).unwrap_err();
    assert_eq!(e.code(), "result-too-large");
    let out = pixgate::transform(&huge, "rs:fit:300:300/f:png", &cfg).unwrap();
    assert_eq!((out.width, out.height), (300, 300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_svg_is_sanitised_and_negotiation_keeps_it_vector() {
    let dir = TempDir::new("svg-serve");
    std::fs::copy(fixture("hostile/svg_script_onload.svg"), dir.path("a.svg")).unwrap();
    let px = Pixgate::start(pixgate::config::RawConfig {
        local_root: path_str(&dir.0).into(),
        ..test_config()
    })
    .await;
    let r = get(
        &px.url("/insecure/rs:fit:50:50/plain/local:///a.svg"),
        &[("Accept", "image/avif,image/webp,*/*")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("image/svg+xml"));
    assert_eq!(
        r.header("content-security-policy"),
        Some("script-src 'none'")
    );
    assert!(!String::from_utf8_lossy(&r.body).contains("script"));
    let r = px
        .get("/insecure/rs:fit:50:50/plain/local:///a.svg@webp")
        .await;
    assert_eq!(r.header("content-type"), Some("image/webp"));
    assert_eq!(decode(&r.body).width(), 50);
    px.stop().await;
}
