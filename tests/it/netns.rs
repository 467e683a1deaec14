//! The address guard end to end, inside a network namespace this test creates: only a
//! loopback interface, given the "special" addresses under test (benchmarking, NAT64, 6to4),
//! so that nothing sent to them can leave the namespace. The real binary and real origins run
//! in it; the guard must refuse before connecting (the origins count what reaches them) and
//! let an operator's `allowed_source_networks` through.

use std::process::Command;

use crate::support::Origin;
use crate::support::{get, spawn_binary};

/// Runs `body` on a thread of its own inside a new network namespace whose loopback
/// interface is up and also holds `addrs`. Children spawned from that thread (pixgate) live
/// in the namespace too.
fn in_private_network<F, Fut>(addrs: &[&str], body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let addrs: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    let thread = std::thread::spawn(move || {
        // SAFETY: unshare only changes this thread's namespaces; no memory is involved.
        let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            r,
            0,
            "unshare(CLONE_NEWNET): {} (these tests need CAP_SYS_ADMIN, as root in CI)",
            std::io::Error::last_os_error()
        );
        let ip = |args: &[&str]| {
            let out = Command::new("ip")
                .args(args)
                .output()
                .expect("iproute2's ip");
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ip(&["link", "set", "lo", "up"]);
        for a in &addrs {
            if a.contains(':') {
                ip(&["-6", "addr", "add", a, "dev", "lo", "nodad"]);
            } else {
                ip(&["addr", "add", a, "dev", "lo"]);
            }
        }
        // The namespace has no route anywhere else: this is what keeps the test on loopback.
        let routes = Command::new("ip").args(["route", "show"]).output().unwrap();
        assert!(
            !String::from_utf8_lossy(&routes.stdout).contains("default"),
            "a private namespace has no default route"
        );
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(body());
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

const PHOTO: &str = "f/photos/lomiri16_Wine_by_Jakkub_Mede.jpg";

#[test]
fn special_purpose_addresses_are_refused_before_connecting() {
    in_private_network(
        &[
            "198.18.0.1/32",
            "192.0.0.171/32",
            "64:ff9b::7f00:1/128",
            "2002:7f00:1::1/128",
        ],
        || async {
            let bench = Origin::start_on("198.18.0.1").await;
            let nat64_discovery = Origin::start_on("192.0.0.171").await;
            let nat64 = Origin::start_on("64:ff9b::7f00:1").await;
            let six_to_four = Origin::start_on("2002:7f00:1::1").await;
            // The default guard; loopback sources stay off.
            let (mut child, addr) = spawn_binary(&[("PIXGATE_LOG_LEVEL", "warn")], false);
            let sources = [
                bench.url(PHOTO),
                nat64_discovery.url(PHOTO),
                nat64.url(PHOTO),
                six_to_four.url(PHOTO),
            ];
            for src in &sources {
                let r = get(&format!("http://{addr}/insecure/w:50/plain/{src}"), &[]).await;
                assert_eq!(
                    (r.status, r.code().as_str()),
                    (404, "source-address-blocked"),
                    "{src}"
                );
            }
            for o in [&bench, &nat64_discovery, &nat64, &six_to_four] {
                assert_eq!(o.hits(), 0, "{}: a blocked origin saw a request", o.addr);
            }
            let _ = child.kill();
            let _ = child.wait();

            // An operator's network opens exactly that network; a redirect from it to a
            // NAT64 address carrying 127.0.0.1 is refused on the hop.
            let (mut child, addr) = spawn_binary(
                &[
                    ("PIXGATE_LOG_LEVEL", "warn"),
                    ("PIXGATE_ALLOWED_SOURCE_NETWORKS", "198.18.0.0/15"),
                ],
                false,
            );
            let r = get(
                &format!("http://{addr}/insecure/w:50/plain/{}", bench.url(PHOTO)),
                &[],
            )
            .await;
            assert_eq!(r.status, 200, "{}", r.code());
            assert_eq!(bench.hits(), 1);
            let hop = bench.url(&format!("to%3F{}", nat64.url(PHOTO)));
            let r = get(&format!("http://{addr}/insecure/w:50/plain/{hop}"), &[]).await;
            assert_eq!(
                (r.status, r.code().as_str()),
                (404, "source-address-blocked")
            );
            assert_eq!(bench.hits(), 2, "the redirecting hop was allowed");
            assert_eq!(nat64.hits(), 0, "the NAT64 target was never connected to");
            let r = get(
                &format!(
                    "http://{addr}/insecure/w:50/plain/{}",
                    six_to_four.url(PHOTO)
                ),
                &[],
            )
            .await;
            assert_eq!(r.code(), "source-address-blocked");
            assert_eq!(six_to_four.hits(), 0);
            let _ = child.kill();
            let _ = child.wait();
        },
    );
}
