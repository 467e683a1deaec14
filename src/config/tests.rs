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
    assert_eq!(c.local_root, bundled_samples());
    assert!(
        c.local_root
            .is_some_and(|r| r.join("seeding.jpg").is_file())
    );
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
    // A variable near no setting belongs to some script: ignored, with a warning.
    let c = load(None, env(&[("PIXGATE_NOPE", "1")]), &Flags::default()).unwrap();
    assert!(
        c.warnings.iter().any(|w| w.contains("PIXGATE_NOPE")),
        "{:?}",
        c.warnings
    );
}

/// Issue 17: one file with an unknown key and a bad value reports both, each with its
/// name; near misses get a suggestion; env problems are named by their variable.
#[test]
fn every_problem_is_reported_with_a_suggestion() {
    let dir = std::env::temp_dir().join(format!("pixgate-cfg-all-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pixgate.toml");
    std::fs::write(
        &file,
        "cache_siz = 10\nquality = \"high\"\nworkers = 2\nrequest_timeout = \"soon\"\nzzzzzzzz = 1\n",
    )
    .unwrap();
    let errs = load(
        Some(&file),
        env(&[
            ("PIXGATE_MAX_REDIRECT", "1"),
            ("PIXGATE_MEMORY_BUDGET", "lots"),
            ("PIXGATE_QUALITY_", "1"),
        ]),
        &Flags::default(),
    )
    .unwrap_err();
    let has = |needle: &str| errs.iter().any(|e| e.contains(needle));
    assert!(
        has("cache_siz: unknown key; did you mean `cache_size`?"),
        "{errs:?}"
    );
    assert!(has("quality: invalid type"), "{errs:?}");
    assert!(has("request_timeout: `soon` is not a duration"), "{errs:?}");
    assert!(has("zzzzzzzz: unknown key"), "{errs:?}");
    assert!(
        has("PIXGATE_MAX_REDIRECT: not a setting; did you mean PIXGATE_MAX_REDIRECTS?"),
        "{errs:?}"
    );
    assert!(
        has("PIXGATE_MEMORY_BUDGET: `lots` is not a size"),
        "{errs:?}"
    );
    assert!(
        has("PIXGATE_QUALITY_: not a setting; did you mean PIXGATE_QUALITY?"),
        "{errs:?}"
    );
    assert_eq!(errs.len(), 7, "{errs:?}");
    // A validation problem of a key set by a variable names the variable.
    let errs = load(None, env(&[("PIXGATE_QUALITY", "150")]), &Flags::default()).unwrap_err();
    assert!(errs[0].starts_with("PIXGATE_QUALITY: quality"), "{errs:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sizes_and_durations_take_units() {
    let c = load(
        None,
        env(&[
            ("PIXGATE_CACHE_SIZE", "256MB"),
            ("PIXGATE_SOURCE_CACHE_SIZE", "1GiB"),
            ("PIXGATE_MEMORY_BUDGET", "512 MiB"),
            ("PIXGATE_MAX_SRC_FILE_SIZE", "10485760"),
            ("PIXGATE_REQUEST_TIMEOUT", "30s"),
            ("PIXGATE_POLICY_TIMEOUT", "500ms"),
            ("PIXGATE_CACHE_TTL", "1h"),
            ("PIXGATE_DOWNLOAD_TIMEOUT", "2.5"),
            ("PIXGATE_TTL", "1day"),
        ]),
        &Flags::default(),
    )
    .unwrap();
    assert_eq!(c.cache_size, 256_000_000);
    assert_eq!(c.source_cache_size, 1 << 30);
    assert_eq!(c.memory_budget, 512 << 20);
    assert_eq!(c.max_src_file_size, Some(10_485_760));
    assert_eq!(c.request_timeout, std::time::Duration::from_secs(30));
    assert_eq!(
        c.policy_limits.timeout,
        std::time::Duration::from_millis(500)
    );
    assert_eq!(c.cache_ttl, std::time::Duration::from_secs(3600));
    assert_eq!(c.download_timeout, std::time::Duration::from_millis(2500));
    assert_eq!(c.ttl, 86_400);
    // The same in a file, as strings and as numbers.
    let raw: RawConfig =
        toml::from_str("cache_size = \"64KiB\"\nttl = 60\nkeep_alive_timeout = \"2m\"").unwrap();
    assert_eq!(raw.cache_size, 64 * 1024);
    assert_eq!(raw.ttl, 60);
    assert_eq!(raw.keep_alive_timeout, 120.0);
    for bad in [
        "cache_size = -1",
        "cache_size = 1.5",
        "cache_size = \"12 parsecs\"",
        "ttl = \"1.5s\"",
    ] {
        assert!(toml::from_str::<RawConfig>(bad).is_err(), "{bad}");
    }
}

#[test]
fn development_errors_from_imgproxy_env() {
    let on = |pairs: &[(&str, &str)]| {
        load(None, env(pairs), &Flags::default())
            .unwrap()
            .development_errors
    };
    assert!(!on(&[]));
    assert!(on(&[("IMGPROXY_DEVELOPMENT_ERRORS_MODE", "t")]));
    assert!(on(&[("IMGPROXY_DEVELOPMENT_ERRORS_MODE", "1")]));
    assert!(!on(&[
        ("IMGPROXY_DEVELOPMENT_ERRORS_MODE", "true"),
        ("PIXGATE_DEVELOPMENT_ERRORS", "false"),
    ]));
    assert!(
        load(
            None,
            env(&[("IMGPROXY_DEVELOPMENT_ERRORS_MODE", "yes")]),
            &Flags::default()
        )
        .is_err()
    );
}

#[test]
fn every_written_key_is_known() {
    let keys = raw::known_keys();
    assert!(keys.contains(&"cache_size") && keys.contains(&"policy_file"));
    assert_eq!(did_you_mean("cache_siz", keys), Some("cache_size"));
    assert_eq!(did_you_mean("polcy_file", keys), Some("policy_file"));
    assert_eq!(did_you_mean("nope", keys), None);
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

/// The packaged `/etc/pixgate/pixgate.toml` lists every key with its built-in default:
/// uncommented, each line means the default (but for the two the package sets, and the
/// user agent's version).
#[test]
fn the_packaged_config_lists_every_key_with_its_default() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/debian/pixgate.toml"))
        .unwrap();
    let active: toml::Table = text.parse().unwrap();
    let keys = raw::known_keys();
    let mut listed = toml::Table::new();
    for line in text.lines() {
        let Some(kv) = line.strip_prefix("# ") else {
            continue;
        };
        let Some((k, _)) = kv.split_once(" = ") else {
            continue;
        };
        if keys.contains(&k) {
            listed.extend(kv.parse::<toml::Table>().unwrap());
        }
    }
    for k in keys {
        assert!(
            listed.contains_key(*k) || active.contains_key(*k),
            "{k} is not in debian/pixgate.toml"
        );
    }
    assert_eq!(
        active.keys().collect::<Vec<_>>(),
        ["local_root", "policy_file"]
    );
    for (k, v) in listed {
        if k == "user_agent" {
            continue;
        }
        let mut one = toml::Table::new();
        one.insert(k.clone(), v.clone());
        let raw: RawConfig = toml::Value::Table(one).try_into().unwrap();
        assert_eq!(raw, RawConfig::default(), "{k} = {v} is not the default");
    }
    // The whole file, as the package installs it, is a valid configuration.
    let raw: RawConfig = toml::from_str(&text).unwrap();
    assert!(validate::validate(&raw).is_ok());
}
