//! The caches over real HTTP: coalescing (one origin fetch and one pixel job for 50
//! concurrent requests), the srcset pattern (one fetch for six widths), equivalent URLs
//! sharing an entry, byte capacity, a client hanging up mid-fill, conditional requests, and
//! Accept negotiation that cannot be used to bust the cache.

use std::sync::atomic::Ordering;

use crate::support::Origin;
use crate::support::decode;
use crate::support::{Pixgate, get, test_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_identical_requests_do_the_work_once() {
    let origin = Origin::start().await;
    let px = Pixgate::start(test_config()).await;
    let url = px.url(&format!(
        "/insecure/rs:fit:300:0/plain/{}",
        origin.url("f/photos/lomiri16_seeding_baseline.jpg")
    ));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let u = url.clone();
            tokio::spawn(async move { get(&u, &[]).await })
        })
        .collect();
    let mut bodies = Vec::new();
    let mut outcomes = std::collections::BTreeMap::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        *outcomes
            .entry(r.header("x-cache").unwrap().to_string())
            .or_insert(0) += 1;
        bodies.push(r.body);
    }
    assert_eq!(origin.hits(), 1, "one origin fetch");
    assert_eq!(
        px.state.gate.stats.jobs.load(Ordering::SeqCst),
        1,
        "one pixel job"
    );
    assert!(bodies.iter().all(|b| *b == bodies[0]), "identical bytes");
    assert_eq!(outcomes.get("MISS"), Some(&1), "{outcomes:?}");
    let r = get(&url, &[]).await;
    assert_eq!(r.header("x-cache"), Some("HIT"));
    px.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srcset_widths_fetch_the_source_once_and_equivalent_urls_share_entries() {
    let origin = Origin::start().await;
    let px = Pixgate::start(test_config()).await;
    let src = origin.url("f/photos/lomiri16_Wine_by_Jakkub_Mede.jpg");
    for w in [160, 320, 480, 640, 800, 1024] {
        let r = px.get(&format!("/insecure/rs:fit:{w}:0/plain/{src}")).await;
        assert_eq!((r.status, decode(&r.body).width()), (200, w));
    }
    assert_eq!(origin.hits(), 1, "six widths, one fetch");
    let jobs = px.state.gate.stats.jobs.load(Ordering::SeqCst);
    for equivalent in [
        format!("/insecure/resize:fit:300:0/plain/{src}"),
        format!("/_/rs:fit:300:0/plain/{src}"),
        format!("/insecure/h:0/w:300/rt:fit/el:0/plain/{src}"),
        format!("/x/rs:fit:300:0/q:0/dpr:1/g:ce/plain/{src}"),
        format!("/insecure/rs%3Afit%3A300%3A0/{}", base64_url(&src)),
    ] {
        let r = px.get(&equivalent).await;
        assert_eq!(r.status, 200, "{equivalent}");
    }
    assert_eq!(
        px.state.gate.stats.jobs.load(Ordering::SeqCst),
        jobs + 1,
        "one entry for all"
    );
    px.stop().await;
}

