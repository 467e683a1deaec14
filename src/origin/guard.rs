//! The origin address guard: which addresses pixgate may open a connection to. Decided by
//! IANA's IPv4 and IPv6 Special-Purpose Address Registries (a block whose "Globally
//! Reachable" is false is refused unless the operator allowed its class or network), with
//! every IPv6 form that carries an IPv4 address (mapped, compatible, NAT64, 6to4, Teredo)
//! judged by the address it carries too. Pure: no sockets here, so every entry is testable
//! without sending a packet.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::config::Network;

/// What a block is, for the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Globally reachable: allowed.
    Global,
    /// This host: `allow_loopback_sources`.
    Loopback,
    /// Link-local (cloud metadata lives here): `allow_link_local_sources`.
    LinkLocal,
    /// Private use, shared (carrier-grade NAT) and unique-local space:
    /// `allow_private_sources`.
    Private,
    /// Not globally reachable and in none of the classes above (documentation,
    /// benchmarking, reserved, protocol assignments): only through `allowed_source_networks`.
    Special,
    /// Never a source, whatever the configuration (multicast, broadcast).
    Never,
    /// The block carries IPv4 addresses; the verdict is theirs (and the block's own, for
    /// the forms the registries mark as not reachable).
    Embeds(Embedding),
}

/// Where an IPv6 form carries its IPv4 address(es).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Embedding {
    /// `::ffff:a.b.c.d`: the IPv4 address itself, as the socket layer sees it.
    Mapped,
    /// `::a.b.c.d`: deprecated IPv4-compatible form; refused, whatever it carries.
    Compatible,
    /// `64:ff9b::a.b.c.d` (RFC 6052 well-known prefix): reachable, the IPv4 decides.
    Nat64,
    /// `2002:aabb:ccdd::/48` (6to4): bits 16–47.
    SixToFour,
    /// `2001:0:SSSS:SSSS:…:CCCC:CCCC` (Teredo): the server (bits 32–63) and the client
    /// (last 32 bits, inverted).
    Teredo,
}

/// One registry entry.
#[derive(Debug, Clone, Copy)]
pub struct Block {
    pub network: &'static str,
    pub name: &'static str,
    pub class: Class,
}

const fn b(network: &'static str, name: &'static str, class: Class) -> Block {
    Block {
        network,
        name,
        class,
    }
}

use Class::*;
use Embedding::*;

/// IANA IPv4 Special-Purpose Address Registry (RFC 6890 and later), plus multicast and the
/// limited broadcast address. The most specific block that contains an address decides.
pub const IPV4: &[Block] = &[
    // Linux connects 0.0.0.0 to this host: counted as loopback, not as "special".
    b("0.0.0.0/8", "this network", Loopback),
    b("10.0.0.0/8", "private use", Private),
    b(
        "100.64.0.0/10",
        "shared address space (carrier-grade NAT)",
        Private,
    ),
    b("127.0.0.0/8", "loopback", Loopback),
    b("169.254.0.0/16", "link local", LinkLocal),
    b("172.16.0.0/12", "private use", Private),
    b("192.0.0.0/24", "IETF protocol assignments", Special),
    b(
        "192.0.0.0/29",
        "IPv4 service continuity prefix (DS-Lite)",
        Special,
    ),
    b("192.0.0.8/32", "IPv4 dummy address", Special),
    b("192.0.0.9/32", "port control protocol anycast", Global),
    b(
        "192.0.0.10/32",
        "traversal using relays around NAT anycast",
        Global,
    ),
    b("192.0.0.170/31", "NAT64/DNS64 discovery", Special),
    b("192.0.2.0/24", "documentation (TEST-NET-1)", Special),
    b("192.31.196.0/24", "AS112-v4", Global),
    b("192.52.193.0/24", "automatic multicast tunneling", Global),
    b("192.88.99.0/24", "deprecated 6to4 relay anycast", Special),
    b("192.168.0.0/16", "private use", Private),
    b("192.175.48.0/24", "direct delegation AS112 service", Global),
    b("198.18.0.0/15", "benchmarking", Special),
    b("198.51.100.0/24", "documentation (TEST-NET-2)", Special),
    b("203.0.113.0/24", "documentation (TEST-NET-3)", Special),
    b("224.0.0.0/4", "multicast", Never),
    b("240.0.0.0/4", "reserved", Special),
    b("255.255.255.255/32", "limited broadcast", Never),
];

