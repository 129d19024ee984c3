//! Which addresses a webhook may be delivered to. By default only public ones: a webhook URL
//! pointing into the operator's own network would let any account probe or attack it (SSRF).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Whether a host name means this machine whatever DNS says: `localhost`, `localhost.` and
/// every `*.localhost` (RFC 6761 §6.3; resolvers answer them locally, if at all).
pub fn is_local_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

/// True when `ip` is a globally reachable unicast address: IANA's IPv4 and IPv6
/// Special-Purpose Address Registries ([`SPECIAL_V4`], [`SPECIAL_V6`]) decide, the most
/// specific block first, and what they leave is public unless it is multicast, broadcast or,
/// for IPv6, outside global unicast space (2000::/3). IPv4-mapped and NAT64 IPv6 addresses
/// are judged by the IPv4 address inside. Tunnelled transition forms (6to4, Teredo,
/// local-use NAT64, SIIT) are never public: they lead to an IPv4 address through a relay that
/// may sit in the operator's own network.
pub fn is_public(ip: IpAddr) -> bool {
    why_not_public(ip).is_none()
}

/// Why `ip` is not public (the registry block that holds it, with its RFC), or `None` when it
/// is: see [`is_public`].
pub fn why_not_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => why_not_public_v4(v4),
        IpAddr::V6(v6) => why_not_public_v6(v6),
    }
}

/// One block of a special-purpose registry: where it starts, its prefix length, whether
/// IANA marks it globally reachable, and its name (with the RFC that set it aside).
struct Special<A> {
    start: A,
    len: u8,
    global: bool,
    name: &'static str,
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8, global: bool, name: &'static str) -> Special<u32> {
    Special {
        start: u32::from_be_bytes([a, b, c, d]),
        len,
        global,
        name,
    }
}

const fn v6(start: u128, len: u8, global: bool, name: &'static str) -> Special<u128> {
    Special {
        start,
        len,
        global,
        name,
    }
}

/// IANA IPv4 Special-Purpose Address Registry (as of 2025), with "Globally Reachable" as the
/// registry says; a block it marks N/A or deprecated counts as not reachable.
#[rustfmt::skip]
const SPECIAL_V4: [Special<u32>; 25] = [
    v4(0, 0, 0, 0, 8, false, "this network, RFC 791"),
    v4(0, 0, 0, 0, 32, false, "this host on this network, RFC 1122"),
    v4(10, 0, 0, 0, 8, false, "private use, RFC 1918"),
    v4(100, 64, 0, 0, 10, false, "shared address space, RFC 6598"),
    v4(127, 0, 0, 0, 8, false, "loopback, RFC 1122"),
    v4(169, 254, 0, 0, 16, false, "link local, RFC 3927"),
    v4(172, 16, 0, 0, 12, false, "private use, RFC 1918"),
    v4(192, 0, 0, 0, 24, false, "IETF protocol assignments, RFC 6890"),
    v4(192, 0, 0, 0, 29, false, "IPv4 service continuity prefix, RFC 7335"),
    v4(192, 0, 0, 8, 32, false, "IPv4 dummy address, RFC 7600"),
    v4(192, 0, 0, 9, 32, true, "Port Control Protocol anycast, RFC 7723"),
    v4(192, 0, 0, 10, 32, true, "TURN anycast, RFC 8155"),
    v4(192, 0, 0, 170, 32, false, "NAT64/DNS64 discovery, RFC 7050"),
    v4(192, 0, 0, 171, 32, false, "NAT64/DNS64 discovery, RFC 7050"),
    v4(192, 0, 2, 0, 24, false, "documentation (TEST-NET-1), RFC 5737"),
    v4(192, 31, 196, 0, 24, true, "AS112-v4, RFC 7535"),
    v4(192, 52, 193, 0, 24, true, "AMT, RFC 7450"),
    v4(192, 88, 99, 0, 24, false, "deprecated 6to4 relay anycast, RFC 7526"),
    v4(192, 168, 0, 0, 16, false, "private use, RFC 1918"),
    v4(192, 175, 48, 0, 24, true, "direct delegation AS112 service, RFC 7534"),
    v4(198, 18, 0, 0, 15, false, "benchmarking, RFC 2544"),
    v4(198, 51, 100, 0, 24, false, "documentation (TEST-NET-2), RFC 5737"),
    v4(203, 0, 113, 0, 24, false, "documentation (TEST-NET-3), RFC 5737"),
    v4(240, 0, 0, 0, 4, false, "reserved, RFC 1112"),
    v4(255, 255, 255, 255, 32, false, "limited broadcast, RFC 919"),
];

