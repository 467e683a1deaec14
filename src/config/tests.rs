//! Configuration layers, precedence, validation messages and networks.

use super::*;

fn env(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<Vec<_>>()
        .into_iter()
}

#[test]
fn defaults_serve_the_samples_unsigned() {
    let c = Config::defaults();
    assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
    assert!(c.keys.is_empty());
    assert_eq!(c.local_root, bundled_samples().canonicalize().unwrap());
    assert!(!c.allow_loopback_sources && !c.allow_private_sources);
}

#[test]
fn precedence_is_defaults_file_env_flags() {
    let dir = std::env::temp_dir().join(format!("pixgate-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pixgate.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:9000\"\nquality = 70\nworkers = 3\n[presets]\nthumb = \"rs:fill:100:100\"\n",
    )
    .unwrap();
    let c = load(
        Some(&file),
        env(&[
            ("PIXGATE_QUALITY", "60"),
            ("PIXGATE_ALLOW_LOOPBACK_SOURCES", "true"),
            (
                "PIXGATE_ALLOWED_SOURCES",
                "https://a.example/, https://b.example/",
            ),
            ("PIXGATE_USER_AGENT", "12345"),
            ("UNRELATED", "x"),
        ]),
        &Flags {
            listen: Some("127.0.0.1:0".into()),
            local_root: None,
        },
    )
    .unwrap();
    assert_eq!(c.listen.port(), 0, "flag beats file");
    assert_eq!(c.engine.quality, 60, "env beats file");
    assert_eq!(c.workers, 3, "file beats default");
    assert!(c.allow_loopback_sources);
    assert_eq!(
        c.allowed_sources,
        vec!["https://a.example/", "https://b.example/"]
    );
    assert_eq!(c.user_agent, "12345");
    assert!(c.presets.get("thumb").is_some());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn imgproxy_variables_make_key_pairs() {
    let c = load(
        None,
        env(&[
            ("IMGPROXY_KEY", "736563726574,6b657932"),
            ("IMGPROXY_SALT", "68656C6C6F,73616c7432"),
            ("IMGPROXY_SIGNATURE_SIZE", "8"),
        ]),
        &Flags::default(),
    )
    .unwrap();
    assert_eq!(c.keys.len(), 2);
    assert_eq!(c.keys[0].key, b"secret");
    assert_eq!(c.keys[0].salt, b"hello");
    assert_eq!(c.keys[1].tenant, "key2");
    assert_eq!(c.signature_size, 8);
}

#[test]
fn every_problem_is_reported_at_once() {
    let errs = load(
        None,
        env(&[
            ("PIXGATE_LISTEN", "nowhere"),
            ("PIXGATE_QUALITY", "0"),
            ("PIXGATE_JPEG_MODE", "turbo"),
            ("PIXGATE_LOCAL_ROOT", "/nonexistent/pixgate"),
            ("PIXGATE_DOWNLOAD_TIMEOUT", "-1"),
            ("PIXGATE_ALLOWED_SOURCE_NETWORKS", "10.0.0.0/99"),
            ("IMGPROXY_KEY", "zz"),
            ("IMGPROXY_SALT", "00"),
        ]),
        &Flags::default(),
    )
    .unwrap_err();
    for needle in [
        "listen",
        "quality",
        "jpeg_mode",
        "local_root",
        "download_timeout",
        "allowed_source_networks",
        "key is not hex",
    ] {
        assert!(
            errs.iter().any(|e| e.contains(needle)),
            "{needle} missing from {errs:?}"
        );
    }
    let errs = load(None, env(&[("PIXGATE_NOPE", "1")]), &Flags::default()).unwrap_err();
    assert!(errs[0].contains("nope"), "{errs:?}");
}

#[test]
fn networks() {
    let n = Network::parse("127.0.0.2/32").unwrap();
    assert!(n.contains("127.0.0.2".parse().unwrap()));
    assert!(!n.contains("127.0.0.1".parse().unwrap()));
    let n = Network::parse("10.0.0.0/8").unwrap();
    assert!(n.contains("10.200.1.1".parse().unwrap()));
    assert!(!n.contains("::1".parse().unwrap()));
    assert!(
        Network::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap())
    );
    assert!(
        Network::parse("fd00::/8")
            .unwrap()
            .contains("fd12::1".parse().unwrap())
    );
}