fn base64_url(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_in_bytes_is_never_exceeded() {
    let mut raw = test_config();
    raw.cache_size = 60_000;
    raw.cache_max_entry_fraction = 0.5;
    let px = Pixgate::start(raw).await;
    for w in (40..400).step_by(20) {
        let r = px
            .get(&format!(
                "/insecure/rs:fit:{w}:0/q:90/plain/local:///friends.jpg"
            ))
            .await;
        assert_eq!(r.status, 200);
    }
    let cache = &px.state.results;
    cache.run_pending_tasks().await;
    assert!(
        cache.weighted_size() <= 60_000,
        "{} bytes held",
        cache.weighted_size()
    );
    assert!(cache.entry_count() < 18, "{} entries", cache.entry_count());
    // A result over half the capacity is served but not kept.
    let big = "/insecure/rs:fit:1000:0/q:95/plain/local:///seeding.jpg";
    assert_eq!(px.get(big).await.header("x-cache"), Some("MISS"));
    assert_eq!(px.get(big).await.header("x-cache"), Some("MISS"));
    px.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hanging_up_does_not_cancel_the_fill_for_others() {
    let origin = Origin::start().await;
    let mut raw = test_config();
    raw.download_timeout = 30.0;
    let px = Pixgate::start(raw).await;
    // The drip origin sends 64 bytes every 100 ms: the fill is in flight for seconds.
    let url = px.url(&format!(
        "/insecure/w:16/plain/{}",
        origin.url("drip/conformance/png/pngsuite/basn2c08.png")
    ));
    let u = url.clone();
    let impatient = tokio::spawn(async move { get(&u, &[]).await });
    origin.wait_hits(1).await;
    impatient.abort();
    let _ = impatient.await;
    let r = get(&url, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-cache"),
        Some("COALESCED"),
        "joined the fill the first client started"
    );
    assert_eq!(origin.hits(), 1);
    px.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_none_match_answers_304_without_work() {
    let origin = Origin::start().await;
    let px = Pixgate::start(test_config()).await;
    let url = px.url(&format!(
        "/insecure/rs:fit:200:0/plain/{}",
        origin.url("f/photos/lomiri16_Wine_by_Jakkub_Mede.jpg")
    ));
    let r = get(&url, &[]).await;
    let etag = r.header("etag").unwrap().to_string();
    assert!(etag.starts_with('"'), "strong ETag {etag}");
    let hits = origin.hits();
    let jobs = px.state.gate.stats.jobs.load(Ordering::SeqCst);
    let r = get(&url, &[("if-none-match", &etag)]).await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert!(r.header("cache-control").is_some());
    assert_eq!(r.header("vary"), Some("Accept"));
    assert_eq!(
        (
            origin.hits(),
            px.state.gate.stats.jobs.load(Ordering::SeqCst)
        ),
        (hits, jobs)
    );
    assert_eq!(
        get(&url, &[("if-none-match", "\"other\"")]).await.status,
        200
    );
    px.stop().await;

    // A fresh process (empty caches): the same ETag, and a 304 without a pixel job.
    let px = Pixgate::start(test_config()).await;
    let url2 = url.replace(&px_addr(&url), &px.addr.to_string());
    let r = get(&url2, &[("if-none-match", &etag)]).await;
    assert_eq!(r.status, 304, "revalidated from the source identity alone");
    assert_eq!(px.state.gate.stats.jobs.load(Ordering::SeqCst), 0);
    assert_eq!(get(&url2, &[]).await.header("etag"), Some(etag.as_str()));
    px.stop().await;
}

fn px_addr(url: &str) -> String {
    url.trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn etags_agree_between_separately_started_processes() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut etags = Vec::new();
    for _ in 0..2 {
        let (mut child, addr) = crate::support::spawn_binary_server();
        let r = rt.block_on(get(
            &format!("http://{addr}/insecure/rs:fit:100:0/plain/local:///friends.jpg"),
            &[],
        ));
        etags.push(r.header("etag").unwrap().to_string());
        child.kill().unwrap();
        child.wait().unwrap();
    }
    assert_eq!(etags[0], etags[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_negotiation_varies_but_cannot_bust_the_cache() {
    let px = Pixgate::start(test_config()).await;
    let url = px.url("/insecure/rs:fit:100:0/plain/local:///friends.jpg");
    let webp = get(&url, &[("accept", "image/webp,*/*")]).await;
    assert_eq!(webp.header("content-type"), Some("image/webp"));
    assert_eq!(webp.header("vary"), Some("Accept"));
    let jpeg = get(&url, &[("accept", "image/jpeg")]).await;
    assert_eq!(jpeg.header("content-type"), Some("image/jpeg"));
    assert_eq!(jpeg.header("vary"), Some("Accept"));
    assert_ne!(webp.header("etag"), jpeg.header("etag"));
    let explicit = get(
        &px.url("/insecure/rs:fit:100:0/f:png/plain/local:///friends.jpg"),
        &[("accept", "image/webp")],
    )
    .await;
    assert_eq!(explicit.header("content-type"), Some("image/png"));
    assert_eq!(
        explicit.header("vary"),
        None,
        "an explicit format does not depend on Accept"
    );
    for i in 0..1000 {
        let junk = format!("image/x-{i}, text/{}, */*;q=0.{}", i * 31, i % 10);
        let r = get(&url, &[("accept", &junk)]).await;
        assert_eq!(r.status, 200);
    }
    let cache = &px.state.results;
    cache.run_pending_tasks().await;
    assert_eq!(cache.entry_count(), 3, "webp, source default, explicit png");
    px.stop().await;
}
