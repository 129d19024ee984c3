//! Which addresses a webhook may be delivered to. By default only public ones: a webhook URL
//! pointing into the operator's own network would let any account probe or attack it (SSRF).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Whether a host name means this machine whatever DNS says: `localhost`, `localhost.` and
/// every `*.localhost` (RFC 6761 §6.3; resolvers answer them locally, if at all).
pub fn is_local_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

/// True when `ip` is a globally routable unicast address, i.e. not loopback, private,
/// link-local, shared (CGNAT), multicast, broadcast, documentation, benchmarking, reserved or
/// unspecified. IPv4-mapped and NAT64 IPv6 addresses are judged by the IPv4 address inside.
/// Tunnelled transition forms (6to4, Teredo, local-use NAT64) are never public: they lead to
/// an IPv4 address through a relay that may sit in the operator's own network.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space, RFC 6598
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking, RFC 2544
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let seg = ip.segments();
    // NAT64 well-known prefix 64:ff9b::/96 carries an IPv4 address in its last 32 bits.
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] {
        let [a, b] = seg[6].to_be_bytes();
        let [c, d] = seg[7].to_be_bytes();
        return is_public_v4(Ipv4Addr::new(a, b, c, d));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || seg[0] == 0x2002 // 6to4, RFC 3056: 2002:V4ADDR::/48
        || (seg[0] == 0x2001 && seg[1] == 0) // Teredo, RFC 4380: 2001:0::/32
        || (seg[0] == 0x64 && seg[1] == 0xff9b && seg[2] == 1) // local-use NAT64 64:ff9b:1::/48
        || (seg[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (seg[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (seg[0] & 0xffc0) == 0xfec0 // deprecated site-local fec0::/10
        || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
        || (seg[0] == 0x0100 && seg[1..4] == [0, 0, 0]) // discard-only 100::/64
        || seg[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible, deprecated
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
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
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
