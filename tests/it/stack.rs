//! The production-like stack with real nginx: `nginx/run-stack.sh` starts two pixgate
//! processes and nginx; requests go through nginx over HTTP and TLS, and each process's
//! `/metrics` says which process did the work.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::support::http::blocking;
use crate::support::{Reply, TempDir, decode};

struct Stack {
    child: Child,
    port: u16,
    tls_port: u16,
    env: BTreeMap<String, String>,
    _dir: TempDir,
}

const POLICY: &str = r#"
function decide(req)
  if req.key == "whoami" then
    return { allow = false, status = 403, reason = "ip=" .. req.ip }
  end
  return { allow = true }
end
"#;

impl Stack {
    fn start(tag: &str) -> Stack {
        let dir = TempDir::new(tag);
        std::fs::write(dir.path("policy.lua"), POLICY).unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        // Port 0: run-stack.sh picks the ports (and picks again if one is taken before its
        // servers bind) and says which.
        let mut child = Command::new("bash")
            .arg(root.join("nginx/run-stack.sh"))
            .args(["--port", "0", "--processes", "2", "--tls-port", "0"])
            .arg("--workdir")
            .arg(dir.path("work"))
            .args(["--bin", env!("CARGO_BIN_EXE_pixgate")])
            .env("PIXGATE_LOG_LEVEL", "warn")
            .env("PIXGATE_POLICY_FILE", dir.path("policy.lua"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("bash");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line
            .trim()
            .strip_prefix("stack ready on http://127.0.0.1:")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("run-stack.sh did not come up: `{line}`"));
        let env: BTreeMap<String, String> = std::fs::read_to_string(dir.path("work/stack.env"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
            .collect();
        assert_eq!(env["NGINX_PORT"], port.to_string());
        let tls_port = env["TLS_PORT"].parse().expect("a TLS port");
        Stack {
            child,
            port,
            tls_port,
            env,
            _dir: dir,
        }
    }

    fn work(&self) -> PathBuf {
        PathBuf::from(&self.env["WORKDIR"])
    }

    fn list(&self, key: &str) -> Vec<String> {
        self.env[key]
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    /// `route="transform"` requests per status class, per pixgate process, from `/metrics`.
    fn transform_counts(&self) -> Vec<BTreeMap<String, f64>> {
        self.list("PIXGATE_METRICS")
            .iter()
            .map(|m| {
                let text = http(m.parse().unwrap(), None, "GET", "/metrics", &[]).text();
                text.lines()
                    .filter_map(|l| {
                        let rest = l.strip_prefix(
                            "pixgate_http_requests_total{route=\"transform\",status_class=\"",
                        )?;
                        let (class, value) = rest.split_once("\"} ")?;
                        Some((class.to_string(), value.parse().ok()?))
                    })
                    .collect()
            })
            .collect()
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        http(
            SocketAddr::from(([127, 0, 0, 1], self.port)),
            None,
            "GET",
            path,
            headers,
        )
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: signalling our own child; the script stops nginx and pixgate on TERM.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// One request, optionally from a chosen local address (to be a client other than
/// 127.0.0.1).
fn http(
    to: SocketAddr,
    from: Option<std::net::IpAddr>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    http_with_body(to, from, method, path, headers, &[])
}

/// [`http`] with a request body.
fn http_with_body(
    to: SocketAddr,
    from: Option<std::net::IpAddr>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    blocking(
        from,
        method,
        &format!("http://{to}{path}"),
        headers,
        body.to_vec(),
    )
}

fn sum(counts: &[BTreeMap<String, f64>], class: &str) -> f64 {
    counts
        .iter()
        .map(|c| c.get(class).copied().unwrap_or(0.0))
        .sum()
}

#[test]
fn through_nginx_urls_stick_to_one_process_and_the_disk_tier_answers_repeats() {
    let stack = Stack::start("stack-routing");
    // nginx -t accepts the rendered configuration (with the TLS block).
    let work = stack.work();
    let t = Command::new("nginx")
        .arg("-t")
        .arg("-p")
        .arg(format!("{}/", work.display()))
        .arg("-c")
        .arg(work.join("conf/nginx.conf"))
        .output()
        .unwrap();
    assert!(t.status.success(), "{}", String::from_utf8_lossy(&t.stderr));

    let before = stack.transform_counts();
    let url = "/insecure/rs:fit:64:0/plain/local:///seeding.jpg";
    let r = stack.get(url, &[("X-Request-ID", "first-1")]);
    assert_eq!(r.status, 200);
    assert_eq!(decode(&r.body).width(), 64);
    assert_eq!(r.header("x-cache-status"), Some("MISS"));
    assert_eq!(r.header("x-pixgate-cache"), Some("MISS"));
    assert_eq!(r.header("x-request-id"), Some("first-1"));
    let r = stack.get(url, &[("X-Request-ID", "second-2")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-cache-status"), Some("HIT"));
    assert_eq!(r.header("x-pixgate-cache"), None, "pixgate was not asked");
    assert_eq!(r.header("x-request-id"), Some("second-2"));
    let after = stack.transform_counts();
    assert_eq!(
        sum(&after, "2xx") - sum(&before, "2xx"),
        1.0,
        "pixgate saw one request"
    );

    // Error answers are not stored, so repeats reach pixgate: always the same process.
    let before = stack.transform_counts();
    for _ in 0..4 {
        assert_eq!(
            stack
                .get("/insecure/w:8/plain/local:///missing.jpg", &[])
                .status,
            404
        );
    }
    let after = stack.transform_counts();
    let moved: Vec<f64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| a.get("4xx").unwrap_or(&0.0) - b.get("4xx").unwrap_or(&0.0))
        .collect();
    assert!(moved == [4.0, 0.0] || moved == [0.0, 4.0], "{moved:?}");
    // Different URLs spread over both processes.
    let before = stack.transform_counts();
    for i in 0..40 {
        assert_eq!(
            stack
                .get(
                    &format!("/insecure/w:8/plain/local:///missing-{i}.jpg"),
                    &[]
                )
                .status,
            404
        );
    }
    let after = stack.transform_counts();
    for (b, a) in before.iter().zip(&after) {
        assert!(
            a.get("4xx").unwrap_or(&0.0) > b.get("4xx").unwrap_or(&0.0),
            "{before:?} {after:?}"
        );
    }

    // Accept variants are separate entries in nginx's cache, never mixed up.
    let auto = "/insecure/rs:fit:48:0/plain/local:///friends.jpg";
    for round in 0..2 {
        let modern = stack.get(auto, &[("Accept", "image/avif,image/webp,*/*")]);
        let webp = stack.get(auto, &[("Accept", "image/webp,*/*")]);
        let jpeg = stack.get(auto, &[("Accept", "image/jpeg,*/*")]);
        // No Accept: the same answer as the JPEG-only browser, so the same entry.
        let plain = stack.get(auto, &[]);
        let first = if round == 0 { "MISS" } else { "HIT" };
        for (r, ty, status) in [
            (&modern, "image/avif", first),
            (&webp, "image/webp", first),
            (&jpeg, "image/jpeg", first),
            (&plain, "image/jpeg", "HIT"),
        ] {
            assert_eq!(r.header("content-type"), Some(ty), "round {round}");
            assert_eq!(
                r.header("x-cache-status"),
                Some(status),
                "round {round} {ty}"
            );
            assert_eq!(r.header("vary"), Some("Accept"));
            assert_eq!(decode(&r.body).width(), 48);
        }
    }

    // TLS with the generated certificate, HTTP/2.
    let out = Command::new("curl")
        .args([
            "-sk",
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{http_version}",
        ])
        .arg(format!("https://127.0.0.1:{}{url}", stack.tls_port))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200 2");

    // Only GET/HEAD pass; /metrics is closed at the edge.
    let post = http(
        SocketAddr::from(([127, 0, 0, 1], stack.port)),
        None,
        "POST",
        url,
        &[("Content-Length", "0")],
    );
    assert_eq!(post.status, 403);
    assert_eq!(stack.get("/metrics", &[]).status, 404);
    // The access log carries request id, upstream time and cache status.
    let log = std::fs::read_to_string(work.join("logs/access.log")).unwrap();
    assert!(
        log.contains("rid=first-1 cache=MISS upstream=127.0.0.1:"),
        "{log}"
    );
    assert!(
        log.contains("rid=second-2 cache=HIT upstream=- ut=-"),
        "{log}"
    );
}

#[test]
fn uploads_through_nginx_find_their_result_on_the_right_process() {
    let stack = Stack::start("stack-upload");
    let nginx = SocketAddr::from(([127, 0, 0, 1], stack.port));
    // 575 KB: over nginx's default 1 MB body buffer is not needed, over `client_max_body_size
    // 1k` of the other locations it is.
    let photo = crate::support::read("photos/lomiri16_friends_by_Aitzol_Berasategi.jpg");
    let image = http_with_body(
        nginx,
        None,
        "POST",
        "/upload/insecure/rs:fit:64:64/f:png",
        &[],
        &photo,
    );
    assert_eq!(image.status, 200, "{}", image.text());
    assert_eq!(image.header("content-type"), Some("image/png"));
    // Uploads with JSON answers, under different request ids (so, spread over both
    // processes): every result URL is served, whichever process kept it.
    let mut served = 0;
    for i in 0..8 {
        let rid = format!("upload-{i}");
        let r = http_with_body(
            nginx,
            None,
            "POST",
            "/upload/insecure/rs:fit:32:32/f:webp",
            &[("Accept", "application/json"), ("X-Request-ID", &rid)],
            &photo,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let url = v["url"].as_str().unwrap().to_string();
        // Routed by nginx's own request id, not the client's.
        assert!(!url.starts_with(&format!("/upload/result/{rid}/")), "{url}");
        for _ in 0..2 {
            let got = http(nginx, None, "GET", &url, &[]);
            assert_eq!(got.status, 200, "{url}");
            assert_eq!(got.header("content-type"), Some("image/webp"));
            assert_eq!(
                got.body.len() as u64,
                v["output"]["bytes"].as_u64().unwrap()
            );
            // Never stored in the disk tier.
            assert_ne!(got.header("x-cache-status"), Some("HIT"));
            served += 1;
        }
    }
    assert_eq!(served, 16);
    // Other locations still take no bodies.
    let r = http_with_body(
        nginx,
        None,
        "POST",
        "/insecure/rs:fit:8/plain/local:///seeding.jpg",
        &[],
        &photo,
    );
    assert!(r.status == 403 || r.status == 413, "{}", r.status);
}

#[test]
fn a_spoofed_forwarded_for_never_reaches_the_policy() {
    let stack = Stack::start("stack-spoof");
    let nginx = SocketAddr::from(([127, 0, 0, 1], stack.port));
    let url = "/insecure/w:8/plain/local:///seeding.jpg";
    let spoof = [
        ("X-Api-Key", "whoami"),
        ("X-Forwarded-For", "6.6.6.6"),
        ("X-Real-IP", "6.6.6.7"),
    ];
    // The client connects from 127.0.0.2: that is what the policy must see.
    let r = http(nginx, Some([127, 0, 0, 2].into()), "GET", url, &spoof);
    assert_eq!(r.status, 403);
    assert!(r.text().contains("ip=127.0.0.2"), "{}", r.text());
    let r = http(nginx, None, "GET", url, &spoof);
    assert!(r.text().contains("ip=127.0.0.1"), "{}", r.text());
}

#[test]
fn killing_one_process_leaves_the_stack_serving() {
    let stack = Stack::start("stack-kill");
    let pids = stack.list("PIXGATE_PIDS");
    let addrs = stack.list("PIXGATE_ADDRS");
    let victim: i32 = pids[0].parse().unwrap();
    // SAFETY: a process the stack script started for this test.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    // Gone when its port refuses connections.
    let addr: SocketAddr = addrs[0].parse().unwrap();
    while std::net::TcpStream::connect(addr).is_ok() {
        std::thread::yield_now();
    }
    for i in 0..20 {
        let r = stack.get(
            &format!("/insecure/rs:fit:{}:0/plain/local:///seeding.jpg", 20 + i),
            &[],
        );
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(decode(&r.body).width(), 20 + i);
    }
    // Some of those hashed to the dead process and were retried on the live one.
    let log = std::fs::read_to_string(stack.work().join("logs/access.log")).unwrap();
    let retried = format!("upstream={}, {}", addrs[0], addrs[1]);
    assert!(log.contains(&retried), "no retried request in:\n{log}");
}

/// Issue 17: a port someone else holds is refused with a message, never a "ready" line that
/// points at the other server.
#[test]
fn a_busy_port_is_refused_without_a_ready_line() {
    let dir = TempDir::new("stack-busy");
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port().to_string();
    let out = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("nginx/run-stack.sh"))
        .args(["--port", &port, "--processes", "1"])
        .arg("--workdir")
        .arg(dir.path("work"))
        .args(["--bin", env!("CARGO_BIN_EXE_pixgate")])
        .env("PIXGATE_LOG_LEVEL", "warn")
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(!stdout.contains("stack ready"), "{stdout}");
    assert!(
        stderr.contains(&format!("port {port} is already in use")),
        "{stderr}"
    );
    drop(holder);
}
