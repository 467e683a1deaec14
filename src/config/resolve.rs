//! The configuration's contact with the file system, at startup: `local_root` made canonical,
//! the policy file found (or the shipped default looked for), the watermark file read and
//! decoded.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::raw::RawConfig;
use super::{Config, DEFAULT_POLICY_FILE, WatermarkSource};
use crate::policy::PolicySettings;

/// Completes `c`; the problems found (none: `c` is ready).
pub fn resolve(c: &mut Config) -> Vec<String> {
    let mut p = Vec::new();
    match c.local_root.as_deref().map(local_root) {
        Some(Ok(root)) => c.local_root = Some(root),
        Some(Err(e)) => p.push(e),
        None => c.warnings.push(
            "local_root is not set and no sample images were found (beside the binary, ../share/pixgate/samples, /usr/share/pixgate/samples, the checkout, ./samples): local:/// answers 404".into(),
        ),
    }
    match policy_file(c.policy_file.as_deref()) {
        Ok(file) => {
            c.policy = file.map(|file| PolicySettings {
                file,
                on_error: c.policy_on_error,
                limits: c.policy_limits,
                max_buckets: c.policy_max_buckets,
                threads: c.policy_threads,
                error_rate: c.policy_error_rate,
            })
        }
        Err(e) => p.push(e),
    }
    let mark = match &c.watermark {
        WatermarkSource::Path(path) => std::fs::read(path)
            .map_err(|e| format!("watermark_path: {}: {e}", path.display()))
            .map(|b| Some(("watermark_path", b))),
        WatermarkSource::Data(b) => Ok(Some(("watermark_data", b.clone()))),
        WatermarkSource::None | WatermarkSource::Url(_) => Ok(None),
    };
    match mark {
        Ok(Some((what, bytes))) => match crate::pixels::decode_watermark(&bytes) {
            Ok(w) => c.engine.watermark = Some(Arc::new(w)),
            Err(e) => p.push(format!("{what}: {e}")),
        },
        Ok(None) => {}
        Err(e) => p.push(e),
    }
    p
}

/// The path problems of a configuration whose fields did not validate, so one run reports
/// both kinds.
pub fn check_paths(raw: &RawConfig) -> Vec<String> {
    [
        raw.local_root_path().and_then(|r| local_root(&r).err()),
        policy_file(raw.policy_file.as_deref()).err(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn local_root(root: &Path) -> Result<PathBuf, String> {
    match root.canonicalize() {
        Ok(r) if r.is_dir() => Ok(r),
        _ => Err(format!("local_root: {} is not a directory", root.display())),
    }
}

/// Unset: the shipped default when it exists. Empty: no policy. Else the file, which must
/// exist.
fn policy_file(named: Option<&str>) -> Result<Option<PathBuf>, String> {
    match named {
        None => Ok(Some(PathBuf::from(DEFAULT_POLICY_FILE)).filter(|f| f.is_file())),
        Some("") => Ok(None),
        Some(f) if Path::new(f).is_file() => Ok(Some(PathBuf::from(f))),
        Some(f) => Err(format!("policy_file: {f} is not a file")),
    }
}
