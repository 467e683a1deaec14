//! Shared helpers of the integration tests: fixture paths, the manifest, running the real
//! binary with its peak memory measured, decoding results with an independent decoder.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// `../shared/fixtures`, or a clear failure.
pub fn fixtures() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures");
    assert!(
        root.join("MANIFEST.tsv").is_file(),
        "fixtures not found at {}: the tests need ../shared/fixtures beside the crate",
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

/// Result of one run of the `pixgate` binary.
#[derive(Debug)]
pub struct Run {
    /// `Some(code)` on a normal exit, `None` when killed by a signal.
    pub code: Option<i32>,
    pub stderr: String,
    pub max_rss_kib: i64,
}

/// Runs `pixgate` with `args`, measuring the child's peak RSS with `wait4`. A run that
/// outlives `hang_guard` is killed and reported with `code: None` (a hang, not slowness:
/// the guard is far above any sane time).
pub fn run_pixgate(args: &[&str], hang_guard: Duration) -> Run {
    let stderr_path = std::env::temp_dir().join(format!(
        "pixgate-stderr-{}-{}",
        std::process::id(),
        std::thread::current()
            .name()
            .unwrap_or("t")
            .replace("::", "-")
    ));
    let child = Command::new(env!("CARGO_BIN_EXE_pixgate"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("spawn pixgate");
    let pid = child.id() as libc::pid_t;
    let start = Instant::now();
    let mut status = 0;
    // SAFETY: plain libc calls on our own child's pid; `rusage` is a POD out-parameter.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // Peak RSS from the child's own VmHWM, not wait4's ru_maxrss: Linux folds the high-water
    // mark of the memory the process had *before* exec into ru_maxrss, and a child spawned
    // with vfork semantics had this (large, multi-test) process's memory then.
    let mut peak_kib = 0i64;
    loop {
        if let Some(hwm) = vm_hwm_kib(pid) {
            peak_kib = peak_kib.max(hwm);
        }
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        if start.elapsed() > hang_guard {
            unsafe { libc::kill(pid, libc::SIGKILL) };
            unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
            break;
        }
        // Polling a child process has no event to wait on short of a SIGCHLD handler;
        // a 2 ms poll is synchronisation on the exit, not a timing assumption.
        std::thread::sleep(Duration::from_millis(2));
    }
    std::mem::forget(child);
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let _ = std::fs::remove_file(&stderr_path);
    Run {
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        stderr,
        max_rss_kib: peak_kib,
    }
}

/// `VmHWM` of a running process, KiB; `None` once it has exited or before it has an `mm`.
fn vm_hwm_kib(pid: libc::pid_t) -> Option<i64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Decodes an encoded result with a decoder other than pixgate's pipeline: the `image` crate;
/// for AVIF, libavif + dav1d (the reference implementation, which our build links); for
/// SVG, resvg drawing the document at its own size.
pub fn decode(bytes: &[u8]) -> image::DynamicImage {
    match pixgate::pixels::probe::probe(bytes) {
        Ok(info) if info.format == pixgate::Format::Avif => {
            pixgate::pixels::avif::decode(bytes, &info, 0)
                .expect("result decodes")
                .image
        }
        Ok(info) if info.format == pixgate::Format::Svg => {
            let tree = resvg::usvg::Tree::from_data(bytes, &resvg::usvg::Options::default())
                .expect("result parses");
            let size = tree.size().to_int_size();
            let mut pixmap = resvg::tiny_skia::Pixmap::new(size.width(), size.height()).unwrap();
            resvg::render(&tree, Default::default(), &mut pixmap.as_mut());
            let px = pixmap
                .pixels()
                .iter()
                .flat_map(|p| {
                    let c = p.demultiply();
                    [c.red(), c.green(), c.blue(), c.alpha()]
                })
                .collect();
            image::DynamicImage::ImageRgba8(
                image::RgbaImage::from_raw(size.width(), size.height(), px).unwrap(),
            )
        }
        other => image::load_from_memory(bytes)
            .unwrap_or_else(|e| panic!("result decodes: {e} (probe: {other:?})")),
    }
}

/// Mean and maximum absolute difference per channel of two same-size RGBA images.
pub fn diff(a: &image::RgbaImage, b: &image::RgbaImage) -> (f64, u8) {
    assert_eq!(a.dimensions(), b.dimensions(), "sizes differ");
    let mut sum = 0u64;
    let mut max = 0u8;
    for (x, y) in a.as_raw().iter().zip(b.as_raw()) {
        let d = x.abs_diff(*y);
        sum += u64::from(d);
        max = max.max(d);
    }
    (sum as f64 / a.as_raw().len().max(1) as f64, max)
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

/// A real AVIF (768x512) whose first `ispe` (image spatial extents) property claims
/// another size.
pub fn avif_with_ispe(w: u32, h: u32) -> Vec<u8> {
    let mut out = read("conformance/avif/libavif-testdata/io/kodim23_yuv420_8bpc.avif");
    let at = out.windows(4).position(|x| x == b"ispe").expect("ispe");
    out[at + 8..at + 12].copy_from_slice(&w.to_be_bytes());
    out[at + 12..at + 16].copy_from_slice(&h.to_be_bytes());
    out
}
