//! The real `pixgate` binary: one run with its peak memory measured, or `pixgate serve` with
//! the address from its `listening on` line.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

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

/// Starts the real `pixgate serve --listen 127.0.0.1:0` binary and returns it with the
/// address from its `listening on ADDR` line (readiness is that line, not a delay).
pub fn spawn_binary_server() -> (std::process::Child, String) {
    spawn_binary(&[("PIXGATE_LOG_LEVEL", "warn")], false)
}

/// [`spawn_binary_server`] with extra environment; with `capture_stderr` the log is left in
/// `child.stderr` for the test to read.
pub fn spawn_binary(env: &[(&str, &str)], capture_stderr: bool) -> (std::process::Child, String) {
    spawn_binary_at(
        Path::new(env!("CARGO_BIN_EXE_pixgate")),
        Path::new(env!("CARGO_MANIFEST_DIR")),
        env,
        capture_stderr,
    )
}

/// [`spawn_binary`] of the binary at `bin`, run in `cwd` (an installed copy, away from the
/// checkout).
pub fn spawn_binary_at(
    bin: &Path,
    cwd: &Path,
    env: &[(&str, &str)],
    capture_stderr: bool,
) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = std::process::Command::new(bin)
        .current_dir(cwd)
        .args(["serve", "--listen", "127.0.0.1:0"])
        // Several binaries run at once in the tests: no fixed metrics port.
        .env("PIXGATE_METRICS_LISTEN", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(if capture_stderr {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let Some(addr) = line
        .trim()
        .strip_prefix("listening on ")
        .map(str::to_string)
    else {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        panic!("unexpected first line `{line}`; stderr: {err}");
    };
    (child, addr)
}

/// The binary's stderr as lines on a channel, and a waiter for a line holding every needle.
pub fn log_channel(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

pub fn wait_for_line(rx: &std::sync::mpsc::Receiver<String>, needles: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if needles.iter().all(|n| line.contains(n)) => return line,
            Ok(_) => {}
            Err(_) => panic!("no log line with {needles:?} within 30 s"),
        }
    }
}