/// IANA IPv6 Special-Purpose Address Registry (RFC 6890 and later), plus the address
/// architecture's multicast, link-local and deprecated site-local blocks.
pub const IPV6: &[Block] = &[
    b("::/128", "unspecified address", Loopback),
    b("::1/128", "loopback", Loopback),
    b("::/96", "IPv4-compatible (deprecated)", Embeds(Compatible)),
    b("::ffff:0:0/96", "IPv4-mapped", Embeds(Mapped)),
    b("64:ff9b::/96", "NAT64 well-known prefix", Embeds(Nat64)),
    b("64:ff9b:1::/48", "NAT64 local use", Special),
    b("100::/64", "discard only", Special),
    b("100:0:0:1::/64", "dummy IPv6 prefix", Special),
    b("2001::/23", "IETF protocol assignments", Special),
    b("2001::/32", "Teredo", Embeds(Teredo)),
    b("2001:1::1/128", "port control protocol anycast", Global),
    b(
        "2001:1::2/128",
        "traversal using relays around NAT anycast",
        Global,
    ),
    b(
        "2001:1::3/128",
        "DNS-SD service registration protocol anycast",
        Global,
    ),
    b("2001:2::/48", "benchmarking", Special),
    b("2001:3::/32", "automatic multicast tunneling", Global),
    b("2001:4:112::/48", "AS112-v6", Global),
    b("2001:10::/28", "deprecated ORCHID", Special),
    b("2001:20::/28", "ORCHIDv2", Global),
    b(
        "2001:30::/28",
        "drone remote ID protocol entity tags",
        Global,
    ),
    b("2001:db8::/32", "documentation", Special),
    b("2002::/16", "6to4", Embeds(SixToFour)),
    b(
        "2620:4f:8000::/48",
        "direct delegation AS112 service",
        Global,
    ),
    b("3fff::/20", "documentation", Special),
    b("5f00::/16", "segment routing (SRv6) SIDs", Special),
    b("fc00::/7", "unique local", Private),
    b("fe80::/10", "link-local unicast", LinkLocal),
    b("fec0::/10", "site-local (deprecated)", Private),
    b("ff00::/8", "multicast", Never),
];

/// The block deciding for `ip`: the most specific registry entry containing it. IPv6
/// outside every entry and outside global unicast space (2000::/3) is unassigned:
/// reported as reserved.
pub fn block_of(ip: IpAddr) -> Block {
    let table = if ip.is_ipv4() { IPV4 } else { IPV6 };
    let mut best: Option<(u8, Block)> = None;
    for entry in table {
        let Some(net) = Network::parse(entry.network) else {
            continue;
        };
        if net.contains(ip) && best.is_none_or(|(len, _)| net.prefix > len) {
            best = Some((net.prefix, *entry));
        }
    }
    match (best, ip) {
        (Some((_, block)), _) => block,
        (None, IpAddr::V6(v6)) if v6.segments()[0] & 0xE000 != 0x2000 => {
            b("::/0", "reserved by the IETF (not global unicast)", Special)
        }
        _ => b("", "globally reachable", Global),
    }
}

/// The IPv4 addresses an IPv6 form carries.
pub fn embedded(ip: Ipv6Addr, how: Embedding) -> Vec<Ipv4Addr> {
    let bits = ip.to_bits();
    let v4 = |v: u128| Ipv4Addr::from_bits((v & 0xFFFF_FFFF) as u32);
    match how {
        Mapped | Compatible | Nat64 => vec![v4(bits)],
        SixToFour => vec![v4(bits >> 80)],
        Teredo => vec![v4(bits >> 64), v4(!bits)],
    }
}

/// Why an address was refused: the address, and the block (or the carried address's block)
/// that refused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub ip: IpAddr,
    pub reason: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.ip, self.reason)
    }
}

/// Which addresses may be connected to.
#[derive(Debug, Clone, Default)]
pub struct AddressGuard {
    pub allow_loopback: bool,
    pub allow_private: bool,
    pub allow_link_local: bool,
    /// Exceptions reachable whatever their class (never multicast or broadcast).
    pub allowed_networks: Vec<Network>,
}

