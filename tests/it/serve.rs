//! The transform server over real HTTP: URL forms and signatures, origin misbehaviour,
//! address guarding, hostile sources, the CPU gate's overflow, HTTP/2, header timeouts,
//! graceful shutdown, and the binary's `serve` contract.

use std::time::Duration;

use base64::Engine as _;
use pixgate::config::RawKey;

use crate::manifest::{Expect, expectation};
use crate::support::Origin;
use crate::support::{Pixgate, get, request, test_config};
use crate::support::{TempDir, decode, manifest};

fn b64(url: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_bundled_samples_with_api_headers() {
    let mut raw = test_config();
    raw.allow_loopback_sources = false;
    let px = Pixgate::start(raw).await;
    let r = px
        .get("/insecure/rs:fit:400:0/plain/local:///seeding.jpg")
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.header("content-type"), Some("image/jpeg"));
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    assert_eq!(r.header("cache-control"), Some("max-age=31536000, public"));
    assert_eq!(
        r.header("content-disposition"),
        Some("inline; filename=\"seeding.jpg\"")
    );
    assert_eq!(
        r.header("content-security-policy"),
        Some("script-src 'none'")
    );
    assert!(r.header("x-request-id").is_some_and(|v| v.len() == 16));
    assert!(
        r.header("last-modified").is_some(),
        "file mtime as Last-Modified"
    );
    assert_eq!(decode(&r.body).width(), 400);

    let r = px
        .get("/_/rs:fill:100:100/fn:thumb/att:1/plain/local:///sunset.png@webp")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("image/webp"));
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=\"thumb.webp\"")
    );

    let r = request(
        "HEAD",
        &px.url("/insecure/rs:fit:400:0/plain/local:///seeding.jpg"),
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty(), "HEAD has no body");
    assert!(r.header("content-length").is_some_and(|l| l != "0"));

    let r = get(&px.url("/health"), &[("x-request-id", "trace-me_1")]).await;
    assert_eq!((r.status, &r.body[..]), (200, &b"ok"[..]));
    assert_eq!(r.header("x-request-id"), Some("trace-me_1"));

    for (method, path, status, code) in [
        ("GET", "/", 404, "not-found"),
        ("GET", "/favicon.ico", 404, "not-found"),
        (
            "POST",
            "/insecure/plain/local:///seeding.jpg",
            404,
            "not-found",
        ),
        (
            "GET",
            "/insecure/rs:fit:10:10/plain/local:///missing.jpg",
            404,
            "source-not-found",
        ),
        (
            "GET",
            "/insecure/plain/local:///../Cargo.toml",
            404,
            "source-not-found",
        ),
        (
            "GET",
            "/insecure/nope:1/plain/local:///seeding.jpg",
            404,
            "invalid-url",
        ),
        (
            "GET",
            "/insecure/eth:1/plain/local:///seeding.jpg",
            404,
            "unsupported-option",
        ),
        (
            "GET",
            "/insecure/msr:1/plain/local:///seeding.jpg",
            403,
            "security-option-forbidden",
        ),
        (
            "GET",
            "/insecure/plain/local:///seeding.jpg@jxl",
            422,
            "unsupported-output-format",
        ),
        (
            "GET",
            "/rs:fit:10:10/plain/local:///seeding.jpg",
            403,
            "invalid-signature",
        ),
        (
            "GET",
            "/insecure/plain/local:///NOTICE.md",
            422,
            "not-an-image",
        ),
    ] {
        let r = request(method, &px.url(path), &[]).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (status, code),
            "{method} {path}"
        );
        assert_eq!(r.header("content-type"), Some("application/json"), "{path}");
    }
    px.stop().await;
}

fn key(tenant: &str, key: &str, salt: &str) -> RawKey {
    RawKey {
        tenant: tenant.into(),
        key: key.into(),
        salt: salt.into(),
    }
}

