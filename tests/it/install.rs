//! Issue 17: the binary as an operator runs it. A copy away from the checkout, in the
//! installed layout, serves the samples; a lone copy has no build-machine path baked in;
//! `pixgate health`, `--version` and `/version`; development errors; the request log line
//! names the format sent; every error code's series exists from the start.

use std::path::Path;
use std::process::Command;

use crate::support::http::blocking;
use crate::support::{
    Pixgate, TempDir, get, log_channel, spawn_binary, spawn_binary_at, spawn_binary_server,
    test_config, wait_for_line,
};

/// `DIR/bin/pixgate` beside `DIR/share/pixgate/samples`, as the package (or a tarball
/// unpacked into /usr/local) lays it out.
fn installed(dir: &TempDir) -> std::path::PathBuf {
    let bin = dir.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_pixgate"), bin.join("pixgate")).unwrap();
    let samples = dir.path("share/pixgate/samples");
    std::fs::create_dir_all(&samples).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    for e in std::fs::read_dir(shipped).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, samples.join(p.file_name().unwrap())).unwrap();
    }
    bin.join("pixgate")
}

#[test]
fn a_copy_away_from_the_checkout_serves_its_samples_and_warns_without_a_policy() {
    let dir = TempDir::new("install-layout");
    let bin = installed(&dir);
    let (mut child, addr) = spawn_binary_at(&bin, &dir.0, &[("PIXGATE_LOG_LEVEL", "warn")], true);
    let logs = log_channel(&mut child);
    // No policy beside it: said at warn, the level operators keep.
    wait_for_line(&logs, &["WARN", "no policy file"]);
    let r = blocking(
        None,
        "GET",
        &format!("http://{addr}/insecure/rs:fit:100:0/plain/local:///seeding.jpg"),
        &[],
        Vec::new(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("image/jpeg"));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_lone_copy_knows_no_build_machine_path() {
    if Path::new("/usr/share/pixgate/samples").is_dir() {
        // The package is installed here: its samples are a legitimate find.
        return;
    }
    let dir = TempDir::new("install-lone");
    let bin = dir.path("pixgate");
    std::fs::copy(env!("CARGO_BIN_EXE_pixgate"), &bin).unwrap();
    let (mut child, addr) = spawn_binary_at(&bin, &dir.0, &[("PIXGATE_LOG_LEVEL", "warn")], true);
    let logs = log_channel(&mut child);
    wait_for_line(&logs, &["WARN", "no sample images were found"]);
    let r = blocking(
        None,
        "GET",
        &format!("http://{addr}/insecure/plain/local:///seeding.jpg"),
        &[],
        Vec::new(),
    );
    assert_eq!((r.status, r.code()), (404, "source-not-found".into()));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn health_version_and_the_version_route() {
    let out = Command::new(env!("CARGO_BIN_EXE_pixgate"))
        .arg("--version")
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(line, format!("pixgate {}", pixgate::VERSION));
    assert!(line.contains("(git "), "{line}");

    let (mut child, addr) = spawn_binary_server();
    let health = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_pixgate"))
            .arg("health")
            .args(args)
            .output()
            .unwrap()
    };
    let ok = health(&["--url", &format!("http://{addr}/health")]);
    assert!(ok.status.success(), "{ok:?}");
    // Not a health answer (404 JSON): unhealthy, exit 1, and says why.
    let bad = health(&["--url", &format!("http://{addr}/nope"), "--timeout", "2"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("404"));
    // The configured listen address is the default URL.
    let cfg = Command::new(env!("CARGO_BIN_EXE_pixgate"))
        .args(["health"])
        .env("PIXGATE_LISTEN", &addr)
        .output()
        .unwrap();
    assert!(cfg.status.success(), "{cfg:?}");

    let v = blocking(
        None,
        "GET",
        &format!("http://{addr}/version"),
        &[],
        Vec::new(),
    );
    assert_eq!(v.status, 200);
    let json: serde_json::Value = serde_json::from_slice(&v.body).unwrap();
    assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(json["git"], pixgate::GIT_HASH);
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn development_errors_name_the_reason_and_codes_stay() {
    let url = "/insecure/pr:nope/plain/local:///seeding.jpg";
    let wm = "/insecure/wm:0.5:undefined/plain/local:///seeding.jpg";
    let plain = Pixgate::start(test_config()).await;
    let dev = Pixgate::start(pixgate::config::RawConfig {
        development_errors: true,
        ..test_config()
    })
    .await;
    let body = |r: &crate::support::Reply| -> serde_json::Value {
        serde_json::from_slice(&r.body).unwrap()
    };
    let p = get(&plain.url(url), &[]).await;
    let d = get(&dev.url(url), &[]).await;
    assert_eq!((p.status, d.status), (404, 404));
    assert_eq!(body(&p)["error"]["code"], "unknown-preset");
    assert_eq!(body(&d)["error"]["code"], "unknown-preset");
    assert_eq!(body(&p)["error"]["message"], "Invalid URL");
    let m = body(&d)["error"]["message"].as_str().unwrap().to_string();
    assert!(m.contains("unknown preset `nope`"), "{m}");
    let d = get(&dev.url(wm), &[]).await;
    let m = body(&d)["error"]["message"].as_str().unwrap().to_string();
    assert!(m.contains("wm") && m.contains("undefined"), "{m}");
    assert_eq!(body(&d)["error"]["code"], "invalid-url");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_code_and_policy_outcome_is_a_series_from_the_start() {
    let px = Pixgate::start(test_config()).await;
    let text = px.metrics().await;
    for k in pixgate::error::Kind::ALL {
        let series = format!("pixgate_errors_total{{code=\"{}\"}} 0", k.code());
        assert!(text.contains(&series), "{series} missing");
    }
    for outcome in ["allow", "deny", "limited", "error"] {
        let series = format!("pixgate_policy_decisions_total{{outcome=\"{outcome}\"}} 0");
        assert!(text.contains(&series), "{series} missing");
    }
}

#[test]
fn the_request_log_line_names_the_format_and_its_variant() {
    let (mut child, addr) = spawn_binary(&[("PIXGATE_LOG_LEVEL", "info")], true);
    let logs = log_channel(&mut child);
    let r = blocking(
        None,
        "GET",
        &format!("http://{addr}/insecure/rs:fit:50:0/plain/local:///seeding.jpg"),
        &[("accept", "image/webp,*/*")],
        Vec::new(),
    );
    assert_eq!(r.header("content-type"), Some("image/webp"));
    let line = wait_for_line(&logs, &["request", "status=200"]);
    assert!(
        line.contains("format=\"webp\"") || line.contains("format=webp"),
        "{line}"
    );
    assert!(line.contains("variant=n:webp"), "{line}");
    let r = blocking(
        None,
        "GET",
        &format!("http://{addr}/insecure/rs:fit:50:0/f:png/plain/local:///seeding.jpg"),
        &[],
        Vec::new(),
    );
    assert_eq!(r.status, 200);
    let line = wait_for_line(&logs, &["request", "status=200", "f:png"]);
    assert!(line.contains("variant=x:png"), "{line}");
    let _ = child.kill();
    let _ = child.wait();
}
