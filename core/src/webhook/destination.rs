//! Where outgoing webhooks may go. An endpoint URL is chosen by an API key
//! holder, so the gateway must never POST to its own network: loopback,
//! private, link-local (the cloud metadata service at 169.254.169.254),
//! shared, multicast and reserved addresses are refused, unless an operator
//! allows a network explicitly (`WEBHOOK_ALLOWED_NETWORKS`, for development).
//! The gateway checks an endpoint when it is registered and every address a
//! name resolves to each time it connects (a name can point elsewhere later).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An address range: `10.0.0.0/8`, `::1/128`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    address: IpAddr,
    prefix: u8,
}

impl FromStr for Network {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a network such as 10.0.0.0/8 or fd00::/8");
        let (address, prefix) = text.trim().split_once('/').map_or((text.trim(), None), |(a, p)| (a, Some(p)));
        let address = IpAddr::from_str(address).map_err(|_| bad())?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Network { address, prefix })
    }
}

impl Network {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// An IPv4 address written as IPv6 (`::ffff:127.0.0.1`) is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Why an address is not on the public internet, or None when it is.
pub fn internal(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => internal_v6(v6),
    }
}

fn internal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local (cloud metadata)")
    } else if ip.is_unspecified() || a == 0 {
        Some("this network")
    } else if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        Some("multicast or reserved")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (carrier-grade NAT)")
    } else if ip.is_documentation() || (a == 198 && (18..20).contains(&b)) || (a == 192 && b == 0) {
        Some("reserved")
    } else {
        None
    }
}

fn internal_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("this network")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if first & 0xfe00 == 0xfc00 {
        Some("private (unique local)")
    } else if first & 0xffc0 == 0xfe80 || first & 0xffc0 == 0xfec0 {
        Some("link-local")
    } else if first == 0x2001 && ip.segments()[1] == 0x0db8 {
        Some("reserved")
    } else if ip.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
        || ip.segments()[..3] == [0x64, 0xff9b, 1]
        || first == 0x2002
        || (first == 0x2001 && ip.segments()[1] == 0)
        || ip.segments()[..6] == [0; 6]
    {
        // NAT64 (well-known and local-use), 6to4, Teredo and the deprecated IPv4-compatible
        // form all carry an IPv4 address, and may reach an internal one.
        Some("translated IPv4")
    } else {
        None
    }
}

/// Names of cloud metadata services, refused whatever they resolve to where the
/// gateway runs (every other name, `localhost` included, is judged by its addresses).
pub fn internal_name(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "metadata" || host == "metadata.google.internal" || host.ends_with(".internal")
}

/// The networks an operator allowed, and the check every destination passes.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    allowed: Vec<Network>,
}

impl Policy {
    pub fn new(allowed: Vec<Network>) -> Self {
        Policy { allowed }
    }

    /// None when `ip` may be connected to; otherwise why not.
    pub fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        internal(ip).filter(|_| !self.allowed.iter().any(|n| n.contains(ip)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_refused_in_every_family() {
        for address in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "fd00::1",
            "fc00::1",
            "fe80::1",
            "ff02::1",
            "64:ff9b::7f00:1",
            "64:ff9b:1::a00:1",
            "2002:7f00:1::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "::127.0.0.1",
        ] {
            assert!(internal(ip(address)).is_some(), "{address}");
        }
        for address in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "2001:4860:4860::8888", "::ffff:8.8.8.8"] {
            assert_eq!(internal(ip(address)), None, "{address}");
        }
    }

    #[test]
    fn an_operator_allows_a_network_and_nothing_else() {
        let policy = Policy::new(vec!["127.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()]);
        assert_eq!(policy.refusal(ip("127.0.0.1")), None);
        assert_eq!(policy.refusal(ip("::ffff:127.0.0.1")), None, "the mapped form of an allowed address");
        assert_eq!(policy.refusal(ip("fd12::1")), None);
        assert!(policy.refusal(ip("10.0.0.1")).is_some());
        assert!(policy.refusal(ip("169.254.169.254")).is_some());
        assert!(Policy::default().refusal(ip("127.0.0.1")).is_some(), "nothing is allowed by default");
        assert!("10.1.2.3".parse::<Network>().unwrap().contains(ip("10.1.2.3")));
        for bad in ["10.0.0.0/33", "localhost/8", "::/129", ""] {
            assert!(bad.parse::<Network>().is_err(), "{bad}");
        }
    }

    #[test]
    fn names_of_metadata_services_are_refused() {
        for name in ["metadata.google.internal", "METADATA.GOOGLE.INTERNAL.", "metadata", "x.internal"] {
            assert!(internal_name(name), "{name}");
        }
        assert!(!internal_name("hooks.example.com"));
    }
}