/// IANA IPv6 Special-Purpose Address Registry (as of 2025), as [`SPECIAL_V4`]; plus SIIT's
/// IPv4-translated addresses (RFC 6145), which lead to an IPv4 address like the mapped ones.
#[rustfmt::skip]
const SPECIAL_V6: [Special<u128>; 27] = [
    v6(0x0000_0000_0000_0000_0000_0000_0000_0001, 128, false, "loopback, RFC 4291"),
    v6(0, 128, false, "unspecified, RFC 4291"),
    v6(0, 96, false, "IPv4-compatible, deprecated, RFC 4291"),
    v6(0x0000_0000_0000_0000_0000_ffff_0000_0000, 96, false, "IPv4-mapped, RFC 4291"),
    v6(0x0000_0000_0000_0000_ffff_0000_0000_0000, 96, false, "IPv4-translated (SIIT), RFC 6145"),
    v6(0x0064_ff9b_0000_0000_0000_0000_0000_0000, 96, true, "IPv4-IPv6 translation, RFC 6052"),
    v6(0x0064_ff9b_0001_0000_0000_0000_0000_0000, 48, false, "local-use IPv4-IPv6 translation, RFC 8215"),
    v6(0x0100_0000_0000_0000_0000_0000_0000_0000, 64, false, "discard-only, RFC 6666"),
    v6(0x0100_0000_0000_0001_0000_0000_0000_0000, 64, false, "dummy IPv6 prefix, RFC 9780"),
    v6(0x2001_0000_0000_0000_0000_0000_0000_0000, 23, false, "IETF protocol assignments, RFC 2928"),
    v6(0x2001_0000_0000_0000_0000_0000_0000_0000, 32, false, "Teredo, RFC 4380"),
    v6(0x2001_0001_0000_0000_0000_0000_0000_0001, 128, true, "Port Control Protocol anycast, RFC 7723"),
    v6(0x2001_0001_0000_0000_0000_0000_0000_0002, 128, true, "TURN anycast, RFC 8155"),
    v6(0x2001_0001_0000_0000_0000_0000_0000_0003, 128, true, "DNS-SD service registration anycast, RFC 9665"),
    v6(0x2001_0002_0000_0000_0000_0000_0000_0000, 48, false, "benchmarking, RFC 5180"),
    v6(0x2001_0003_0000_0000_0000_0000_0000_0000, 32, true, "AMT, RFC 7450"),
    v6(0x2001_0004_0112_0000_0000_0000_0000_0000, 48, true, "AS112-v6, RFC 7535"),
    v6(0x2001_0010_0000_0000_0000_0000_0000_0000, 28, false, "deprecated ORCHID, RFC 4843"),
    v6(0x2001_0020_0000_0000_0000_0000_0000_0000, 28, true, "ORCHIDv2, RFC 7343"),
    v6(0x2001_0030_0000_0000_0000_0000_0000_0000, 28, true, "drone remote ID entity tags, RFC 9374"),
    v6(0x2001_0db8_0000_0000_0000_0000_0000_0000, 32, false, "documentation, RFC 3849"),
    v6(0x2002_0000_0000_0000_0000_0000_0000_0000, 16, false, "6to4, RFC 3056"),
    v6(0x2620_004f_8000_0000_0000_0000_0000_0000, 48, true, "direct delegation AS112 service, RFC 7534"),
    v6(0x3fff_0000_0000_0000_0000_0000_0000_0000, 20, false, "documentation, RFC 9637"),
    v6(0x5f00_0000_0000_0000_0000_0000_0000_0000, 16, false, "segment routing (SRv6) SIDs, RFC 9602"),
    v6(0xfc00_0000_0000_0000_0000_0000_0000_0000, 7, false, "unique local, RFC 4193"),
    v6(0xfe80_0000_0000_0000_0000_0000_0000_0000, 10, false, "link-local unicast, RFC 4291"),
];

