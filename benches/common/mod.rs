//! What the Criterion benches share: the fixtures (`tests/fixtures`) and the naming rule
//! of every benchmark, `area/operation/parameters`, so results sort and compare by area.

#![allow(dead_code)] // each bench uses its own subset

use std::path::PathBuf;

/// `tests/fixtures/{rel}`, read; a missing fixture fails with its path.
pub fn fixture(rel: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Whether this run measures (`cargo bench`, which passes `--bench`) or is `cargo test`'s
/// smoke run of each benchmark once, where the reports and the slow variants are skipped.
pub fn measuring() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Every JPEG photo of the fixtures, by file stem, sorted.
pub fn photos() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/photos");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "jpg").then(|| {
                let name = p.file_stem().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&p).unwrap())
            })
        })
        .collect();
    out.sort();
    out
}

/// A benchmark id: `area/operation/parameters`.
pub fn id(area: &str, operation: &str, parameters: &str) -> String {
    format!("{area}/{operation}/{parameters}")
}
