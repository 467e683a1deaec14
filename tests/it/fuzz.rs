//! Every input the fuzzers ever saved (`fuzz/regressions/<target>/`) replayed through the
//! same target functions on the stable toolchain, plus a seed pass over the shipped
//! fixtures, so a fixed crash stays fixed without cargo-fuzz or nightly.

use std::path::Path;

use pixgate::fuzzing;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 5] = [
    ("url", fuzzing::url),
    ("probe", fuzzing::probe),
    ("transform", fuzzing::transform),
    ("multipart", fuzzing::multipart),
    ("decision", fuzzing::decision),
];

#[test]
fn every_saved_fuzz_finding_is_replayed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut replayed = 0;
    for (name, target) in TARGETS {
        let Ok(entries) = std::fs::read_dir(root.join(name)) else {
            continue;
        };
        for e in entries.flatten() {
            let data = std::fs::read(e.path()).unwrap();
            target(&data);
            replayed += 1;
        }
    }
    eprintln!("replayed {replayed} saved fuzz inputs");
}

#[test]
fn the_targets_take_their_seeds() {
    for p in [
        "/insecure/rs:fit:300:200/plain/https://a.example/b.jpg@webp",
        "/insecure/pr:thumb/pr:loop/plain/local:///x.png",
        "/insecure/c:0.5:0.5:nowe:10:10/pd:1:2:3:4/bl:1e300/f:avif/aHR0cHM6Ly9hLmV4YW1wbGUvYi5qcGc.png",
        "/_/exp:1900000000/mb:10000/aq:dssim:0.02:40:90/car:1.5:1/a:10:1.2:0.8/plain/http://x/y",
        "rs:fill:100:100:1:1:ce:0:0/g:fp:0.5:0.5/q:70/wm:0.5:re:10:10:0.2/t:10:ff00ff:1:1",
    ] {
        fuzzing::url(p.as_bytes());
    }
    let fixtures = crate::support::fixtures();
    for rel in [
        "photos/lomiri16_Wine_by_Jakkub_Mede.jpg",
        "conformance/png/pngsuite/basn6a08.png",
        "hostile/png_ztxt_zlib_bomb_512MiB.png",
        "hostile/svg_billion_laughs.svg",
    ] {
        let img = std::fs::read(fixtures.join(rel)).unwrap();
        fuzzing::probe(&img);
        for opts in [
            "rs:fit:64:64",
            "c:20:20/bl:3/sh:1/t:10/f:webp",
            "pix:4/a:10:1.5:0.5/f:avif",
        ] {
            let mut input = format!("{opts}\n").into_bytes();
            input.extend_from_slice(&img);
            fuzzing::transform(&input);
        }
    }
    fuzzing::multipart(
        b"\x07XyZ\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nPNG\r\n--XyZ--\r\n",
    );
    for body in [
        "return { allow = true, bucket = 'b', rate = 1e308, burst = 1e9 }",
        "return setmetatable({}, { __index = function() return true end })",
        "local t = {} for i = 1, 1e6 do t[i] = i end return t",
    ] {
        fuzzing::decision(body.as_bytes());
    }
}
