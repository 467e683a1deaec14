//! Issue 15's attacks, reproduced through the real binary: silent and slowloris connections,
//! unbounded blur/sharpen sigmas, pixel jobs outliving their deadline, format dimension
//! limits, the CLI's output format, an AVIF colour matrix libavif cannot convert, and the
//! memory budget under sixteen concurrent worst-case requests. Each test failed on the code
//! before the fix (figures in the closing note of issue 15).

use std::io::{BufRead, BufReader};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::{TempDir, fixture, path_str, read, run_pixgate};
use crate::support::{get, spawn_binary};

const GUARD: Duration = Duration::from_secs(60);

/// Kills the child on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The binary's log lines as they come, read on a thread of their own.
fn log_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().expect("stderr captured");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// `GET /health` over a connection made from `from` (another loopback address than the
/// attackers'), answered within `within`.
async fn health_from(from: &str, addr: &str, within: Duration) -> Option<u16> {
    let work = async {
        let socket = TcpSocket::new_v4().ok()?;
        socket.bind(format!("{from}:0").parse().ok()?).ok()?;
        let mut s = socket.connect(addr.parse().ok()?).await.ok()?;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: pixgate\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf);
        text.split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(within, work).await.ok().flatten()
}

/// Waits until the server closes `s` (EOF or reset); `false` if it stays open past `within`.
async fn closed_by_server(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 512];
    let work = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                // The h2 server's SETTINGS frame and its ack: not a close yet.
                Ok(_) => continue,
            }
        }
    };
    tokio::time::timeout(within, work).await.is_ok()
}

/// HTTP/2 connection preface and an empty SETTINGS frame: a client that opened h2c and said
/// nothing more.
const H2C_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_and_one_address_cannot_take_the_cap() {
    let (child, addr) = spawn_binary(
        &[
            ("PIXGATE_LOG_LEVEL", "warn"),
            ("PIXGATE_MAX_CONNECTIONS", "64"),
            ("PIXGATE_MAX_CONNECTIONS_PER_IP", "16"),
            ("PIXGATE_KEEP_ALIVE_TIMEOUT", "1"),
        ],
        false,
    );
    let _child = Child(child);
    // 96 connections from 127.0.0.1, more than the whole cap: half say nothing, half open
    // HTTP/2 and go quiet.
    let mut held = Vec::new();
    for i in 0..96 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        if i % 2 == 1 {
            let _ = s.write_all(H2C_PREFACE).await;
        }
        held.push(s);
    }
    // Another address is still served while they are held.
    for _ in 0..8 {
        assert_eq!(
            health_from("127.0.0.2", &addr, Duration::from_secs(5)).await,
            Some(200),
            "one address holding connections must not lock others out"
        );
    }
    // Every one of them is closed by the server: over the per-address cap at once, the
    // rest when the idle timeout passes with no request.
    for (i, s) in held.iter_mut().enumerate() {
        assert!(
            closed_by_server(s, Duration::from_secs(20)).await,
            "connection {i} stayed open"
        );
    }
    // A keep-alive connection that served a request is closed once idle, too.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: pixgate\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(closed_by_server(&mut s, Duration::from_secs(20)).await);
}

