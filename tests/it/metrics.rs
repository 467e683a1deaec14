//! `/metrics` over HTTP from the metrics listener: a scripted sequence moves every counter by
//! exactly what it should, the text passes `promtool check metrics`, junk input never creates
//! series, and request ids reach the response.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use crate::support::Origin;
use crate::support::TempDir;
use crate::support::{Pixgate, get, test_config};

/// `series{labels}` → value, for every sample line.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, series: &str) -> f64 {
    after.get(series).copied().unwrap_or(0.0) - before.get(series).copied().unwrap_or(0.0)
}

const POLICY: &str = r#"
function decide(req)
  if req.key == "limited" then
    return { allow = true, bucket = "limited", rate = 1, per = 3600, burst = 1 }
  end
  return { allow = true }
end
"#;

async fn start(dir: &TempDir, download_timeout: f64) -> Pixgate {
    std::fs::write(dir.path("policy.lua"), POLICY).unwrap();
    Pixgate::start(pixgate::config::RawConfig {
        policy_file: Some(dir.path("policy.lua").to_str().unwrap().into()),
        download_timeout,
        ..test_config()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_sequence_moves_each_counter_by_exactly_its_share() {
    let origin = Origin::start().await;
    let dir = TempDir::new("metrics-sequence");
    let px = start(&dir, 4.0).await;
    let before = samples(&px.metrics().await);
    let jpeg = px.url(&format!(
        "/insecure/rs:fit:40:0/plain/{}",
        origin.url("f/photos/lomiri16_Wine_by_Jakkub_Mede.jpg")
    ));
    // Miss, then hit.
    assert_eq!(get(&jpeg, &[]).await.header("x-cache"), Some("MISS"));
    assert_eq!(get(&jpeg, &[]).await.header("x-cache"), Some("HIT"));
    // A coalesced burst: the drip origin keeps the first fill in flight for ~2.4 s.
    let drip = px.url(&format!(
        "/insecure/w:16/plain/{}",
        origin.url("drip/conformance/png/pngsuite/basn2c08.png")
    ));
    let u = drip.clone();
    let first = tokio::spawn(async move { get(&u, &[]).await });
    origin.wait_hits(2).await;
    let burst: Vec<_> = (0..4)
        .map(|_| {
            let u = drip.clone();
            tokio::spawn(async move { get(&u, &[]).await })
        })
        .collect();
    for t in burst {
        assert_eq!(t.await.unwrap().header("x-cache"), Some("COALESCED"));
    }
    assert_eq!(first.await.unwrap().header("x-cache"), Some("MISS"));
    // A key with one request per hour: a hit, then 429.
    assert_eq!(get(&jpeg, &[("x-api-key", "limited")]).await.status, 200);
    assert_eq!(get(&jpeg, &[("x-api-key", "limited")]).await.status, 429);
    // 422: the origin answers HTML.
    let html = px.url(&format!("/insecure/w:10/plain/{}", origin.url("html")));
    assert_eq!(get(&html, &[]).await.code(), "not-an-image");
    // Origin timeout: headers and 100 bytes, then nothing.
    let stall = px.url(&format!(
        "/insecure/w:10/plain/{}",
        origin.url("stall/photos/lomiri16_Wine_by_Jakkub_Mede.jpg")
    ));
    assert_eq!(get(&stall, &[]).await.code(), "origin-timeout");
    // A policy reload.
    std::fs::write(dir.path("policy.lua"), format!("{POLICY}\n-- v2\n")).unwrap();
    let policy = px.state.policy.as_deref().unwrap();
    policy
        .stats
        .wait_until(|s| s.reloads_ok.load(Ordering::Relaxed) >= 1)
        .await;

    let after = samples(&px.metrics().await);
    let d = |s: &str| delta(&before, &after, s);
    let expect: &[(&str, f64)] = &[
        (
            "pixgate_http_requests_total{route=\"transform\",status_class=\"2xx\"}",
            8.0,
        ),
        (
            "pixgate_http_requests_total{route=\"transform\",status_class=\"4xx\"}",
            2.0,
        ),
        (
            "pixgate_http_requests_total{route=\"transform\",status_class=\"5xx\"}",
            1.0,
        ),
        (
            "pixgate_http_request_duration_seconds_count{route=\"transform\"}",
            11.0,
        ),
        (
            "pixgate_cache_requests_total{cache=\"result\",outcome=\"hit\"}",
            2.0,
        ),
        (
            "pixgate_cache_requests_total{cache=\"result\",outcome=\"miss\"}",
            4.0,
        ),
        (
            "pixgate_cache_requests_total{cache=\"result\",outcome=\"coalesced\"}",
            4.0,
        ),
        (
            "pixgate_cache_requests_total{cache=\"source\",outcome=\"miss\"}",
            4.0,
        ),
        (
            "pixgate_cache_requests_total{cache=\"source\",outcome=\"hit\"}",
            0.0,
        ),
        ("pixgate_origin_fetches_total{outcome=\"ok\"}", 3.0),
        ("pixgate_origin_fetches_total{outcome=\"timeout\"}", 1.0),
        ("pixgate_errors_total{code=\"rate-limited\"}", 1.0),
        ("pixgate_errors_total{code=\"not-an-image\"}", 1.0),
        ("pixgate_errors_total{code=\"origin-timeout\"}", 1.0),
        ("pixgate_policy_decisions_total{outcome=\"allow\"}", 10.0),
        ("pixgate_policy_decisions_total{outcome=\"limited\"}", 1.0),
        ("pixgate_policy_decisions_total{outcome=\"deny\"}", 0.0),
        ("pixgate_policy_reloads_total{result=\"ok\"}", 1.0),
        ("pixgate_policy_reloads_total{result=\"failed\"}", 0.0),
        ("pixgate_policy_generation", 1.0),
        ("pixgate_cpu_jobs_total", 2.0),
        ("pixgate_cpu_rejected_total", 0.0),
        ("pixgate_output_images_total{format=\"jpg\"}", 3.0),
        ("pixgate_output_images_total{format=\"png\"}", 5.0),
        (
            "pixgate_stage_duration_seconds_count{stage=\"policy\"}",
            11.0,
        ),
        ("pixgate_stage_duration_seconds_count{stage=\"fetch\"}", 2.0),
        ("pixgate_stage_duration_seconds_count{stage=\"queue\"}", 2.0),
        (
            "pixgate_stage_duration_seconds_count{stage=\"decode\"}",
            2.0,
        ),
        (
            "pixgate_stage_duration_seconds_count{stage=\"transform\"}",
            2.0,
        ),
        (
            "pixgate_stage_duration_seconds_count{stage=\"encode\"}",
            2.0,
        ),
    ];
    let wrong: Vec<String> = expect
        .iter()
        .filter(|(s, v)| d(s) != *v)
        .map(|(s, v)| format!("{s}: moved {} (expected {v})", d(s)))
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert_eq!(after["pixgate_policy_generation"], 2.0);
    assert_eq!(after["pixgate_http_requests_in_flight"], 0.0);
    assert_eq!(after["pixgate_cpu_queue_depth"], 0.0);
    assert_eq!(after["pixgate_cache_entries{cache=\"result\"}"], 2.0);
    assert!(after["pixgate_cache_size_bytes{cache=\"result\"}"] > 0.0);
    assert!(d("pixgate_origin_fetched_bytes_total") > 10_000.0);
    assert!(d("pixgate_http_response_bytes_total") > 1_000.0);
    assert!(
        after
            .keys()
            .any(|k| k.starts_with("pixgate_build_info{git_hash="))
    );
    assert!(after.contains_key("process_resident_memory_bytes"));
    assert!(after.contains_key("process_open_fds"));
    px.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_text_passes_promtool() {
    let dir = TempDir::new("metrics-promtool");
    let px = start(&dir, 2.0).await;
    // Populate histograms and vectors first.
    assert_eq!(
        px.get("/insecure/rs:fit:32:0/plain/local:///seeding.jpg")
            .await
            .status,
        200
    );
    assert_eq!(px.get("/insecure/junk").await.status, 404);
    assert_eq!(px.get("/health").await.status, 200);
    let text = px.metrics().await;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`; .ci/run installs it)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    px.stop().await;
}

/// Keys, paths, hosts, Accept values and request ids never become label values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_junk_requests_add_no_series() {
    let dir = TempDir::new("metrics-junk");
    let px = start(&dir, 2.0).await;
    let junk =
        |i: usize| format!("/sig{i}/w:{i}/junk{i}/plain/https://host{i}.example/{i}.jpg%{i:x}");
    // One of each shape first, so the bounded series it touches exist.
    let _ = px.get(&junk(5000)).await;
    let _ = px.get("/").await;
    let count = |t: &str| samples(t).len();
    let before = count(&px.metrics().await);
    for i in 0..1000 {
        let path = junk(i);
        let key = format!("key-{i}");
        let accept = format!("image/x-{i}");
        let id = format!("req-{i}");
        let r = get(
            &px.url(&path),
            &[
                ("x-api-key", &key),
                ("accept", &accept),
                ("x-request-id", &id),
                ("x-forwarded-for", "203.0.113.9"),
            ],
        )
        .await;
        assert!(r.status >= 400);
        assert_eq!(r.header("x-request-id"), Some(id.as_str()));
    }
    let text = px.metrics().await;
    assert_eq!(count(&text), before, "series appeared");
    assert!(!text.contains("host1.example") && !text.contains("key-1") && !text.contains("req-1"));
    px.stop().await;
}

/// The shipped dashboard and alert rules only use metrics that exist, and promtool accepts
/// the rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_alerts_use_real_metrics() {
    let dir = TempDir::new("metrics-dashboard");
    let px = start(&dir, 2.0).await;
    // Error codes are labelled as they occur.
    assert_eq!(px.get("/insecure/junk").await.status, 404);
    let text = px.metrics().await;
    let exported: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dashboard = std::fs::read_to_string(root.join("docs/grafana-dashboard.json")).unwrap();
    let rules = std::fs::read_to_string(root.join("docs/prometheus-alerts.yml")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    assert!(json["panels"].as_array().unwrap().len() >= 10);
    let mut used = 0;
    for source in [&dashboard, &rules] {
        let mut rest = source.as_str();
        while let Some(i) = rest.find('p') {
            rest = &rest[i..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[name.len().max(1)..];
            if !(name.starts_with("pixgate_") || name.starts_with("process_")) {
                continue;
            }
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|b| exported.contains(b))
                .unwrap_or(&name);
            assert!(exported.contains(base), "{name} is not exported");
            used += 1;
        }
    }
    assert!(used > 30, "{used} metric references");
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(root.join("docs/prometheus-alerts.yml"))
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    px.stop().await;
}

/// The request id (the client's when sane) is on the response and on every log line of the
/// request: here a policy failure logged mid-request and the request line, in JSON logs.
#[test]
fn request_ids_tie_log_lines_together() {
    use std::io::BufRead;
    let dir = TempDir::new("metrics-logs");
    let file = dir.path("policy.lua");
    std::fs::write(
        &file,
        "function decide(req)\n  if req.key == 'err' then error('broken plan') end\n  return { allow = true }\nend\n",
    )
    .unwrap();
    let (mut child, addr) = crate::support::spawn_binary(
        &[
            ("PIXGATE_LOG_LEVEL", "info"),
            ("PIXGATE_LOG_FORMAT", "json"),
            ("PIXGATE_POLICY_FILE", file.to_str().unwrap()),
        ],
        true,
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = rt.block_on(get(
        &format!("http://{addr}/insecure/rs:fit:20:0/plain/local:///seeding.jpg"),
        &[("x-api-key", "err"), ("x-request-id", "trace-me-42")],
    ));
    assert_eq!(r.status, 200, "policy_on_error = allow");
    assert_eq!(r.header("x-request-id"), Some("trace-me-42"));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let stderr = child.stderr.take().unwrap();
    let lines: Vec<serde_json::Value> = std::io::BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .map(|l| serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    child.wait().unwrap();
    let ours: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["id"] == "trace-me-42" || l["span"]["id"] == "trace-me-42")
        .collect();
    let messages: Vec<&str> = ours.iter().filter_map(|l| l["message"].as_str()).collect();
    assert!(messages.contains(&"policy failed"), "{messages:?}");
    assert!(messages.contains(&"request"), "{messages:?}");
    let line = ours.iter().find(|l| l["message"] == "request").unwrap();
    for field in [
        "status",
        "bytes",
        "ms",
        "cache",
        "policy_ms",
        "fetch_ms",
        "decode_ms",
        "encode_ms",
    ] {
        assert!(!line[field].is_null(), "{field} missing in {line}");
    }
    assert_eq!(line["cache"], "MISS");
}
