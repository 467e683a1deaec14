//! Who is asking: the client's address (forwarded headers believed only from trusted
//! proxies), its API key (`X-Api-Key`, `Authorization: Bearer`, `?key=`), and the request as
//! the policy sees it ([`Caller::policy_request`]).

use std::net::{IpAddr, SocketAddr};

use hyper::HeaderMap;
use hyper::header::{AUTHORIZATION, HeaderValue, REFERER, USER_AGENT};

use crate::config::Network;
use crate::negotiate::FormatChoice;
use crate::policy::PolicyRequest;
use crate::request::url::{ParsedRequest, Source};

/// The request as the policy needs it, gathered while the headers are at hand.
pub struct Caller<'a> {
    pub ip: IpAddr,
    pub key: Option<String>,
    pub method: &'a str,
    pub path: &'a str,
    pub referer: Option<String>,
    pub user_agent: Option<String>,
}

impl<'a> Caller<'a> {
    pub fn new(
        parts: &'a hyper::http::request::Parts,
        peer: SocketAddr,
        trusted: &[Network],
    ) -> Self {
        let header = |name| {
            parts
                .headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::to_string)
        };
        Caller {
            ip: client_ip(peer.ip(), &parts.headers, trusted),
            key: api_key(&parts.headers, parts.uri.query()),
            method: parts.method.as_str(),
            path: parts.uri.path(),
            referer: header(REFERER),
            user_agent: header(USER_AGENT),
        }
    }

    /// The `req` table's contents for a parsed URL.
    pub fn policy_request(self, parsed: &ParsedRequest, choice: FormatChoice) -> PolicyRequest {
        let o = &parsed.options;
        let scaled = |v: u32| {
            (v > 0).then(|| (f64::from(v) * o.dpr).round().min(f64::from(u32::MAX)) as u32)
        };
        let (source_host, source_url) = match &parsed.source {
            Source::Http(u) => (
                u.parse::<hyper::Uri>()
                    .ok()
                    .and_then(|u| u.host().map(str::to_ascii_lowercase)),
                Some(u.clone()),
            ),
            Source::Local(_) => (None, Some(parsed.source.url())),
            Source::Upload(_) => (None, None),
        };
        PolicyRequest {
            tenant: parsed.signer.tenant().map(str::to_string),
            key: self.key,
            ip: self.ip.to_string(),
            method: self.method.to_string(),
            path: self.path.to_string(),
            source_host,
            source_url,
            format: choice.format().map(|f| f.ext().to_string()),
            width: scaled(o.width),
            height: scaled(o.height),
            referer: self.referer,
            user_agent: self.user_agent,
        }
    }

    /// The `req` table when the URL does not parse (`pixgate policy eval`): no tenant, source
    /// or size.
    pub fn unparsed_request(self) -> PolicyRequest {
        PolicyRequest {
            ip: self.ip.to_string(),
            key: self.key,
            method: self.method.to_string(),
            path: self.path.to_string(),
            referer: self.referer,
            ..Default::default()
        }
    }
}

/// An API key longer than this is ignored (a key is an identifier, not a payload).
const MAX_KEY_LEN: usize = 256;