/// The most specific block of `table` that holds `addr`, if any.
fn most_specific<A>(table: &[Special<A>], addr: A, bits: u32) -> Option<&Special<A>>
where
    A: Copy
        + std::ops::BitAnd<Output = A>
        + std::ops::Not<Output = A>
        + std::ops::Shr<u32, Output = A>
        + PartialEq
        + From<u8>,
{
    let zero = A::from(0u8);
    table
        .iter()
        .filter(|s| {
            let host = if u32::from(s.len) >= bits {
                zero
            } else {
                (!zero) >> u32::from(s.len)
            };
            addr & !host == s.start & !host
        })
        .max_by_key(|s| s.len)
}

fn why_not_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    if ip.is_multicast() {
        return Some("multicast, RFC 5771");
    }
    most_specific(&SPECIAL_V4, u32::from(ip), 32)
        .filter(|s| !s.global)
        .map(|s| s.name)
}

/// The blocks whose addresses carry an IPv4 address in their last 32 bits, which decides:
/// IPv4-mapped (`::ffff:0:0/96`) and NAT64's well-known prefix (`64:ff9b::/96`).
const CARRY_V4: [u128; 2] = [
    0x0000_0000_0000_0000_0000_ffff_0000_0000,
    0x0064_ff9b_0000_0000_0000_0000_0000_0000,
];

fn why_not_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_multicast() {
        return Some("multicast, RFC 4291");
    }
    let bits = u128::from(ip);
    match most_specific(&SPECIAL_V6, bits, 128) {
        Some(special) if CARRY_V4.contains(&special.start) => {
            why_not_public_v4(Ipv4Addr::from(bits as u32))
        }
        Some(special) => (!special.global).then_some(special.name),
        // Outside the special blocks, only global unicast space (2000::/3) is assigned.
        None => (bits >> 125 != 0b001).then_some("outside global unicast space, RFC 4291"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "198.18.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2001:db8::1",
            "::127.0.0.1",
            "2002:7f00:1::1",                       // 6to4 of 127.0.0.1
            "2002:a00:1::",                         // 6to4 of 10.0.0.1
            "2002:808:808::1", // 6to4 of a public address: a relay still decides
            "2001:0:4136:e378:8000:63bf:3fff:fdd2", // Teredo
            "64:ff9b:1::a00:1", // local-use NAT64
            // Refused by the registries alone: the standard library's checks miss them.
            "::ffff:0:127.0.0.1", // SIIT
            "2001:2::1",          // benchmarking
            "3fff::1",            // documentation, RFC 9637
            "5f00::1",            // SRv6 SIDs
            "2001:10::1",         // deprecated ORCHID
            "192.88.99.1",        // deprecated 6to4 relay anycast
            // Outside global unicast space, and reserved blocks.
            "4000::1",
            "100::1",
            "100:0:0:1::1",
            "192.0.0.8",
            "192.0.0.170",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        // Globally reachable, as IANA says, though within special blocks.
        for global in [
            "192.0.0.9",
            "192.31.196.1",
            "2001:1::1",
            "2001:20::1",
            "2620:4f:8000::1",
        ] {
            assert!(is_public(global.parse().unwrap()), "{global}");
        }
    }

    #[test]
    fn every_registry_block_answers_as_the_registry_says() {
        for special in &SPECIAL_V4 {
            let ip = IpAddr::V4(Ipv4Addr::from(special.start));
            assert_eq!(is_public(ip), special.global, "{ip}: {}", special.name);
        }
        for special in &SPECIAL_V6 {
            let ip = Ipv6Addr::from(special.start);
            // Judged by the IPv4 address inside (here 0.0.0.0), not the block's flag.
            if CARRY_V4.contains(&special.start) {
                assert!(!is_public(IpAddr::V6(ip)), "{ip}: {}", special.name);
                continue;
            }
            assert_eq!(
                is_public(IpAddr::V6(ip)),
                special.global,
                "{ip}: {}",
                special.name
            );
        }
    }

    #[test]
    fn local_names() {
        for local in [
            "localhost",
            "LOCALHOST",
            "localhost.",
            "a.localhost",
            "x.y.localhost.",
        ] {
            assert!(is_local_name(local), "{local}");
        }
        for other in [
            "localhost.example.com",
            "notlocalhost",
            "example.com",
            "mylocalhost",
        ] {
            assert!(!is_local_name(other), "{other}");
        }
    }
}
