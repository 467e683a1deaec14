//! The `pixgate transform` contract: exit 0 and a file on success; exit 1 and one error line
//! naming the stable code and status for bad options or bad images; exit 2 for I/O problems.

use std::time::Duration;

use crate::support::{TempDir, decode, fixture, path_str, run_pixgate};

const GUARD: Duration = Duration::from_secs(60);

#[test]
fn transform_writes_the_result() {
    let dir = TempDir::new("cli-ok");
    let out = dir.path("out.webp");
    let src = fixture("photos/lomiri16_seeding_baseline.jpg");
    let run = run_pixgate(
        &[
            "transform",
            path_str(&src),
            "rs:fit:300:0/q:70/f:webp",
            path_str(&out),
        ],
        GUARD,
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(&bytes[8..12], b"WEBP");
    let img = decode(&bytes);
    assert_eq!(img.width(), 300);
}

#[test]
fn bad_options_and_bad_images_fail_with_one_line() {
    let dir = TempDir::new("cli-bad");
    let out = dir.path("out");
    let src = fixture("photos/lomiri16_seeding_baseline.jpg");
    let cases = [
        (
            path_str(&src).to_string(),
            "rs:fit:abc",
            "invalid-url (404)",
        ),
        (path_str(&src).to_string(), "bogus:1", "invalid-url (404)"),
        (
            path_str(&src).to_string(),
            "raw:1",
            "unsupported-option (404)",
        ),
        (
            path_str(&src).to_string(),
            "f:jxl",
            "unsupported-output-format (422)",
        ),
        (
            path_str(&fixture("hostile/plain_text.png")).to_string(),
            "rs:fit:10:10",
            "not-an-image (422)",
        ),
        (
            path_str(&fixture("hostile/bomb_png_1bit_65535x65535.png")).to_string(),
            "rs:fit:10:10",
            "source-resolution-too-large (422)",
        ),
    ];
    for (input, opts, expect) in cases {
        let run = run_pixgate(&["transform", &input, opts, path_str(&out)], GUARD);
        assert_eq!(run.code, Some(1), "{opts}: {}", run.stderr);
        let line = run.stderr.trim();
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(line.contains(expect), "{opts}: `{line}` lacks `{expect}`");
    }
    assert!(!out.exists(), "no output file on failure");
    let run = run_pixgate(
        &["transform", "/nonexistent.jpg", "w:1", path_str(&out)],
        GUARD,
    );
    assert_eq!(run.code, Some(2));
}

#[test]
fn help_documents_the_transform_command() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pixgate"))
        .args(["transform", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for word in [
        "INPUT",
        "OPTIONS",
        "OUTPUT",
        "--fast",
        "--max-src-resolution",
    ] {
        assert!(text.contains(word), "--help lacks {word}:\n{text}");
    }
}