/// The client's address. From a trusted peer, `X-Forwarded-For` is walked from the right
/// (the hop the nearest proxy added) past further trusted proxies; the first address that is
/// not a trusted proxy is the client. Anything a client wrote itself sits to the left of that
/// and is never reached. Without a usable `X-Forwarded-For`, `X-Real-IP`; otherwise the peer.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[Network]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut leftmost = None;
    for hop in hops.iter().rev() {
        match parse_hop(hop) {
            Some(ip) if is_trusted(ip) => leftmost = Some(ip),
            Some(ip) => return ip,
            // A hop we cannot read: nothing to its left can be attributed to a trusted proxy.
            None => break,
        }
    }
    if let Some(ip) = headers
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_hop(v.trim()))
    {
        return ip;
    }
    leftmost.unwrap_or(peer)
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:567`, `2001:db8::1`, `[2001:db8::1]:80`.
fn parse_hop(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>()
        .or_else(|_| s.parse::<SocketAddr>().map(|a| a.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// The API key, in order of precedence: `X-Api-Key`, `Authorization: Bearer`, `?key=`.
pub fn api_key(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    let text = |v: &HeaderValue| v.to_str().ok().map(str::trim).map(str::to_string);
    let key = headers
        .get("x-api-key")
        .and_then(text)
        .or_else(|| {
            let auth = headers.get(AUTHORIZATION).and_then(text)?;
            let (scheme, token) = auth.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_string())
        })
        .or_else(|| {
            query?.split('&').find_map(|pair| {
                let v = pair.strip_prefix("key=")?;
                percent_encoding::percent_decode_str(v)
                    .decode_utf8()
                    .ok()
                    .map(|s| s.into_owned())
            })
        })?;
    (!key.is_empty() && key.len() <= MAX_KEY_LEN).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn nets(list: &[&str]) -> Vec<Network> {
        list.iter().map(|s| Network::parse(s).unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_headers_from_untrusted_peers_are_ignored() {
        let h = headers(&[("x-forwarded-for", "1.1.1.1"), ("x-real-ip", "2.2.2.2")]);
        assert_eq!(client_ip(ip("9.9.9.9"), &h, &[]), ip("9.9.9.9"));
        assert_eq!(
            client_ip(ip("9.9.9.9"), &h, &nets(&["127.0.0.1"])),
            ip("9.9.9.9")
        );
    }

    #[test]
    fn the_nearest_untrusted_hop_is_the_client() {
        let trusted = nets(&["127.0.0.1", "10.0.0.0/8"]);
        // The client sent a spoofed value; nginx appended the real address.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.9")]);
        assert_eq!(client_ip(ip("127.0.0.1"), &h, &trusted), ip("203.0.113.9"));
        // A chain of trusted proxies is skipped.
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.1.2.3"),
            ("x-forwarded-for", "10.4.5.6"),
        ]);
        assert_eq!(client_ip(ip("127.0.0.1"), &h, &trusted), ip("203.0.113.9"));
        // Ports and brackets as some proxies write them.
        let h = headers(&[("x-forwarded-for", "[2001:db8::7]:443")]);
        assert_eq!(client_ip(ip("127.0.0.1"), &h, &trusted), ip("2001:db8::7"));
        // IPv4-mapped peers count as their IPv4 address.
        let h = headers(&[("x-forwarded-for", "203.0.113.1")]);
        assert_eq!(
            client_ip(ip("::ffff:127.0.0.1"), &h, &trusted),
            ip("203.0.113.1")
        );
    }

    #[test]
    fn real_ip_and_fallbacks() {
        let trusted = nets(&["127.0.0.0/8"]);
        let h = headers(&[("x-real-ip", "203.0.113.5")]);
        assert_eq!(client_ip(ip("127.0.0.1"), &h, &trusted), ip("203.0.113.5"));
        let h = headers(&[("x-forwarded-for", "junk, 203.0.113.5")]);
        assert_eq!(client_ip(ip("127.0.0.1"), &h, &trusted), ip("203.0.113.5"));
        let h = headers(&[("x-forwarded-for", "203.0.113.5, junk")]);
        assert_eq!(client_ip(ip("127.0.0.1"), &h, &trusted), ip("127.0.0.1"));
        let h = headers(&[("x-forwarded-for", "127.0.0.9")]);
        assert_eq!(client_ip(ip("127.0.0.1"), &h, &trusted), ip("127.0.0.9"));
    }

    #[test]
    fn api_keys_from_headers_or_query() {
        assert_eq!(
            api_key(&headers(&[("x-api-key", "k1")]), Some("key=k3")),
            Some("k1".into())
        );
        assert_eq!(
            api_key(&headers(&[("authorization", "Bearer  k2 ")]), None),
            Some("k2".into())
        );
        assert_eq!(
            api_key(&headers(&[("authorization", "Basic abc")]), None),
            None
        );
        assert_eq!(
            api_key(&HeaderMap::new(), Some("a=1&key=k%2F3")),
            Some("k/3".into())
        );
        assert_eq!(api_key(&HeaderMap::new(), Some("key=")), None);
        let long = "k".repeat(300);
        assert_eq!(api_key(&headers(&[("x-api-key", &long)]), None), None);
    }
}