const B_KEY: &str = "943b421c9eb07c830af81030552c86009268de4e532ba2ee2eab8247c6da0881";
const B_SALT: &str = "520f986b998545b4785e0defbc4f3c1203f22de2374a3d53cb7a7fe9fea309c5";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_vectors_are_accepted_and_tampering_refused() {
    let dir = TempDir::new("sig-root");
    std::fs::copy(
        crate::support::fixture("conformance/png/pngsuite/basn2c08.png"),
        dir.path("test1.png"),
    )
    .unwrap();
    let mut raw = test_config();
    raw.local_root = dir.0.to_string_lossy().into_owned();
    // Sources other than local ones are refused before any DNS lookup.
    raw.allowed_sources = vec!["http://127.0.0.1:1/".into()];
    raw.keys = vec![
        key("a", "736563726574", "68656C6C6F"),
        key("b", B_KEY, B_SALT),
        key(
            "c",
            "4aca92a7c3c68440f2c1db980c856f39",
            "6c28d7a545acc92d688d5f1d3e21087a",
        ),
        key(
            "c2",
            "db66ae1b1b73fe2851ad789a673d1698",
            "bdfbf3df94315d0c2bc7a2ef691f5d99",
        ),
        key("e", "746573742d6b6579", "746573742d73616c74"),
    ];
    let px = Pixgate::start(raw.clone()).await;
    // (signature, path, expected status, expected code): a valid signature gets past the
    // signature check (403) to the source check.
    let vectors = [
        (
            "oKfUtW34Dvo2BGQehJFR4Nr0_rIjOtdtzJ3QFsUcXH8",
            "/rs:fill:300:400:0/g:sm/aHR0cDovL2V4YW1w/bGUuY29tL2ltYWdl/cy9jdXJpb3NpdHku/anBn.png",
        ),
        (
            "m3k5QADfcKPDj-SDI2AIogZbC3FlAXszuwhtWXYqavc",
            "/rs:fit:300:300/plain/http://img.example.com/pretty/image.jpg",
        ),
        (
            "-1bXMFE3qm-pOAgAomSBHIoNeIC9vYR6TZV5s3vkvLk",
            "/ar:t/cb:clear/ex:t/f:webp/g:noea:10:10/sa:10/w:300/plain/https://example.com/image.jpg",
        ),
        (
            "K-7vJsYBybwq33VIfpgm9uWUBB48BX6Y5ygsxP9hCY8",
            "/ar:t/cb:clear/ex:t/f:webp/g:noea:10:10/sa:10/w:300/plain/https://example.com/image.jpg",
        ),
        (
            "zsdsCjFCqcAniKFCygMBToRh6l5jVZbL0bhrnnUGK58",
            "/el:t/f:png/g:no/h:300/rt:fit/w:300/aHR0cHM6Ly9leGFtcGxlLmNvbS9pbWFnZS5qcGc",
        ),
        (
            "xOner18d7-LJwkl4bifXGbC1_4kZXxsPLnuuvsMtcWo",
            "/aHR0cHM6Ly9leGFtcGxlLmNvbS9pbWFnZS5qcGc",
        ),
    ];
    for (sig, path) in vectors {
        let r = px.get(&format!("/{sig}{path}")).await;
        assert_ne!(r.status, 403, "{sig} must verify: {}", r.code());
        assert!(
            matches!(
                r.code().as_str(),
                "source-not-allowed" | "unsupported-option"
            ),
            "{}",
            r.code()
        );
        // One flipped character, padding, and truncation are all refused.
        let mut flipped = sig.to_string();
        let c = if flipped.as_bytes()[3] == b'A' {
            "B"
        } else {
            "A"
        };
        flipped.replace_range(3..4, c);
        for bad in [flipped, format!("{sig}="), sig[..11].to_string()] {
            let r = px.get(&format!("/{bad}{path}")).await;
            assert_eq!(
                (r.status, r.code().as_str()),
                (403, "invalid-signature"),
                "{bad}"
            );
        }
    }
    // Vector E signs a local source: end to end.
    let r = px
        .get("/My9d3xq_PYpVHsPrCyww0Kh1w5KZeZhIlWhsa4az1TI/rs:fill:4:4/plain/local:///test1.png")
        .await;
    assert_eq!(r.status, 200, "{}", r.code());
    assert_eq!(decode(&r.body).width(), 4);
    // The same URL with its colons encoded by a CDN.
    let r = px.get("/My9d3xq_PYpVHsPrCyww0Kh1w5KZeZhIlWhsa4az1TI/rs%3Afill%3A4%3A4/plain/local:///test1.png").await;
    assert_eq!(r.status, 200);
    // Unsigned-style URL on a signing server.
    assert_eq!(
        px.get("/insecure/rs:fill:4:4/plain/local:///test1.png")
            .await
            .status,
        403
    );
    px.stop().await;

    // Truncated signatures: exact size only.
    raw.signature_size = 8;
    let px = Pixgate::start(raw).await;
    let path = "/rs:fit:300:300/plain/http://img.example.com/pretty/image.jpg";
    assert_eq!(
        px.get(&format!("/m3k5QADfcKM{path}")).await.code(),
        "source-not-allowed"
    );
    let full = "/m3k5QADfcKPDj-SDI2AIogZbC3FlAXszuwhtWXYqavc";
    assert_eq!(px.get(&format!("{full}{path}")).await.status, 403);
    px.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_forms_presets_and_expiry() {
    let origin = Origin::start().await;
    let mut raw = test_config();
    raw.presets = [("thumb".to_string(), "rs:fill:64:64/q:70".to_string())]
        .into_iter()
        .collect();
    let px = Pixgate::start(raw.clone()).await;
    let src = origin.url("f/photos/lomiri16_Wine_by_Jakkub_Mede.jpg");

    let r = px
        .get(&format!("/insecure/rs:fit:120:0/plain/{src}@webp"))
        .await;
    assert_eq!(
        (r.status, r.header("content-type")),
        (200, Some("image/webp"))
    );
    assert_eq!(decode(&r.body).width(), 120);
    // Percent-encoded plain URL, and a collapsed `http:/`.
    let encoded: String =
        percent_encoding::utf8_percent_encode(&src, percent_encoding::NON_ALPHANUMERIC).to_string();
    assert_eq!(
        px.get(&format!("/insecure/w:50/plain/{encoded}"))
            .await
            .status,
        200
    );
    let collapsed = src.replacen("http://", "http:/", 1);
    assert_eq!(
        px.get(&format!("/insecure/w:50/plain/{collapsed}"))
            .await
            .status,
        200
    );
    // Base64, chunked, with an extension.
    let enc = b64(&src);
    let chunked: Vec<String> = enc
        .as_bytes()
        .chunks(16)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    let r = px
        .get(&format!(
            "/insecure/rs%3Afit%3A80%3A0/{}.png",
            chunked.join("/")
        ))
        .await;
    assert_eq!(
        (r.status, r.header("content-type")),
        (200, Some("image/png"))
    );
    assert_eq!(decode(&r.body).width(), 80);
    // Presets.
    let r = px.get(&format!("/insecure/pr:thumb/plain/{src}")).await;
    assert_eq!(decode(&r.body).width(), 64);
    assert_eq!(
        px.get(&format!("/insecure/pr:nope/plain/{src}"))
            .await
            .code(),
        "unknown-preset"
    );
    // Expiry: past → 404; future → Cache-Control capped.
    let r = px
        .get(&format!("/insecure/exp:1600000000/w:10/plain/{src}"))
        .await;
    assert_eq!((r.status, r.code().as_str()), (404, "expired-url"));
    let soon = pixgate::now_unix() + 120;
    let r = px
        .get(&format!("/insecure/exp:{soon}/w:10/plain/{src}"))
        .await;
    let cc = r.header("cache-control").unwrap();
    let age: u64 = cc
        .trim_start_matches("max-age=")
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(age <= 120 && age > 60, "{cc}");
    assert_eq!(
        r.header("last-modified"),
        Some("Sun, 06 Nov 1994 08:49:37 GMT"),
        "origin's"
    );
    px.stop().await;

    raw.only_presets = true;
    let px = Pixgate::start(raw).await;
    assert_eq!(
        px.get(&format!("/insecure/thumb/plain/{src}")).await.status,
        200
    );
    assert_eq!(
        px.get(&format!("/insecure/w:10/plain/{src}")).await.status,
        404
    );
    px.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_misbehaviour_maps_to_statuses() {
    let origin = Origin::start().await;
    let mut raw = test_config();
    raw.download_timeout = 1.0;
    raw.max_src_file_size = 5_000_000;
    raw.max_redirects = 5;
    let px = Pixgate::start(raw).await;
    let photo = "photos/lomiri16_Wine_by_Jakkub_Mede.jpg";
    let closed = {
        // A port nothing listens on.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cases = [
        (origin.url(&format!("drip/{photo}")), 504, "origin-timeout"),
        (origin.url(&format!("stall/{photo}")), 504, "origin-timeout"),
        (
            origin.url(&format!("truncated/{photo}")),
            502,
            "origin-bad-response",
        ),
        (
            origin.url(&format!("huge-length/{photo}")),
            422,
            "source-file-too-large",
        ),
        (origin.url("status/404"), 404, "source-not-found"),
        (origin.url("status/410"), 410, "origin-client-error"),
        (origin.url("status/403"), 403, "origin-client-error"),
        (origin.url("status/500"), 502, "origin-server-error"),
        (origin.url("status/503"), 502, "origin-server-error"),
        (origin.url(&format!("redirect/3/{photo}")), 200, ""),
        (
            origin.url(&format!("redirect/9/{photo}")),
            404,
            "too-many-redirects",
        ),
        (origin.url("loop"), 404, "too-many-redirects"),
        (origin.url("html"), 422, "not-an-image"),
        (
            format!("http://127.0.0.1:{closed}/x.jpg"),
            404,
            "source-unreachable",
        ),
        (
            origin.url("f/photos/lomiri16_seeding_baseline.jpg"),
            200,
            "",
        ),
    ];
    for (src, status, code) in cases {
        // Fixture names need no escaping in a plain URL.
        let r = px.get(&format!("/insecure/rs:fit:100:0/plain/{src}")).await;
        assert_eq!((r.status, r.code().as_str()), (status, code), "{src}");
    }
    px.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_addresses_are_never_connected_to() {
    let allowed = Origin::start_on("127.0.0.2").await;
    let blocked = Origin::start().await;
    let mut raw = test_config();
    raw.allow_loopback_sources = false;
    raw.allowed_source_networks = vec!["127.0.0.2/32".into()];
    let px = Pixgate::start(raw).await;
    let photo = "f/photos/lomiri16_Wine_by_Jakkub_Mede.jpg";

    let r = px
        .get(&format!("/insecure/w:50/plain/{}", allowed.url(photo)))
        .await;
    assert_eq!(
        r.status,
        200,
        "the allowed network is reachable: {}",
        r.code()
    );
    assert_eq!(allowed.hits(), 1);

    let port = blocked.addr.port();
    for src in [
        blocked.url(photo),
        format!("http://localhost:{port}/{photo}"),
        format!("http://[::1]:{port}/{photo}"),
        format!("http://0.0.0.0:{port}/{photo}"),
        // Cloud metadata: refused before any packet is sent.
        "http://169.254.169.254/latest/meta-data/".to_string(),
        // `?` in a plain source must be sent as %3F (the query string is not the source's).
        allowed.url(&format!("to%3F{}", blocked.url(photo))),
    ] {
        let r = px.get(&format!("/insecure/w:50/plain/{src}")).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (404, "source-address-blocked"),
            "{src}"
        );
    }
    assert_eq!(
        blocked.hits(),
        0,
        "no connection reached the blocked origin"
    );
    assert_eq!(allowed.hits(), 2, "the redirecting hop was allowed");
    px.stop().await;

    let mut raw = test_config();
    raw.allowed_sources = vec![format!("http://127.0.0.1:{port}/f/photos/")];
    let px = Pixgate::start(raw).await;
    assert_eq!(
        px.get(&format!("/insecure/w:50/plain/{}", blocked.url(photo)))
            .await
            .status,
        200
    );
    let r = px
        .get(&format!(
            "/insecure/w:50/plain/{}",
            blocked.url("f/hostile/plain_text.png")
        ))
        .await;
    assert_eq!((r.status, r.code().as_str()), (404, "source-not-allowed"));
    px.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_sources_through_the_origin() {
    let origin = Origin::start().await;
    let px = Pixgate::start(test_config()).await;
    for row in manifest()
        .iter()
        .filter(|r| r.path.starts_with("hostile/") && !r.path.ends_with(".md"))
    {
        let r = px
            .get(&format!(
                "/insecure/rs:fit:300:300/plain/{}",
                origin.url(&format!("f/{}", row.path))
            ))
            .await;
        match expectation(row) {
            Expect::Decode => assert_eq!(r.status, 200, "{}: {}", row.path, r.code()),
            Expect::Reject => {
                assert!((400..500).contains(&r.status), "{}: {}", row.path, r.status)
            }
            Expect::Either => assert!(
                r.status == 200 || (400..500).contains(&r.status),
                "{}",
                row.path
            ),
        }
        if r.status == 200 {
            for needle in [&b"<script"[..], b"<html", b"PK\x03\x04"] {
                assert!(
                    !r.body.windows(needle.len()).any(|w| w == needle),
                    "{}",
                    row.path
                );
            }
        } else {
            assert!(
                !r.body.windows(7).any(|w| w == b"<script"),
                "{}: body reflected",
                row.path
            );
        }
    }
    assert_eq!(px.get("/health").await.status, 200);
    px.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_with_retry_after() {
    let origin = Origin::start().await;
    let mut raw = test_config();
    raw.workers = 1;
    raw.queue_size = 1;
    raw.request_timeout = 120.0;
    raw.download_timeout = 60.0;
    let px = Pixgate::start(raw).await;
    // Jobs that hold the worker for about a second: a 2500 px decode, blur, PNG encode.
    // Two different URLs (identical ones would be coalesced into one job by the cache).
    let src = origin.url("f/photos/lomiri16_seeding_baseline.jpg");
    let slow_a = px.url(&format!("/insecure/rs:fit:2500:0/bl:15/f:png/plain/{src}"));
    let slow_b = px.url(&format!("/insecure/rs:fit:2500:0/bl:16/f:png/plain/{src}"));
    let quick = format!(
        "/insecure/w:20/plain/{}",
        origin.url("f/photos/lomiri16_Wine_by_Jakkub_Mede.jpg")
    );
    let stats = &px.state.gate.stats;
    let wait = |what: &'static str, cond: fn(usize, usize) -> bool| async move {
        let w = tokio::time::timeout(Duration::from_secs(60), stats.wait_until(cond)).await;
        assert!(w.is_ok(), "gate never reached: {what}");
    };
    let first = tokio::spawn(async move { get(&slow_a, &[]).await });
    wait("one busy worker", |busy, _| busy == 1).await;

    let second = tokio::spawn(async move { get(&slow_b, &[]).await });
    wait("one waiting job", |_, waiting| waiting == 1).await;
    let third = px.get(&quick).await;
    assert_eq!(third.status, 503);
    assert_eq!(third.code(), "queue-full");
    assert_eq!(third.header("retry-after"), Some("1"));
    assert_eq!(first.await.unwrap().status, 200);
    assert_eq!(second.await.unwrap().status, 200);
    assert_eq!(px.get(&quick).await.status, 200, "slots come back");
    px.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_and_header_timeouts() {
    let mut raw = test_config();
    raw.header_read_timeout = 0.5;
    let px = Pixgate::start(raw).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let resp = client
        .get(
            px.url("/insecure/w:32/plain/local:///friends.jpg")
                .parse()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    assert_eq!(resp.status(), 200);

    // A client that never finishes its headers is disconnected.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(px.addr).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf)).await;
    assert!(n.is_ok(), "connection closed by the header timeout");
    px.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_lets_in_flight_requests_finish() {
    let origin = Origin::start().await;
    let mut raw = test_config();
    raw.download_timeout = 30.0;
    let px = Pixgate::start(raw).await;
    // The drip origin takes about a second per 640 bytes: in flight while we stop.
    let src = origin.url("drip/conformance/png/pngsuite/basn2c08.png");
    let u = px.url(&format!("/insecure/w:16/plain/{src}"));
    let inflight = tokio::spawn(async move { get(&u, &[]).await });
    origin.wait_hits(1).await;
    let addr = px.addr;
    px.stop().await;
    let r = inflight.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.code());
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}

#[test]
fn the_binary_serves_and_exits_cleanly_on_sigterm() {
    let (mut child, addr) = crate::support::spawn_binary_server();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = rt.block_on(get(
        &format!("http://{addr}/insecure/rs:fit:64:0/plain/local:///seeding.jpg"),
        &[],
    ));
    assert_eq!(r.status, 200);
    assert_eq!(decode(&r.body).width(), 64);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn sign_prints_signed_paths() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pixgate"))
        .args([
            "sign",
            "/rs:fill:300:400:0/g:sm/aHR0cDovL2V4YW1w/bGUuY29tL2ltYWdl/cy9jdXJpb3NpdHku/anBn.png",
        ])
        .env("IMGPROXY_KEY", "736563726574")
        .env("IMGPROXY_SALT", "68656C6C6F")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "/oKfUtW34Dvo2BGQehJFR4Nr0_rIjOtdtzJ3QFsUcXH8/rs:fill:300:400:0/g:sm/aHR0cDovL2V4YW1w/bGUuY29tL2ltYWdl/cy9jdXJpb3NpdHku/anBn.png"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pixgate"))
        .args(["sign", "/w:10/plain/local:///a.jpg"])
        .env_remove("IMGPROXY_KEY")
        .env_remove("IMGPROXY_SALT")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "/insecure/w:10/plain/local:///a.jpg"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pixgate"))
        .args(["serve"])
        .env("PIXGATE_QUALITY", "0")
        .env("PIXGATE_LISTEN", "nowhere")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("quality") && err.contains("listen"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_request_timeout_answers_503() {
    let origin = Origin::start().await;
    let mut raw = test_config();
    raw.download_timeout = 30.0;
    raw.request_timeout = 0.5;
    let px = Pixgate::start(raw).await;
    let src = origin.url("drip/photos/lomiri16_Wine_by_Jakkub_Mede.jpg");
    let r = px.get(&format!("/insecure/w:10/plain/{src}")).await;
    assert_eq!((r.status, r.code().as_str()), (503, "request-timeout"));
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(px.get("/health").await.status, 200);
    px.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_wait_for_a_free_slot() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut raw = test_config();
    raw.max_connections = 1;
    let px = Pixgate::start(raw).await;
    let req = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    async fn response(s: &mut tokio::net::TcpStream) -> String {
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
    let mut a = tokio::net::TcpStream::connect(px.addr).await.unwrap();
    a.write_all(req).await.unwrap();
    assert!(response(&mut a).await.starts_with("HTTP/1.1 200"));
    // B connects (the kernel completes the handshake) and asks, but is not served while A
    // holds the only slot: A's next request round trip completes first.
    let mut b = tokio::net::TcpStream::connect(px.addr).await.unwrap();
    b.write_all(req).await.unwrap();
    a.write_all(req).await.unwrap();
    assert!(response(&mut a).await.starts_with("HTTP/1.1 200"));
    let mut probe = [0u8; 1];
    assert!(
        matches!(b.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "B was served while A held the only connection slot"
    );
    drop(a);
    let got = tokio::time::timeout(Duration::from_secs(30), response(&mut b)).await;
    assert!(
        got.is_ok_and(|r| r.starts_with("HTTP/1.1 200")),
        "B is served once A leaves"
    );
    px.stop().await;
}
