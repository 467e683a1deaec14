//! Cost of the policy on the request path: one `decide` call handed to a policy thread and
//! answered (the shipped policy, anonymous and keyed), and the same plus the GCRA bucket
//! check. `cargo bench --bench policy`.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use pixgate::policy::{OnError, Policy, PolicyRequest, PolicySettings, VmLimits};

fn policy() -> Policy {
    Policy::load(PolicySettings {
        file: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("lua/policy.lua"),
        on_error: OnError::Allow,
        limits: VmLimits {
            memory: 64 << 20,
            instructions: 200_000,
            timeout: std::time::Duration::from_millis(50),
        },
        max_buckets: 1_000_000,
        threads: 1,
        error_rate: Some(10.0),
    })
    .expect("the shipped policy loads")
}

fn bench(c: &mut Criterion) {
    let p = policy();
    let anonymous = PolicyRequest {
        ip: "198.51.100.7".into(),
        method: "GET".into(),
        path: "/insecure/rs:fit:300:0/plain/https://img.example.com/a.jpg".into(),
        source_host: Some("img.example.com".into()),
        source_url: Some("https://img.example.com/a.jpg".into()),
        format: Some("webp".into()),
        width: Some(300),
        ..PolicyRequest::default()
    };
    let keyed = PolicyRequest {
        key: Some("demo-enterprise".into()),
        ..anonymous.clone()
    };
    c.bench_function("policy/decide/anonymous", |b| {
        b.iter(|| black_box(p.decide_blocking(black_box(&anonymous)).unwrap()))
    });
    c.bench_function("policy/decide/keyed", |b| {
        b.iter(|| black_box(p.decide_blocking(black_box(&keyed)).unwrap()))
    });
    // Most iterations are refusals once the 2,000/s bucket is drained; a refusal walks the
    // same path as an admission (one GCRA compare-and-swap).
    c.bench_function("policy/check/keyed-with-bucket", |b| {
        b.iter(|| black_box(p.check_blocking(black_box(&keyed))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
