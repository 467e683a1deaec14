//! Lua policies end to end: plans and 429s over HTTP, live edits of the file under a running
//! server (in-process and the real binary's log), the sandbox under attack, client addresses
//! behind proxies, and the `pixgate policy` commands on the shipped scripts.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::support::TempDir;
use crate::support::{Pixgate, get, log_channel, spawn_binary, test_config, wait_for_line};

const IMG: &str = "/insecure/rs:fit:32:32/plain/local:///sunset.png";

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

async fn start(policy: &Path, on_error: &str, trusted: &[&str]) -> Pixgate {
    Pixgate::start(pixgate::config::RawConfig {
        policy_file: Some(policy.to_str().unwrap().into()),
        policy_on_error: on_error.into(),
        trusted_proxies: trusted.iter().map(|s| s.to_string()).collect(),
        ..test_config()
    })
    .await
}

fn policy_of(p: &Pixgate) -> &pixgate::policy::Policy {
    p.state.policy.as_deref().expect("a policy is loaded")
}

async fn key(p: &Pixgate, k: &str) -> crate::support::Reply {
    get(&p.url(IMG), &[("x-api-key", k)]).await
}

fn message(r: &crate::support::Reply) -> String {
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

const PLANS: &str = r#"
local plans = { a1 = 5, a2 = 5, a3 = 5, b = 5 }
function decide(req)
  if req.key == nil then return { allow = true } end
  local rate = plans[req.key]
  if rate == nil then return { allow = false, status = 401, reason = "Unknown API key" } end
  return { allow = true, bucket = "key:" .. req.key, rate = rate, burst = 5 }
end
"#;

#[tokio::test]
async fn plans_limit_each_key_on_its_own() {
    let dir = TempDir::new("policy-plans");
    std::fs::write(dir.path("policy.lua"), PLANS).unwrap();
    let p = start(&dir.path("policy.lua"), "allow", &[]).await;
    // Warm the result cache anonymously, so the keyed burst below is fast hits.
    assert_eq!(p.get(IMG).await.status, 200);
    // 5/s with burst 5: five immediate requests pass, the sixth is refused, provided the six
    // take under one refill interval (200 ms). A stalled machine gets a fresh key and retries.
    let mut checked = false;
    for k in ["a1", "a2", "a3"] {
        let t = Instant::now();
        let mut statuses = Vec::new();
        let mut last = None;
        for _ in 0..6 {
            let r = key(&p, k).await;
            statuses.push(r.status);
            last = Some(r);
        }
        if t.elapsed() >= Duration::from_millis(200) {
            continue;
        }
        assert_eq!(statuses, [200, 200, 200, 200, 200, 429], "{k}");
        let r = last.unwrap();
        assert_eq!(r.code(), "rate-limited");
        assert_eq!(r.header("retry-after"), Some("1"));
        assert_eq!(r.header("ratelimit-limit"), Some("5"));
        assert_eq!(r.header("ratelimit-remaining"), Some("0"));
        assert_eq!(r.header("ratelimit-reset"), Some("1"));
        assert_eq!(r.header("cache-control"), Some("no-store"));
        checked = true;
        break;
    }
    assert!(
        checked,
        "three bursts of six requests each took over 200 ms"
    );
    // Another key is unaffected.
    assert_eq!(key(&p, "b").await.status, 200);
    // An unknown key gets the status and reason the policy chose.
    let r = key(&p, "nope").await;
    assert_eq!((r.status, r.code().as_str()), (401, "policy-denied"));
    assert_eq!(message(&r), "Unknown API key");
    let s = &policy_of(&p).stats;
    assert_eq!(s.limited.load(Ordering::Relaxed), 1);
    assert_eq!(s.denied.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn keys_come_from_header_bearer_or_query_and_ips_from_trusted_proxies() {
    let dir = TempDir::new("policy-echo");
    std::fs::write(
        dir.path("policy.lua"),
        r#"function decide(req)
             if req.key == nil and req.ip == "203.0.113.7" then
               return { allow = true }
             end
             return { allow = false, status = 403,
                      reason = "ip=" .. req.ip .. " key=" .. tostring(req.key) }
           end"#,
    )
    .unwrap();
    let untrusting = start(&dir.path("policy.lua"), "allow", &[]).await;
    let trusting = start(&dir.path("policy.lua"), "allow", &["127.0.0.1"]).await;
    let ask = |p: &Pixgate, path: &str, h: &[(&'static str, &'static str)]| {
        let url = p.url(path);
        let h = h.to_vec();
        async move { message(&get(&url, &h).await) }
    };
    assert_eq!(
        ask(&untrusting, IMG, &[("x-api-key", "k1")]).await,
        "ip=127.0.0.1 key=k1"
    );
    assert_eq!(
        ask(&untrusting, IMG, &[("authorization", "Bearer k2")]).await,
        "ip=127.0.0.1 key=k2"
    );
    assert_eq!(
        ask(&untrusting, &format!("{IMG}?key=k3"), &[]).await,
        "ip=127.0.0.1 key=k3"
    );
    // A client's own X-Forwarded-For is not believed from an untrusted peer...
    let spoof = [
        ("x-forwarded-for", "6.6.6.6"),
        ("x-real-ip", "6.6.6.6"),
        ("x-api-key", "k"),
    ];
    assert_eq!(ask(&untrusting, IMG, &spoof).await, "ip=127.0.0.1 key=k");
    // ...and from a trusted proxy only the hop the proxy appended counts.
    let chain = [
        ("x-forwarded-for", "6.6.6.6, 198.51.100.4"),
        ("x-api-key", "k"),
    ];
    assert_eq!(ask(&trusting, IMG, &chain).await, "ip=198.51.100.4 key=k");
    let r = get(&trusting.url(IMG), &[("x-forwarded-for", "203.0.113.7")]).await;
    assert_eq!(r.status, 200);
}

/// Each attack fails inside the VM; with `on_error = "deny"` it is a 503, and the very next
/// request is served normally.
#[tokio::test]
async fn the_sandbox_holds_under_a_running_server() {
    let dir = TempDir::new("policy-sandbox");
    let marker = dir.path("pwned");
    std::fs::write(
        dir.path("policy.lua"),
        format!(
            r#"function decide(req)
  local k = req.key
  if k == "exec" then os.execute("touch {m}") end
  if k == "io" then io.open("{m}", "w") end
  if k == "ffi" then require "ffi" end
  if k == "dump" then load(string.dump(function() end))() end
  if k == "rep" then local s = string.rep("x", 1e9) end
  if k == "loop" then while true do end end
  if k == "bad" then return {{ allow = "yes" }} end
  return {{ allow = true }}
end"#,
            m = marker.display()
        ),
    )
    .unwrap();
    let p = start(&dir.path("policy.lua"), "deny", &[]).await;
    for k in ["exec", "io", "ffi", "dump", "rep", "loop", "bad"] {
        let r = key(&p, k).await;
        assert_eq!((r.status, r.code().as_str()), (503, "policy-error"), "{k}");
        assert_eq!(r.header("retry-after"), Some("1"));
        assert_eq!(p.get(IMG).await.status, 200, "after {k}");
    }
    assert!(!marker.exists());
    assert_eq!(policy_of(&p).stats.errors.load(Ordering::Relaxed), 7);
    // The default keeps serving when the policy fails.
    let lenient = start(&dir.path("policy.lua"), "allow", &[]).await;
    assert_eq!(key(&lenient, "loop").await.status, 200);
}

#[tokio::test]
async fn live_edits_apply_after_the_generation_advances_and_broken_edits_do_not() {
    let dir = TempDir::new("policy-live");
    let file = dir.path("policy.lua");
    std::fs::write(&file, PLANS).unwrap();
    let p = start(&file, "allow", &[]).await;
    let policy = policy_of(&p);
    assert_eq!(policy.generation(), 1);
    assert_eq!(key(&p, "b").await.status, 200);
    // Key b's plan lapses: edit the file while the server runs.
    std::fs::write(
        &file,
        PLANS.replace(
            "if rate == nil then",
            "if req.key == \"b\" then return { allow = false, status = 402, reason = \"Plan lapsed\" } end\n  if rate == nil then",
        ),
    )
    .unwrap();
    policy
        .stats
        .wait_until(|s| s.reloads_ok.load(Ordering::Relaxed) >= 1)
        .await;
    assert_eq!(policy.generation(), 2);
    let r = key(&p, "b").await;
    assert_eq!((r.status, message(&r).as_str()), (402, "Plan lapsed"));
    // Broken edits: syntax, runtime error, bad table, a module that vanished.
    let broken = [
        "function decide(req) return { allow = true ",
        "function decide(req) error('boom') end",
        "function decide(req) return { allow = true, bucket = 'x' } end",
        "local k = require 'keys'\nfunction decide(req) return { allow = true } end",
    ];
    for (i, text) in broken.iter().enumerate() {
        std::fs::write(&file, text).unwrap();
        policy
            .stats
            .wait_until(|s| s.reloads_failed.load(Ordering::Relaxed) > i as u64)
            .await;
        assert_eq!(policy.generation(), 2, "{text}");
        assert_eq!(key(&p, "b").await.status, 402, "{text}");
        assert_eq!(key(&p, "a1").await.status, 200, "{text}");
    }
    // A module appearing makes the last edit good without touching policy.lua.
    std::fs::write(dir.path("keys.lua"), "return {}").unwrap();
    policy
        .stats
        .wait_until(|s| s.reloads_ok.load(Ordering::Relaxed) >= 2)
        .await;
    assert_eq!(policy.generation(), 3);
    assert_eq!(key(&p, "b").await.status, 200);
}

/// The real binary: the reload is visible in its log with the generation, a broken edit with
/// the file and line, and SIGHUP reloads.
#[test]
fn the_binary_logs_reloads_with_generation_and_errors_with_line() {
    let dir = TempDir::new("policy-binary");
    let file = dir.path("policy.lua");
    std::fs::write(
        &file,
        "function decide(req)\n  return { allow = true }\nend\n",
    )
    .unwrap();
    let (mut child, addr) = spawn_binary(
        &[
            ("PIXGATE_LOG_LEVEL", "info"),
            ("PIXGATE_POLICY_FILE", file.to_str().unwrap()),
        ],
        true,
    );
    let rx = log_channel(&mut child);
    let wait_for = |needles: &[&str]| wait_for_line(&rx, needles);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = |k: &str| {
        rt.block_on(get(&format!("http://{addr}{IMG}"), &[("x-api-key", k)]))
            .status
    };
    assert_eq!(status("x"), 200);
    std::fs::write(
        &file,
        "function decide(req)\n  return { allow = false, status = 403 }\nend\n",
    )
    .unwrap();
    wait_for(&["policy loaded", "generation=2"]);
    assert_eq!(status("x"), 403);
    std::fs::write(&file, "function decide(req)\n  return { allow = \nend\n").unwrap();
    wait_for(&["policy reload failed", "policy.lua:3:", "generation=2"]);
    assert_eq!(status("x"), 403);
    std::fs::write(
        &file,
        "function decide(req)\n  return { allow = true }\nend\n",
    )
    .unwrap();
    wait_for(&["policy loaded", "generation=3"]);
    // SIGHUP reloads even when nothing changed.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    wait_for(&["policy loaded", "generation=4"]);
    assert_eq!(status("x"), 200);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn the_binary_refuses_to_start_with_a_broken_or_missing_policy() {
    let dir = TempDir::new("policy-refuse");
    let file = dir.path("policy.lua");
    std::fs::write(&file, "function decide(req)\n  return {\nend\n").unwrap();
    for (path, expect) in [
        (file.to_str().unwrap(), "policy.lua:3:"),
        (
            "/nonexistent/policy.lua",
            "policy_file: /nonexistent/policy.lua is not a file",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pixgate"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("PIXGATE_METRICS_LISTEN", "127.0.0.1:0")
            .env("PIXGATE_POLICY_FILE", path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(out.stdout.is_empty(), "never printed `listening on`");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{err}");
    }
}

/// The shipped policy, as `cargo run -- serve` loads it from the repository root.
#[test]
fn the_shipped_policy_serves_anonymous_clients_and_knows_the_demo_keys() {
    let (mut child, addr) = spawn_binary(&[("PIXGATE_LOG_LEVEL", "warn")], false);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = |k: Option<&str>| {
        let h: Vec<(&str, &str)> = k.map(|k| ("x-api-key", k)).into_iter().collect();
        rt.block_on(get(&format!("http://{addr}{IMG}"), &h)).status
    };
    assert_eq!(status(None), 200);
    assert_eq!(status(Some("demo-pro")), 200);
    assert_eq!(status(Some("demo-blocked")), 403);
    assert_eq!(status(Some("demo-lapsed")), 402);
    assert_eq!(status(Some("no-such-key")), 401);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

fn pixgate(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pixgate"))
        .args(args)
        .env_remove("PIXGATE_POLICY_FILE")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn eval(file: &str, args: &[&str]) -> serde_json::Value {
    let f = repo(file);
    let mut all = vec!["policy", "eval", f.to_str().unwrap()];
    all.extend_from_slice(args);
    let (code, out, err) = pixgate(&all);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(out.trim()).unwrap()
}

#[test]
fn policy_check_accepts_every_shipped_script_and_names_the_line_of_a_broken_one() {
    let mut files = vec![repo("lua/policy.lua")];
    for e in std::fs::read_dir(repo("lua/examples")).unwrap() {
        files.push(e.unwrap().path());
    }
    assert!(files.len() >= 6);
    for f in &files {
        let (code, out, err) = pixgate(&["policy", "check", f.to_str().unwrap()]);
        assert_eq!(code, 0, "{}: {err}", f.display());
        assert!(out.contains("policy ok"), "{out}");
    }
    let dir = TempDir::new("policy-check");
    let bad = dir.path("bad.lua");
    std::fs::write(
        &bad,
        "function decide(req)\n  return { allow = true, rate = 1 }\nend\n",
    )
    .unwrap();
    let (code, _, err) = pixgate(&["policy", "check", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("bad.lua:1: decide() returned a bad decision: field `rate` needs a `bucket`"),
        "{err}"
    );
}

#[test]
fn policy_eval_shows_what_each_example_decides() {
    let d = eval("lua/policy.lua", &["--key", "demo-free"]);
    assert_eq!(
        (d["bucket"].as_str(), d["rate"].as_f64()),
        (Some("key:demo-free"), Some(10.0))
    );
    let d = eval("lua/policy.lua", &["--ip", "198.51.100.1"]);
    assert_eq!(d["bucket"], "ip:198.51.100.1");
    assert_eq!(eval("lua/policy.lua", &["--key", "zzz"])["status"], 401);

    let d = eval("lua/examples/per_key_plans.lua", &["--key", "k-batch-1"]);
    assert_eq!(
        (d["rate"].as_f64(), d["per"].as_f64(), d["burst"].as_u64()),
        (Some(600.0), Some(60.0), Some(50))
    );
    assert_eq!(
        eval("lua/examples/per_key_plans.lua", &["--key", "k-abuser"])["status"],
        403
    );
    assert_eq!(eval("lua/examples/per_key_plans.lua", &[])["status"], 401);

    let own = "/insecure/rs:fit:300:0/plain/https://img.acme.example/a.jpg";
    let sub = "/insecure/plain/https://eu.cdn.acme.example/a.jpg";
    let other = "/insecure/plain/https://evil.example/a.jpg";
    let ex = "lua/examples/origin_allowlist.lua";
    assert_eq!(eval(ex, &["--key", "acme", "--path", own])["allow"], true);
    assert_eq!(eval(ex, &["--key", "acme", "--path", sub])["allow"], true);
    assert_eq!(eval(ex, &["--key", "acme", "--path", other])["status"], 403);
    assert_eq!(eval(ex, &["--key", "globex", "--path", own])["status"], 403);

    let ex = "lua/examples/hotlink.lua";
    assert_eq!(eval(ex, &[])["allow"], true);
    assert_eq!(
        eval(ex, &["--referer", "https://shop.example.com/p/1"])["allow"],
        true
    );
    assert_eq!(
        eval(ex, &["--referer", "https://leech.example/x"])["status"],
        403
    );

    let ex = "lua/examples/cost_by_size.lua";
    let cost = |path: &str| eval(ex, &["--path", path])["cost"].as_u64().unwrap();
    assert_eq!(cost("/insecure/rs:fit:100:100/plain/local:///a.jpg"), 1);
    assert_eq!(cost("/insecure/rs:fit:1920:1080/plain/local:///a.jpg"), 3);
    assert_eq!(
        cost("/insecure/rs:fit:1920:1080/dpr:2/plain/local:///a.jpg"),
        9
    );
    assert_eq!(cost("/insecure/plain/local:///a.jpg"), 8);

    let ex = repo("lua/examples/incident.lua");
    assert_eq!(eval("lua/examples/incident.lua", &[])["allow"], true);
    let dir = TempDir::new("policy-incident");
    let on = dir.path("incident.lua");
    let text = std::fs::read_to_string(&ex).unwrap();
    std::fs::write(
        &on,
        text.replace("local INCIDENT = false", "local INCIDENT = true"),
    )
    .unwrap();
    let (code, out, _) = pixgate(&["policy", "eval", on.to_str().unwrap()]);
    assert_eq!(code, 0);
    let d: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (d["status"].as_u64(), d["retry_after"].as_u64()),
        (Some(429), Some(120))
    );
    let (_, out, _) = pixgate(&[
        "policy",
        "eval",
        on.to_str().unwrap(),
        "--key",
        "k-status-page",
    ]);
    assert!(out.contains("\"allow\":true"), "{out}");
}

/// Issue 15, item 5: work Lua does in C (pattern matching, `rep`, error objects) no longer
/// freezes the server. Requests whose `decide` runs away cost their own policy deadline;
/// others are answered meanwhile; an edit whose top level runs away is refused within the
/// reload deadline and the server keeps the old policy; `policy check` ends too.
#[test]
fn runaway_lua_never_blocks_the_server() {
    let dir = TempDir::new("policy-runaway");
    let file = dir.path("policy.lua");
    let good = "function decide(req)\n\
                  if req.key == 'find' then (\"a\"):rep(1e5):find('.-.-.-.-b') end\n\
                  if req.key == 'gsub' then (\"a\"):rep(3e4):gsub('.-.-b', 'x') end\n\
                  if req.key == 'tostring' then error(setmetatable({}, {__tostring = function() return (\"a\"):rep(1e5):find('.-.-.-.-b') end})) end\n\
                  if req.key == 'concat' then local s = ('x'):rep(4e6) for i = 1, 1e9 do local t = s .. 'y' end end\n\
                  return { allow = true }\n\
                end\n";
    std::fs::write(&file, good).unwrap();
    let (mut child, addr) = spawn_binary(
        &[
            ("PIXGATE_LOG_LEVEL", "info"),
            ("PIXGATE_POLICY_FILE", file.to_str().unwrap()),
            ("PIXGATE_POLICY_ON_ERROR", "deny"),
        ],
        true,
    );
    let logs = log_channel(&mut child);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Many runaway requests at once, and plain ones among them.
        let mut bad = Vec::new();
        for i in 0..16 {
            let k = ["find", "gsub", "tostring", "concat"][i % 4];
            let url = format!("http://{addr}{IMG}");
            bad.push(tokio::spawn(async move {
                let t = Instant::now();
                let r = get(&url, &[("x-api-key", k)]).await;
                (r.status, r.code(), t.elapsed())
            }));
        }
        let t = Instant::now();
        let ok = get(&format!("http://{addr}{IMG}"), &[("x-api-key", "fine")]).await;
        assert_eq!(ok.status, 200, "{}", ok.code());
        let plain_took = t.elapsed();
        for b in bad {
            let (status, code, took) = b.await.unwrap();
            assert_eq!((status, code.as_str()), (503, "policy-error"));
            eprintln!("runaway decide answered {status} in {took:?}");
            assert!(took < Duration::from_secs(5), "{took:?}");
        }
        eprintln!("a plain request among 16 runaway ones: {plain_took:?}");
        assert!(plain_took < Duration::from_secs(5));
    });
    // An edit whose top level runs away in C: refused within the reload deadline, while the
    // server answers.
    std::fs::write(
        &file,
        "local s = ('a'):rep(1e5) s:find('.-.-.-.-b')\nfunction decide(req) return { allow = false } end\n",
    )
    .unwrap();
    wait_for_line(
        &logs,
        &["policy reload failed", "instruction budget", "generation=1"],
    );
    let health = rt.block_on(get(&format!("http://{addr}/health"), &[]));
    assert_eq!(health.status, 200);
    let r = rt.block_on(get(
        &format!("http://{addr}{IMG}"),
        &[("x-api-key", "fine")],
    ));
    assert_eq!(r.status, 200, "the old policy still serves");
    // A later valid edit is taken.
    std::fs::write(
        &file,
        "function decide(req) return { allow = false, status = 402 } end\n",
    )
    .unwrap();
    wait_for_line(&logs, &["policy loaded", "generation=2"]);
    let r = rt.block_on(get(
        &format!("http://{addr}{IMG}"),
        &[("x-api-key", "fine")],
    ));
    assert_eq!(r.status, 402);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(0));
    // `policy check` on the runaway edit ends with the error, too.
    let hang = dir.path("hang.lua");
    std::fs::write(
        &hang,
        "local s = ('a'):rep(1e5) s:find('.-.-.-.-b')\nfunction decide(req) return { allow = true } end\n",
    )
    .unwrap();
    let t = Instant::now();
    let (code, _, err) = pixgate(&["policy", "check", hang.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("hang.lua:1:") && err.contains("instruction budget"),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(10));
}

/// Issue 15, item 6: the shipped policy's `burst` typo in the keyed branch is caught by its
/// own tests (`check` and the live reload refuse it), and a policy without tests that fails
/// at run time is never "no limit": each key gets `policy_error_rate`, the failures are
/// counted as `outcome="error"` and logged with the line.
#[test]
fn a_typo_in_a_keyed_branch_never_lifts_the_limits() {
    let dir = TempDir::new("policy-typo");
    let shipped = std::fs::read_to_string(repo("lua/policy.lua")).unwrap();
    std::fs::copy(repo("lua/keys.lua"), dir.path("keys.lua")).unwrap();
    let typo = shipped.replace("burst = plan.burst", "brust = plan.burst");
    assert_ne!(typo, shipped);
    std::fs::write(dir.path("typo.lua"), &typo).unwrap();
    let (code, _, err) = pixgate(&["policy", "check", dir.path("typo.lua").to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("test `free plan`") && err.contains("unknown field `brust`"),
        "{err}"
    );
    // A bare file name finds its modules (`require "keys"`) in the current folder.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pixgate"))
        .args(["policy", "check", "policy.lua"])
        .current_dir(repo("lua"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Live: the shipped policy runs, the typo'd edit is refused.
    let file = dir.path("policy.lua");
    std::fs::write(&file, &shipped).unwrap();
    let (mut child, addr) = spawn_binary(
        &[
            ("PIXGATE_LOG_LEVEL", "info"),
            ("PIXGATE_POLICY_FILE", file.to_str().unwrap()),
        ],
        true,
    );
    let logs = log_channel(&mut child);
    std::fs::write(&file, &typo).unwrap();
    wait_for_line(
        &logs,
        &[
            "policy reload failed",
            "unknown field `brust`",
            "generation=1",
        ],
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(0));

    // Without tests the typo loads (the canned requests never reach that branch); every
    // keyed request then fails, and is served within policy_error_rate, not unlimited.
    let untested = typo[..typo.find("\ntests = {").unwrap()].to_string();
    std::fs::write(&file, &untested).unwrap();
    let (mut child, addr2) = spawn_binary(
        &[
            ("PIXGATE_LOG_LEVEL", "warn"),
            ("PIXGATE_POLICY_FILE", file.to_str().unwrap()),
            ("PIXGATE_POLICY_ERROR_RATE", "5"),
            ("PIXGATE_METRICS_LISTEN", "127.0.0.1:0"),
        ],
        true,
    );
    let logs = log_channel(&mut child);
    let _ = addr;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let statuses: Vec<u16> = (0..30)
        .map(|_| {
            rt.block_on(get(
                &format!("http://{addr2}{IMG}"),
                &[("x-api-key", "demo-enterprise")],
            ))
            .status
        })
        .collect();
    let served = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    eprintln!(
        "30 requests of a paying key under a failing policy: {served} served, {limited} limited"
    );
    assert!((10..=12).contains(&served), "{statuses:?}");
    assert_eq!(served + limited, 30, "{statuses:?}");
    let line = wait_for_line(&logs, &["policy failed", "unknown field `brust`"]);
    assert!(
        line.contains("policy.lua:") && line.contains("within 5/s"),
        "{line}"
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
