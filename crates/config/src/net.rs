//! An IP network, as `server.trusted_proxies` lists them: `"10.0.0.0/8"`, `"::1/128"`, or a bare
//! address meaning that one host.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IP network: an address and a prefix length no longer than the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpCidr {
    addr: IpAddr,
    prefix: u8,
}

/// A string that is not an IP network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// What comes before the `/` is not an IP address.
    #[error("`{0}` is not an IP address or network like \"10.0.0.0/8\" or \"::1\"")]
    Address(String),
    /// The prefix length is not a number, or longer than the address.
    #[error("`{0}` has a bad prefix length")]
    Prefix(String),
}

impl IpCidr {
    /// 127.0.0.0/8.
    pub const LOCALHOST_V4: IpCidr = IpCidr {
        addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)),
        prefix: 8,
    };
    /// ::1/128.
    pub const LOCALHOST_V6: IpCidr = IpCidr {
        addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
        prefix: 128,
    };

    /// The network of `addr` and its first `prefix` bits; `None` if `prefix` is longer than the
    /// address.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<IpCidr> {
        (prefix <= max_prefix(addr)).then_some(IpCidr { addr, prefix })
    }

    /// The one host `addr` (a /32 or /128).
    pub fn host(addr: IpAddr) -> IpCidr {
        IpCidr {
            addr,
            prefix: max_prefix(addr),
        }
    }

    /// Whether `ip` is inside this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

impl FromStr for IpCidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<IpCidr, CidrError> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| CidrError::Address(s.to_owned()))?;
        match prefix {
            None => Ok(IpCidr::host(addr)),
            Some(p) => p
                .parse::<u8>()
                .ok()
                .and_then(|p| IpCidr::new(addr, p))
                .ok_or_else(|| CidrError::Prefix(s.to_owned())),
        }
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parse_and_contains() {
        let net: IpCidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(
            net.contains("::ffff:10.1.0.9".parse().unwrap()),
            "v4-mapped counts as v4"
        );
        let host: IpCidr = "192.168.1.5".parse().unwrap();
        assert_eq!(host.to_string(), "192.168.1.5/32");
        assert!(host.contains("192.168.1.5".parse().unwrap()));
        assert!(!host.contains("192.168.1.6".parse().unwrap()));
        let all: IpCidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!(!all.contains("::1".parse().unwrap()));
        assert!(IpCidr::LOCALHOST_V6.contains("::1".parse().unwrap()));
        let v6: IpCidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "example",
            "10.0.0.0/x",
            "1.2.3/8",
        ] {
            assert!(bad.parse::<IpCidr>().is_err(), "{bad}");
        }
        assert!(matches!(
            "10.0.0.0/33".parse::<IpCidr>(),
            Err(CidrError::Prefix(_))
        ));
    }
}
