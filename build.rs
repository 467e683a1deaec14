//! Build script: records the git commit the binary is built from as `PIXGATE_GIT_HASH`
//! (`--version`, `GET /version`). A source tree without git (a release tarball) says
//! `unknown` unless the packager sets `PIXGATE_GIT_HASH` itself.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=PIXGATE_GIT_HASH");
    let given = std::env::var("PIXGATE_GIT_HASH")
        .ok()
        .filter(|h| !h.trim().is_empty());
    let hash = given.or_else(git_hash).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=PIXGATE_GIT_HASH={hash}");
}

fn git_hash() -> Option<String> {
    let dir = Command::new("git")
        .args(["rev-parse", "--git-dir"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let dir = String::from_utf8(dir.stdout).ok()?;
    let dir = Path::new(dir.trim());
    // A new commit moves the branch's ref (or packed-refs); a checkout moves HEAD.
    println!("cargo:rerun-if-changed={}", dir.join("HEAD").display());
    println!(
        "cargo:rerun-if-changed={}",
        dir.join("packed-refs").display()
    );
    if let Ok(head) = std::fs::read_to_string(dir.join("HEAD")) {
        if let Some(r) = head.trim().strip_prefix("ref: ") {
            println!("cargo:rerun-if-changed={}", dir.join(r).display());
        }
    }
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    Some(String::from_utf8(out.stdout).ok()?.trim().to_string()).filter(|h| !h.is_empty())
}
