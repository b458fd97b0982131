//! Who a request comes from, and under which URL it was asked, when a reverse proxy stands in front.
//!
//! Behind a proxy (TLS termination, a load balancer) every connection comes from the proxy, and the URLs the
//! answers carry (Cisco page links, photo URLs in `/lookup`) would name the proxy's backend address and
//! `http`. Only from `carddav.trusted_proxies` are `X-Forwarded-For`, `X-Forwarded-Proto` and
//! `X-Forwarded-Host` believed: anyone else could claim any address and so any `anonymous_networks`.
//! The client is the right-most address in `X-Forwarded-For` that is not itself a trusted proxy (what each proxy
//! appended); the left-most entries are whatever the client sent, and are never believed.

use crate::carddav::auth::Cidr;
use hyper::header::HeaderMap;
use std::net::IpAddr;

/// The request's origin as the service uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    /// For `anonymous_networks`, failed-login logs and throttling.
    pub ip: IpAddr,
    /// Whether the client asked over TLS (to us, or to the proxy).
    pub secure: bool,
    /// The host the client asked for (`X-Forwarded-Host` from a trusted proxy, else `Host`), if it is one.
    pub host: Option<String>,
}

impl Origin {
    pub(crate) fn of(headers: &HeaderMap, peer: IpAddr, secure: bool, trusted: &[Cidr]) -> Origin {
        let host_header = first(headers, "host").filter(|h| valid_host(h));
        let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
        if !is_trusted(peer) {
            return Origin {
                ip: peer,
                secure,
                host: host_header,
            };
        }
        // Every X-Forwarded-For header, each a comma list, in order; read from the right.
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let mut ip = peer;
        for hop in hops.iter().rev() {
            // A port (`1.2.3.4:5678`, `[::1]:80`) some proxies append is not part of the address.
            let Some(addr) = parse_hop(hop) else { break };
            ip = addr;
            if !is_trusted(addr) {
                break;
            }
        }
        let secure = match first(headers, "x-forwarded-proto").map(|p| p.to_ascii_lowercase()) {
            Some(p) if p == "https" => true,
            Some(p) if p == "http" => false,
            _ => secure,
        };
        let host = first(headers, "x-forwarded-host")
            .filter(|h| valid_host(h))
            .or(host_header);
        Origin { ip, secure, host }
    }

    /// `scheme://host` for absolute URLs in answers; empty (relative URLs) without a usable host.
    pub(crate) fn base_url(&self) -> String {
        match &self.host {
            Some(h) => format!("{}://{h}", if self.secure { "https" } else { "http" }),
            None => String::new(),
        }
    }
}

/// The first value of a header (the first of a comma list), trimmed.
fn first(headers: &HeaderMap, name: &str) -> Option<String> {
    let v = headers.get(name)?.to_str().ok()?;
    let v = v.split(',').next()?.trim();
    (!v.is_empty()).then(|| v.to_string())
}

fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
}

fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Ok(sa) = hop.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let trusted: Vec<Cidr> = vec!["10.0.0.0/24".parse().unwrap()];
        let h = headers(&[
            ("host", "backend:8080"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "dir.example.com"),
        ]);
        let o = Origin::of(&h, ip("10.0.0.5"), false, &trusted);
        assert_eq!(o.ip, ip("203.0.113.9"));
        assert_eq!(o.base_url(), "https://dir.example.com");
        // The same headers from anyone else are ignored.
        let o = Origin::of(&h, ip("198.51.100.1"), false, &trusted);
        assert_eq!(o.ip, ip("198.51.100.1"));
        assert_eq!(o.base_url(), "http://backend:8080");
        // Nobody trusted: nothing believed, not even from loopback.
        let o = Origin::of(&h, ip("127.0.0.1"), true, &[]);
        assert_eq!((o.ip, o.base_url().as_str()), (ip("127.0.0.1"), "https://backend:8080"));
    }

    #[test]
    fn the_client_is_the_last_untrusted_hop() {
        let trusted: Vec<Cidr> = vec!["10.0.0.0/24".parse().unwrap(), "fd00::/8".parse().unwrap()];
        let at = |xff: &[&str]| {
            let pairs: Vec<(&'static str, &str)> = xff.iter().map(|v| ("x-forwarded-for", *v)).collect();
            Origin::of(&headers(&pairs), ip("10.0.0.5"), false, &trusted).ip
        };
        // A client that claims to be in a phone network does not become one.
        assert_eq!(at(&["10.20.0.7, 198.51.100.4"]), ip("198.51.100.4"));
        // Two proxies: the first one's address is skipped, the client's is taken.
        assert_eq!(at(&["198.51.100.4, 10.0.0.9"]), ip("198.51.100.4"));
        assert_eq!(at(&["198.51.100.4", "10.0.0.9"]), ip("198.51.100.4"));
        assert_eq!(at(&["[2001:db8::1]:4711, fd00::2"]), ip("2001:db8::1"));
        assert_eq!(at(&["198.51.100.4:5060"]), ip("198.51.100.4"));
        // Garbage stops the walk at the last address that made sense.
        assert_eq!(at(&["unknown, 10.0.0.9"]), ip("10.0.0.9"));
        assert_eq!(at(&["not an address"]), ip("10.0.0.5"));
        assert_eq!(at(&[]), ip("10.0.0.5"));
        // Only proxies: the left-most one is the client.
        assert_eq!(at(&["10.0.0.8, 10.0.0.9"]), ip("10.0.0.8"));
    }

    #[test]
    fn bad_hosts_and_protocols_are_ignored() {
        let trusted: Vec<Cidr> = vec!["127.0.0.0/8".parse().unwrap()];
        let h = headers(&[
            ("host", "good:80"),
            ("x-forwarded-host", "evil.example/<script>"),
            ("x-forwarded-proto", "gopher"),
        ]);
        let o = Origin::of(&h, ip("127.0.0.1"), true, &trusted);
        assert_eq!(o.base_url(), "https://good:80");
        let o = Origin::of(&headers(&[("host", "a b")]), ip("127.0.0.1"), false, &trusted);
        assert_eq!(o.base_url(), "");
    }
}
