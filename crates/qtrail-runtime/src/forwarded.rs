//! Where a call came from: the peer address, or what trusted proxies say in `x-forwarded-for`.
//!
//! `x-forwarded-for` is only a claim: anyone can send it, so an event that believed it from
//! everyone would record whatever address a caller chose. It is believed only when the peer is a
//! proxy the operator named (`--trusted-proxy CIDR`), and then read from the right: each trusted
//! proxy appends the address it saw, so the right-most address that is not a trusted proxy is the
//! first one no trusted hop can vouch past, and anything left of it may be forged.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`); a bare address is a network of
/// one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why a `--trusted-proxy` value is not a network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The address part is not an IPv4 or IPv6 address.
    #[error("`{0}` is not an ip address")]
    Address(String),
    /// The prefix length is not a number within the address family's width.
    #[error("prefix length `{given}` must be 0 to {max}")]
    Prefix {
        /// The prefix as given.
        given: String,
        /// 32 for IPv4, 128 for IPv6.
        max: u8,
    },
    /// Bits are set after the prefix, which usually means a mistyped network.
    #[error("`{0}` has bits set after its prefix, write the network address (e.g. `10.0.0.0/8`)")]
    HostBits(String),
}

impl Cidr {
    /// Returns true when `ip` is in the network. An IPv4-mapped IPv6 address (a dual-stack
    /// listener's view of an IPv4 peer) counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => {
                masked(u128::from(u32::from(ip)), self.prefix, 32) == u128::from(u32::from(network))
            }
            (IpAddr::V6(network), IpAddr::V6(ip)) => masked(u128::from(ip), self.prefix, 128) == u128::from(network),
            _ => false,
        }
    }
}

/// Returns `bits` (an address `width` bits wide) with everything after `prefix` cleared.
fn masked(bits: u128, prefix: u8, width: u8) -> u128 {
    let host_bits = u32::from(width - prefix);
    let mask = if host_bits >= 128 { 0 } else { u128::MAX << host_bits };
    let width_mask = if width == 128 { u128::MAX } else { (1u128 << width) - 1 };
    bits & mask & width_mask
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.parse().map_err(|_| CidrError::Address(address.to_owned()))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(given) => given
                .parse::<u8>()
                .ok()
                .filter(|prefix| *prefix <= max)
                .ok_or_else(|| CidrError::Prefix { given: given.to_owned(), max })?,
        };
        let bits = match network {
            IpAddr::V4(ip) => u128::from(u32::from(ip)),
            IpAddr::V6(ip) => u128::from(ip),
        };
        if masked(bits, prefix, max) != bits {
            return Err(CidrError::HostBits(text.to_owned()));
        }
        Ok(Self { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Returns the address a call came from: the peer's, unless the peer is a trusted proxy; then
/// the right-most address in `forwarded_for` (the comma-separated `x-forwarded-for` values, in
/// order) that is not a trusted proxy. An entry that is not an address ends the walk at the hop
/// that forwarded it; when every entry is a trusted proxy the left-most one is the origin.
pub fn originating_address(peer: Option<IpAddr>, forwarded_for: &[&str], trusted: &[Cidr]) -> Option<IpAddr> {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|cidr| cidr.contains(ip));
    let mut origin = peer?.to_canonical();
    if !is_trusted(origin) {
        return Some(origin);
    }
    let entries = forwarded_for.iter().flat_map(|value| value.split(',')).map(str::trim);
    for entry in entries.collect::<Vec<_>>().into_iter().rev() {
        let Ok(ip) = entry.parse::<IpAddr>() else {
            return Some(origin);
        };
        origin = ip.to_canonical();
        if !is_trusted(origin) {
            return Some(origin);
        }
    }
    Some(origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|text| text.parse().unwrap()).collect()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn parses_ipv4_and_ipv6_networks() {
        let net: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains(ip("10.255.0.1")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(net.contains(ip("::ffff:10.1.2.3")), "ipv4-mapped peers count as ipv4");
        let one: Cidr = "192.0.2.7".parse().unwrap();
        assert_eq!(one.to_string(), "192.0.2.7/32");
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")));
        assert!(!v6.contains(ip("2001:db9::5")));
        assert!(!v6.contains(ip("10.0.0.1")));
        let everything: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(everything.contains(ip("203.0.113.9")));
        let all_v6: Cidr = "::/0".parse().unwrap();
        assert!(all_v6.contains(ip("2001:db8::1")));
    }

    #[test]
    fn refuses_what_is_not_a_network() {
        for (bad, message) in [
            ("10.0.0/8", "`10.0.0` is not an ip address"),
            ("10.0.0.0/33", "prefix length `33` must be 0 to 32"),
            ("::/129", "prefix length `129` must be 0 to 128"),
            ("10.0.0.0/x", "prefix length `x` must be 0 to 32"),
            ("10.0.0.1/8", "`10.0.0.1/8` has bits set after its prefix"),
            ("proxy.local", "`proxy.local` is not an ip address"),
        ] {
            let err = bad.parse::<Cidr>().unwrap_err().to_string();
            assert!(err.starts_with(message), "{bad}: {err}");
        }
    }

    #[test]
    fn believes_forwarded_for_only_from_trusted_proxies() {
        let trusted = cidrs(&["10.0.0.0/8"]);
        let peer = Some(ip("10.0.0.1"));
        // An untrusted peer's claim is ignored.
        assert_eq!(originating_address(Some(ip("198.51.100.4")), &["203.0.113.7"], &trusted), Some(ip("198.51.100.4")));
        assert_eq!(originating_address(Some(ip("10.0.0.1")), &["203.0.113.7"], &[]), Some(ip("10.0.0.1")));
        // From a trusted proxy: the right-most untrusted entry, not a forged first one.
        assert_eq!(originating_address(peer, &["1.2.3.4, 203.0.113.7, 10.0.0.9"], &trusted), Some(ip("203.0.113.7")));
        assert_eq!(originating_address(peer, &["1.2.3.4", "203.0.113.7"], &trusted), Some(ip("203.0.113.7")));
        // Garbage stops the walk at the hop that forwarded it.
        assert_eq!(originating_address(peer, &["203.0.113.7, junk, 10.0.0.9"], &trusted), Some(ip("10.0.0.9")));
        // All trusted: the left-most; no header: the peer.
        assert_eq!(originating_address(peer, &["10.0.0.3, 10.0.0.9"], &trusted), Some(ip("10.0.0.3")));
        assert_eq!(originating_address(peer, &[], &trusted), peer);
        assert_eq!(originating_address(None, &["203.0.113.7"], &trusted), None);
    }
}
