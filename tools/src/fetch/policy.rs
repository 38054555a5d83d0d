//! [`AddressPolicy`]: which IP addresses a page fetch may connect to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::config::FetchConfig;
use crate::{Error, Result};

/// Which addresses a fetch may connect to: public unicast addresses only, unless the
/// config allows all internal addresses or lists networks to allow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    allow_private: bool,
    allowed: Vec<Network>,
}

impl AddressPolicy {
    /// The policy of a `[tools.web_search.fetch]` table. Fails on a malformed CIDR.
    pub fn from_config(config: &FetchConfig) -> Result<Self> {
        let allowed = config
            .allowed_networks
            .iter()
            .map(|cidr| {
                Network::parse(cidr).ok_or_else(|| Error::Config {
                    field: "tools.web_search.fetch.allowed_networks".into(),
                    reason: format!("{cidr:?} is not an IP network like 10.0.0.0/8 or ::1/128"),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { allow_private: config.allow_private, allowed })
    }

    /// A policy that allows every address (for tests and trusted networks).
    pub fn allow_all() -> Self {
        Self { allow_private: true, allowed: Vec::new() }
    }

    /// `None` if a fetch may connect to `ip`, else why not.
    pub fn check(&self, ip: IpAddr) -> Option<&'static str> {
        if self.allow_private || self.allowed.iter().any(|net| net.contains(ip)) {
            return None;
        }
        blocked_reason(ip)
    }
}

/// Why `ip` is not a public unicast address, or `None` if it is one.
///
/// IPv4-mapped, IPv4-compatible, NAT64 and 6to4 IPv6 addresses are judged by the IPv4
/// address they carry.
pub fn blocked_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => blocked_v4(v4),
        IpAddr::V6(v6) => blocked_v6(v6),
    }
}

fn blocked_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let reason = match (a, b, c) {
        (0, _, _) => "an unspecified (\"this network\") address",
        (10, _, _) | (172, 16..=31, _) | (192, 168, _) => "a private address",
        (100, 64..=127, _) => "a shared (CGNAT) address",
        (127, _, _) => "a loopback address",
        (169, 254, _) => "a link-local address",
        (192, 0, 0) => "an IETF protocol assignment address",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "a documentation address",
        (198, 18..=19, _) => "a benchmarking address",
        (224..=239, _, _) => "a multicast address",
        (240..=255, _, _) => "a reserved or broadcast address",
        _ => return None,
    };
    Some(reason)
}

fn blocked_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return blocked_v4(v4);
    }
    let segments = ip.segments();
    if ip.is_unspecified() {
        return Some("an unspecified address");
    }
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    // ::a.b.c.d (IPv4-compatible, deprecated) and 64:ff9b::a.b.c.d (NAT64) carry an IPv4
    // address in their low 32 bits.
    let low_v4 = || {
        let [hi, lo] = [segments[6], segments[7]];
        Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)
    };
    if segments[..6] == [0; 6] {
        return blocked_v4(low_v4()).or(Some("an IPv4-compatible address"));
    }
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return blocked_v4(low_v4());
    }
    // 2002:a.b.c.d::/48 (6to4) carries one in bits 16–48.
    if segments[0] == 0x2002 {
        let [hi, lo] = [segments[1], segments[2]];
        let v4 = Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
        if let Some(reason) = blocked_v4(v4) {
            return Some(reason);
        }
    }
    let reason = match segments[0] {
        0xff00..=0xffff => "a multicast address",
        0xfe80..=0xfebf => "a link-local address",
        0xfec0..=0xfeff => "a site-local address",
        0xfc00..=0xfdff => "a unique-local address",
        0x2001 if segments[1] == 0x0db8 => "a documentation address",
        0x0100 if segments[1..4] == [0, 0, 0] => "a discard-only address",
        _ => return None,
    };
    Some(reason)
}

/// An IP network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// Parses `10.0.0.0/8`, `::1/128` or a bare address (a /32 or /128).
    fn parse(text: &str) -> Option<Self> {
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((addr, prefix)) => {
                (addr.parse::<IpAddr>().ok()?, Some(prefix.parse::<u8>().ok()?))
            }
            None => (text.trim().parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Self { addr, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            _ => ip,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(
                u128::from(net.to_bits()) << 96,
                u128::from(ip.to_bits()) << 96,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(net.to_bits(), ip.to_bits(), self.prefix)
            }
            _ => false,
        }
    }
}

/// Whether the top `prefix` bits of `a` and `b` agree.
fn prefix_eq(a: u128, b: u128, prefix: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let mask = u128::MAX << (128 - u32::from(prefix));
    a & mask == b & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_blocked_and_public_ones_are_not() {
        for blocked in [
            "127.0.0.1",
            "127.8.9.10",
            "10.0.0.1",
            "10.255.1.2",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.254",
            "0.0.0.0",
            "224.0.0.251",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::10.0.0.1",
            "2002:7f00:1::",
            "2001:db8::1",
        ] {
            assert!(blocked_reason(ip(blocked)).is_some(), "{blocked} should be blocked");
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "172.32.0.1",
            "100.128.0.1",
            "169.255.0.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
        ] {
            assert_eq!(blocked_reason(ip(public)), None, "{public} should be allowed");
        }
    }

    #[test]
    fn config_allows_everything_or_listed_networks() {
        let strict = AddressPolicy::default();
        assert!(strict.check(ip("10.1.2.3")).is_some());
        let listed = AddressPolicy::from_config(&FetchConfig {
            allowed_networks: vec!["10.1.0.0/16".into(), "::1".into()],
            ..FetchConfig::default()
        })
        .unwrap();
        assert_eq!(listed.check(ip("10.1.2.3")), None);
        assert_eq!(listed.check(ip("::ffff:10.1.9.9")), None);
        assert!(listed.check(ip("10.2.0.1")).is_some());
        assert_eq!(listed.check(ip("::1")), None);
        assert!(listed.check(ip("127.0.0.1")).is_some());
        assert_eq!(AddressPolicy::allow_all().check(ip("169.254.169.254")), None);
        let bad =
            FetchConfig { allowed_networks: vec!["10.0.0.0/40".into()], ..FetchConfig::default() };
        assert!(AddressPolicy::from_config(&bad).is_err());
    }
}
