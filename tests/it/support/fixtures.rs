//! The test fixtures (`tests/fixtures`, its `MANIFEST.tsv`) and temporary directories.

use std::path::{Path, PathBuf};

/// `tests/fixtures` of this checkout, or a clear failure.
pub fn fixtures() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    assert!(
        root.join("MANIFEST.tsv").is_file(),
        "fixtures not found at {}: the checkout is incomplete (tests/fixtures is part of the repository)",
        root.display()
    );
    root
}

pub fn fixture(rel: &str) -> PathBuf {
    fixtures().join(rel)
}

pub fn read(rel: &str) -> Vec<u8> {
    std::fs::read(fixture(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// One row of `MANIFEST.tsv`.
#[derive(Debug, Clone)]
pub struct Row {
    pub path: String,
    pub format: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub expected: String,
}

pub fn manifest() -> Vec<Row> {
    let text = std::fs::read_to_string(fixtures().join("MANIFEST.tsv")).unwrap();
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Row {
                path: f[0].to_string(),
                format: f[1].to_string(),
                width: f[2].parse().ok(),
                height: f[3].parse().ok(),
                expected: f[6].to_string(),
            }
        })
        .collect()
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("pixgate-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}