impl AddressGuard {
    /// Whether connecting to `ip` is allowed.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.check(ip).is_ok()
    }

    /// Allows `ip`, or says which block refused it.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refusal> {
        let block = block_of(ip);
        let refuse = |why: &str| {
            Err(Refusal {
                ip,
                reason: why.to_string(),
            })
        };
        if block.class == Never {
            return refuse(block.name);
        }
        if self.allowed_networks.iter().any(|n| n.contains(ip)) {
            return Ok(());
        }
        let allowed = |switch: bool, setting: &str| {
            if switch {
                Ok(())
            } else {
                refuse(&format!("{}; allow with {setting}", block.name))
            }
        };
        match block.class {
            Global => Ok(()),
            Loopback => allowed(self.allow_loopback, "allow_loopback_sources"),
            LinkLocal => allowed(self.allow_link_local, "allow_link_local_sources"),
            Private => allowed(self.allow_private, "allow_private_sources"),
            Special => refuse(&format!(
                "{} is not globally reachable; allow with allowed_source_networks",
                block.name
            )),
            Never => refuse(block.name),
            Embeds(Compatible) => refuse(block.name),
            Embeds(how) => {
                let IpAddr::V6(v6) = ip else {
                    return refuse(block.name);
                };
                for carried in embedded(v6, how) {
                    if let Err(r) = self.check(IpAddr::V4(carried)) {
                        return refuse(&format!("{} carrying {}: {}", block.name, r.ip, r.reason));
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> AddressGuard {
        AddressGuard::default()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The first and last address of a block.
    fn ends(network: &str) -> (IpAddr, IpAddr) {
        let n = Network::parse(network).unwrap();
        match n.addr {
            IpAddr::V4(a) => {
                let host = if n.prefix == 32 {
                    0
                } else {
                    u32::MAX >> n.prefix
                };
                let first = a.to_bits() & !host;
                (
                    IpAddr::V4(Ipv4Addr::from_bits(first)),
                    IpAddr::V4(Ipv4Addr::from_bits(first | host)),
                )
            }
            IpAddr::V6(a) => {
                let host = if n.prefix == 128 {
                    0
                } else {
                    u128::MAX >> n.prefix
                };
                let first = a.to_bits() & !host;
                (
                    IpAddr::V6(Ipv6Addr::from_bits(first)),
                    IpAddr::V6(Ipv6Addr::from_bits(first | host)),
                )
            }
        }
    }

    /// Every registry entry, at both ends of its block, under the default (strict) guard:
    /// refused unless globally reachable; embedded forms by what they carry.
    #[test]
    fn every_registry_entry_decides_at_both_ends() {
        let g = strict();
        for entry in IPV4.iter().chain(IPV6) {
            let (first, last) = ends(entry.network);
            for addr in [first, last] {
                let block = block_of(addr);
                if block.network != entry.network {
                    let inner = Network::parse(block.network).unwrap();
                    let outer = Network::parse(entry.network).unwrap();
                    // The most specific entry wins.
                    assert!(
                        inner.prefix > outer.prefix,
                        "{addr}: {} decided instead of {}",
                        block.network,
                        entry.network
                    );
                    continue;
                }
                let allowed = g.allows(addr);
                let expect = match entry.class {
                    Global => true,
                    Embeds(Mapped) | Embeds(Nat64) => {
                        let IpAddr::V6(v6) = addr else { panic!() };
                        let carried = embedded(v6, Mapped)[0];
                        g.allows(IpAddr::V4(carried))
                    }
                    Embeds(SixToFour) | Embeds(Teredo) => {
                        let IpAddr::V6(v6) = addr else { panic!() };
                        let how = if let Embeds(h) = entry.class {
                            h
                        } else {
                            panic!()
                        };
                        embedded(v6, how)
                            .into_iter()
                            .all(|c| g.allows(IpAddr::V4(c)))
                    }
                    _ => false,
                };
                assert_eq!(
                    allowed,
                    expect,
                    "{addr} in {} ({}): {:?}",
                    entry.network,
                    entry.name,
                    g.check(addr)
                );
            }
        }
    }

    #[test]
    fn the_issue_list_and_the_reference_examples_are_refused() {
        let g = strict();
        for a in [
            // Embedding 127.0.0.1.
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "::7f00:1",
            "64:ff9b::7f00:1",
            "64:ff9b::127.0.0.1",
            "2002:7f00:1::1",
            "2001:0:4136:e378:8000:63bf:80ff:fffe",
            // Embedding 169.254.169.254 (cloud metadata).
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::",
            "::ffff:169.254.169.254",
            // NAT64 local use, benchmarking, IETF assignments, documentation.
            "64:ff9b:1::a00:1",
            "198.18.0.1",
            "198.19.255.255",
            "192.0.0.1",
            "192.0.0.170",
            "192.0.2.10",
            "2001:db8::1",
            "3fff::1",
            "100::1",
            // Private, shared, link-local, loopback, multicast, broadcast, reserved.
            "10.1.2.3",
            "100.64.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "127.9.9.9",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "240.1.2.3",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "fec0::1",
            "ff02::1",
            // Unassigned IPv6 space.
            "4000::1",
        ] {
            assert!(
                !g.allows(ip(a)),
                "{a} must be refused: {:?}",
                g.check(ip(a))
            );
        }
        for a in [
            "93.184.216.34",
            "8.8.8.8",
            "192.0.0.9",
            "192.31.196.1",
            "2606:4700::1111",
            "2001:4860:4860::8888",
            "2001:1::1",
            "2001:3::1",
            "2620:4f:8000::1",
            // Embedding public addresses: 8.8.8.8.
            "64:ff9b::808:808",
            "::ffff:8.8.8.8",
            "2002:808:808::1",
            // Teredo with a public server and a public client (8.8.4.4 inverted).
            "2001:0:808:808::f7f7:fbfb",
        ] {
            assert!(g.allows(ip(a)), "{a} must be allowed: {:?}", g.check(ip(a)));
        }
        // IPv4-compatible is refused even when it carries a public address.
        assert!(!g.allows(ip("::8.8.8.8")));
        // Teredo whose client half is loopback.
        assert!(!g.allows(ip("2001:0:808:808::80ff:fffe")));
    }

    #[test]
    fn switches_and_networks_open_their_class_only() {
        let loopback = AddressGuard {
            allow_loopback: true,
            ..strict()
        };
        for a in ["127.0.0.1", "::1", "::ffff:127.0.0.1", "64:ff9b::7f00:1"] {
            assert!(loopback.allows(ip(a)), "{a}");
        }
        for a in ["10.0.0.1", "169.254.169.254", "198.18.0.1", "::127.0.0.1"] {
            assert!(!loopback.allows(ip(a)), "{a}");
        }
        let private = AddressGuard {
            allow_private: true,
            ..strict()
        };
        for a in [
            "10.0.0.1",
            "100.64.0.1",
            "fd00::1",
            "::ffff:192.168.0.1",
            "2002:c0a8:1::",
        ] {
            assert!(private.allows(ip(a)), "{a}");
        }
        assert!(!private.allows(ip("169.254.169.254")));
        let link = AddressGuard {
            allow_link_local: true,
            ..strict()
        };
        assert!(link.allows(ip("169.254.169.254")) && link.allows(ip("fe80::1")));
        let nets = AddressGuard {
            allowed_networks: vec![
                Network::parse("198.18.0.0/15").unwrap(),
                Network::parse("10.5.0.0/16").unwrap(),
                Network::parse("224.0.0.0/4").unwrap(),
            ],
            ..strict()
        };
        for a in [
            "198.18.0.1",
            "10.5.1.1",
            "::ffff:10.5.0.7",
            "64:ff9b::c612:1",
        ] {
            assert!(nets.allows(ip(a)), "{a}");
        }
        assert!(!nets.allows(ip("10.6.1.1")));
        // Multicast is never a source, not even when a network names it.
        assert!(!nets.allows(ip("224.0.0.1")));
    }

    #[test]
    fn refusals_name_the_block_and_the_setting() {
        let r = strict().check(ip("198.18.0.1")).unwrap_err();
        assert!(
            r.reason.contains("benchmarking") && r.reason.contains("allowed_source_networks"),
            "{r}"
        );
        let r = strict().check(ip("64:ff9b::a9fe:a9fe")).unwrap_err();
        assert!(
            r.reason.contains("NAT64")
                && r.reason.contains("169.254.169.254")
                && r.reason.contains("allow_link_local_sources"),
            "{r}"
        );
    }
}