#[test]
fn huge_blur_and_sharpen_sigmas_cost_what_small_ones_cost() {
    let dir = TempDir::new("sigma");
    let src = fixture("photos/lomiri16_seeding_baseline.jpg");
    for opts in [
        "bl:1e9",
        "bl:1e300",
        "sh:1e9",
        "sh:1e300",
        "rs:fit:4000:4000/el:1/bl:1000",
    ] {
        let out = dir.path("out.jpg");
        let run = run_pixgate(&["transform", path_str(&src), opts, path_str(&out)], GUARD);
        assert_eq!(run.code, Some(0), "{opts}: {}", run.stderr);
        assert!(
            run.max_rss_kib < 600 * 1024,
            "{opts}: peak RSS {} MiB",
            run.max_rss_kib / 1024
        );
        eprintln!("{opts}: peak RSS {} MiB", run.max_rss_kib / 1024);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_sigmas_are_clamped_into_one_cache_entry() {
    let (child, addr) = spawn_binary(&[("PIXGATE_LOG_LEVEL", "warn")], false);
    let _child = Child(child);
    let url =
        |o: &str| format!("http://{addr}/insecure/rs:fit:300:0/{o}/plain/local:///seeding.jpg");
    let a = get(&url("bl:1e300"), &[]).await;
    let b = get(&url("bl:1000"), &[]).await;
    assert_eq!(a.status, 200, "{}", a.code());
    assert_eq!(a.header("etag"), b.header("etag"));
    assert_eq!(b.header("x-cache"), Some("HIT"));
    let c = get(&url("sh:1e300"), &[]).await;
    assert_eq!(c.status, 200, "{}", c.code());
}

/// Starts the binary with a 1 s request timeout and its log piped, runs `path`, and returns
/// how late the pixel job ended after its deadline (zero when it stopped in time).
async fn lateness(path: &str) -> Duration {
    let (mut child, addr) = spawn_binary(
        &[
            // Every job's end is logged by the gate at debug level, late ones at warn.
            ("PIXGATE_LOG_LEVEL", "warn,pixgate::cpu=debug"),
            ("PIXGATE_REQUEST_TIMEOUT", "1"),
        ],
        true,
    );
    let lines = log_lines(&mut child);
    let _child = Child(child);
    let r = get(&format!("http://{addr}{path}"), &[]).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (503, "request-timeout"),
        "{path}"
    );
    let line = tokio::task::spawn_blocking(move || {
        lines
            .iter()
            .find(|l| l.contains("pixel job ended"))
            .expect("the job's end is logged")
    })
    .await
    .unwrap();
    let ms: f64 = line
        .split("late_ms=")
        .nth(1)
        .and_then(|v| v.split(|c: char| !c.is_ascii_digit() && c != '.').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no late_ms in {line}"));
    Duration::from_secs_f64(ms / 1000.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pixel_jobs_stop_soon_after_their_deadline() {
    // Each takes several seconds when run to the end (a 27 MP sharpened PNG, a 27 MP AVIF, a
    // 27 MP blur); the job must give its worker back within one uninterruptible step (a
    // resize) of the deadline, not when the work is done.
    for path in [
        "/insecure/el:1/rs:fit:7000:7000/sh:100/f:png/plain/local:///seeding.jpg",
        "/insecure/el:1/rs:fit:7000:7000/bl:1000/f:webp/plain/local:///seeding.jpg",
        "/insecure/el:1/rs:fit:7000:7000/f:avif/plain/local:///seeding.jpg",
    ] {
        let late = lateness(path).await;
        eprintln!("{path}: job ended {late:?} after its deadline");
        assert!(
            late < Duration::from_millis(1500),
            "{path}: the job ran {late:?} past its deadline"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_meets_its_dimension_limit_without_a_5xx() {
    let (child, addr) = spawn_binary(&[("PIXGATE_LOG_LEVEL", "warn")], false);
    let _child = Child(child);
    for format in ["jpg", "png", "webp", "avif", "gif", "tiff", "bmp", "ico"] {
        for size in ["65535:1", "1:65535", "65500:2", "20000:20000"] {
            let path =
                format!("/insecure/rs:force:{size}/el:1/f:{format}/plain/local:///seeding.jpg");
            let r = get(&format!("http://{addr}{path}"), &[]).await;
            assert!(r.status < 500, "{path}: {} {}", r.status, r.code());
            if r.status == 200 {
                let img = crate::support::decode(&r.body);
                let max = pixgate::Format::from_name(format).unwrap().max_side();
                assert!(
                    img.width() <= max && img.height() <= max,
                    "{path}: {}x{}",
                    img.width(),
                    img.height()
                );
            } else {
                assert_eq!(r.status, 422, "{path}: {}", r.code());
            }
        }
    }
    // JPEG's limit is 65,500 a side: the URL is fitted to it.
    let r = get(
        &format!("http://{addr}/insecure/rs:force:65535:1/el:1/plain/local:///seeding.jpg"),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.code());
    assert_eq!(crate::support::decode(&r.body).width(), 65500);
    // Padding past the limit is scaled with the image (imgproxy's fixSize), not cut off.
    let r = get(
        &format!(
            "http://{addr}/insecure/rs:force:65500:1/el:1/pd:0:100/f:jpg/plain/local:///seeding.jpg"
        ),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.code());
    assert!(crate::support::decode(&r.body).width() <= 65500);
}

#[test]
fn the_cli_writes_the_format_its_output_file_names() {
    let dir = TempDir::new("cli-ext");
    let src = fixture("photos/lomiri16_Wine_by_Jakkub_Mede.jpg");
    for (name, magic) in [
        ("out.png", &b"\x89PNG"[..]),
        ("out.webp", b"RIFF"),
        ("out.TIF", b"II*\0"),
        ("out.jpeg", b"\xFF\xD8\xFF"),
    ] {
        let out = dir.path(name);
        let run = run_pixgate(
            &[
                "transform",
                path_str(&src),
                "rs:fit:100:100",
                path_str(&out),
            ],
            GUARD,
        );
        assert_eq!(run.code, Some(0), "{name}: {}", run.stderr);
        assert!(std::fs::read(&out).unwrap().starts_with(magic), "{name}");
    }
    let out = dir.path("out.png");
    let run = run_pixgate(
        &["transform", path_str(&src), "f:webp", path_str(&out)],
        GUARD,
    );
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains("format-mismatch (400)"),
        "{}",
        run.stderr
    );
    // No extension (or `-`): the source's own format, as before.
    let out = dir.path("out");
    let run = run_pixgate(
        &["transform", path_str(&src), "w:50", path_str(&out)],
        GUARD,
    );
    assert_eq!(run.code, Some(0));
    assert!(std::fs::read(&out).unwrap().starts_with(b"\xFF\xD8\xFF"));
}

#[test]
fn an_avif_colour_matrix_libavif_cannot_convert_is_unsupported_not_corrupt() {
    let dir = TempDir::new("avif-matrix");
    let mut avif = read("conformance/avif/libavif-testdata/io/kodim23_yuv420_8bpc.avif");
    let colr = avif
        .windows(8)
        .position(|w| w == b"colrnclx")
        .expect("nclx")
        + 8;
    // primaries, transfer, then the matrix: 10 = BT.2020 constant luminance.
    avif[colr + 4..colr + 6].copy_from_slice(&10u16.to_be_bytes());
    let input = dir.path("matrix10.avif");
    std::fs::write(&input, &avif).unwrap();
    let run = run_pixgate(
        &[
            "transform",
            path_str(&input),
            "w:50",
            path_str(&dir.path("out")),
        ],
        GUARD,
    );
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains("unsupported-source-format (422)"),
        "{}",
        run.stderr
    );
}

/// `VmHWM` of a process, MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        / 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_worst_cases_stay_inside_the_memory_budget() {
    const BUDGET_MIB: u64 = 1024;
    let budget = (BUDGET_MIB << 20).to_string();
    let (child, addr) = spawn_binary(
        &[
            ("PIXGATE_LOG_LEVEL", "warn"),
            ("PIXGATE_MEMORY_BUDGET", &budget),
            ("PIXGATE_WORKERS", "16"),
            ("PIXGATE_REQUEST_TIMEOUT", "120"),
        ],
        false,
    );
    let pid = child.id();
    let _child = Child(child);
    // Valid requests near the result limit: 6000 px wide from a 2.3 MP photo, each a
    // distinct result (cache buster), all at once.
    let requests = (0..16).map(|i| {
        let url = format!(
            "http://{addr}/insecure/el:1/rs:fit:6000:6000/cb:{i}/plain/local:///seeding.jpg"
        );
        tokio::spawn(async move { get(&url, &[]).await.status })
    });
    for r in futures_util::future::join_all(requests).await {
        assert_eq!(r.unwrap(), 200);
    }
    let peak = peak_rss_mib(pid);
    eprintln!("16 concurrent 6000 px results, budget {BUDGET_MIB} MiB: peak RSS {peak} MiB");
    // The budget covers pixel buffers; the process itself (code, caches of these results,
    // allocator slack) comes on top.
    assert!(
        peak < BUDGET_MIB + 512,
        "peak RSS {peak} MiB with a {BUDGET_MIB} MiB budget"
    );
}
