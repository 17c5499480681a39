//! Who sent a request: the peer on the socket or, behind a trusted proxy, the client the proxy
//! names in its forwarding headers. The access log shows it.

use std::net::{IpAddr, SocketAddr};

use hyper::header::HeaderMap;

use crate::options::IpCidr;

/// Who sent a request, as seen on the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A TCP peer.
    Tcp(SocketAddr),
    /// A peer on a unix socket (no address).
    Unix,
}

/// The client's address: the peer, or for a trusted proxy the first untrusted address from the
/// right of `X-Forwarded-For` (else `X-Real-IP`).
pub(crate) fn client_address(
    headers: &HeaderMap,
    peer: Peer,
    proxies: &[IpCidr],
    trust_unix: bool,
) -> String {
    let trusted = |ip: IpAddr| proxies.iter().any(|net| net.contains(ip));
    let (peer_trusted, peer_text) = match peer {
        Peer::Tcp(addr) => (trusted(addr.ip()), addr.ip().to_string()),
        Peer::Unix => (trust_unix, "unix".to_owned()),
    };
    if !peer_trusted {
        return peer_text;
    }
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if let Some(first) = forwarded.first() {
        let mut client = *first;
        for hop in forwarded.iter().rev() {
            client = hop;
            match hop.parse::<IpAddr>() {
                Ok(ip) if trusted(ip) => continue,
                _ => break,
            }
        }
        return client.to_owned();
    }
    headers
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map_or(peer_text, str::to_owned)
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn forwarded_headers_are_believed_only_from_trusted_proxies() {
        let proxies: Vec<IpCidr> = vec!["10.0.0.0/8".parse().unwrap()];
        let proxy = Peer::Tcp("10.1.2.3:4000".parse().unwrap());
        let stranger = Peer::Tcp("203.0.113.9:4000".parse().unwrap());
        let xff = headers(&[("x-forwarded-for", "198.51.100.7, 10.9.9.9")]);
        assert_eq!(client_address(&xff, proxy, &proxies, false), "198.51.100.7");
        assert_eq!(
            client_address(&xff, stranger, &proxies, false),
            "203.0.113.9"
        );
        // A client cannot pass itself off as someone else by adding its own X-Forwarded-For.
        let spoofed = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "198.51.100.7"),
        ]);
        assert_eq!(
            client_address(&spoofed, proxy, &proxies, false),
            "198.51.100.7"
        );
        let real_ip = headers(&[("x-real-ip", "198.51.100.8")]);
        assert_eq!(
            client_address(&real_ip, proxy, &proxies, false),
            "198.51.100.8"
        );
        assert_eq!(
            client_address(&real_ip, Peer::Unix, &proxies, true),
            "198.51.100.8"
        );
        assert_eq!(
            client_address(&real_ip, Peer::Unix, &proxies, false),
            "unix"
        );
        assert_eq!(
            client_address(&HeaderMap::new(), proxy, &proxies, false),
            "10.1.2.3"
        );
    }
}
