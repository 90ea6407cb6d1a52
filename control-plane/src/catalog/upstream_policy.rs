//! Which provider addresses the HTTP API accepts: a provider's base URL is where the
//! gateway sends a provider key and clients' prompts, so one pointing inside the network
//! (SSRF) would let whoever holds an admin session reach what only the gateway can: the
//! cloud's metadata service and its credentials, loopback admin ports, private services.
//!
//! Providers in the config file are the operator's own word and are not checked here.
//! A DNS name is judged by its name only (it is resolved later, by Envoy): names that
//! are local by definition are refused; the egress of the gateway's network is what
//! stops a public name resolving to a private address.

use crate::envoy_config::{Host, Transport, Upstream};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What an address is, as far as reaching it from the gateway goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// On the internet.
    Public,
    /// This host or the local network: allowed only with `catalog.allow_private_upstreams`.
    Private(&'static str),
    /// Never a provider: cloud metadata, link-local, multicast, broadcast.
    Never(&'static str),
}

/// Whether the API may add a provider at `url`; `allow_private` is
/// `catalog.allow_private_upstreams`. The error says why, for the `url` field.
pub fn check(url: &Upstream, allow_private: bool) -> Result<(), String> {
    let reach = match &url.host {
        Host::Ip(ip) => ip_reach(*ip),
        Host::Name(name) => name_reach(name),
    };
    match reach {
        Reach::Never(what) => Err(format!("points at {}, {what}: never a provider", url.host)),
        Reach::Private(what) if !allow_private => Err(format!(
            "points at {}, {what}: refused unless `catalog.allow_private_upstreams` is set",
            url.host
        )),
        Reach::Public if url.transport == Transport::Cleartext && !allow_private => {
            Err("must be https: the provider key would cross the network in clear text".to_owned())
        }
        Reach::Public | Reach::Private(_) => Ok(()),
    }
}

fn name_reach(name: &str) -> Reach {
    if ["metadata.google.internal", "metadata.goog", "metadata"].contains(&name) {
        Reach::Never("a cloud metadata service")
    } else if name == "localhost" || name.ends_with(".localhost") {
        Reach::Private("this host (loopback)")
    } else if !name.contains('.')
        || [".internal", ".local", ".localdomain", ".lan", ".home.arpa"]
            .iter()
            .any(|suffix| name.ends_with(suffix))
    {
        Reach::Private("a name on the local network")
    } else {
        Reach::Public
    }
}

fn ip_reach(ip: IpAddr) -> Reach {
    match ip {
        IpAddr::V4(v4) => v4_reach(v4),
        IpAddr::V6(v6) => v6_reach(v6),
    }
}

fn v4_reach(ip: Ipv4Addr) -> Reach {
    let [a, b, c, _] = ip.octets();
    // Cloud metadata first: AWS, GCP, Azure, OpenStack (169.254.169.254, inside
    // link-local), Alibaba (100.100.100.200, inside shared space), Oracle (192.0.0.192).
    if ip == Ipv4Addr::new(169, 254, 169, 254)
        || ip == Ipv4Addr::new(100, 100, 100, 200)
        || ip == Ipv4Addr::new(192, 0, 0, 192)
    {
        Reach::Never("a cloud metadata address")
    } else if ip.is_link_local() {
        Reach::Never("a link-local address")
    } else if ip.is_multicast() || ip.is_broadcast() {
        Reach::Never("a multicast or broadcast address")
    } else if ip.is_loopback() || a == 0 {
        // 0.0.0.0/8 reaches this host too.
        Reach::Private("this host (loopback)")
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) || (a, b, c) == (192, 0, 0) {
        Reach::Private("a private-network address")
    } else {
        Reach::Public
    }
}

fn v6_reach(ip: Ipv6Addr) -> Reach {
    // An IPv4 address inside IPv6 (mapped, compatible, or NAT64) reaches that IPv4 host.
    let segments = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_reach(v4);
    }
    if segments[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_unspecified() && !ip.is_loopback() {
        let [_, _, _, _, _, _, hi, lo] = segments;
        return v4_reach(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
    }
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [_, _, _, _, _, _, hi, lo] = segments;
        return v4_reach(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
    }
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        Reach::Never("a cloud metadata address")
    } else if segments[0] & 0xffc0 == 0xfe80 {
        Reach::Never("a link-local address")
    } else if ip.is_multicast() {
        Reach::Never("a multicast address")
    } else if ip.is_loopback() || ip.is_unspecified() {
        Reach::Private("this host (loopback)")
    } else if segments[0] & 0xfe00 == 0xfc00 || segments[0] & 0xffc0 == 0xfec0 {
        Reach::Private("a private-network address")
    } else {
        Reach::Public
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(url: &str, allow_private: bool) -> Result<(), String> {
        check(&Upstream::parse(url).unwrap(), allow_private)
    }

    #[test]
    fn metadata_and_link_local_addresses_are_never_providers() {
        for url in [
            "http://169.254.169.254",
            "https://169.254.169.254:443",
            "http://[fd00:ec2::254]",
            "http://metadata.google.internal",
            "http://100.100.100.200",
            "http://169.254.1.1",
            "http://[fe80::1]",
            "http://[::ffff:169.254.169.254]",
            "http://[64:ff9b::a9fe:a9fe]",
            // Other spellings of 169.254.169.254 that URL parsers accept.
            "http://2852039166",
            "http://0xa9.0xfe.0xa9.0xfe",
            "http://0251.0376.0251.0376",
            "http://224.0.0.1",
        ] {
            for allow_private in [false, true] {
                let e = checked(url, allow_private).unwrap_err();
                assert!(e.contains("never a provider"), "{url}: {e}");
            }
        }
    }

    #[test]
    fn loopback_and_private_addresses_need_the_setting() {
        for url in [
            "http://127.0.0.1:9000",
            "http://127.1",
            "http://2130706433",
            "http://0.0.0.0:80",
            "http://[::1]:8000",
            "http://[::ffff:127.0.0.1]",
            "http://[::]",
            "http://localhost:11434",
            "http://vllm.localhost",
            "http://10.0.0.5",
            "http://172.16.3.4",
            "http://192.168.1.10",
            "http://100.64.0.1",
            "http://[fd12:3456::1]",
            "http://ollama",
            "http://llm.internal",
        ] {
            let e = checked(url, false).unwrap_err();
            assert!(e.contains("catalog.allow_private_upstreams"), "{url}: {e}");
            assert_eq!(checked(url, true), Ok(()), "{url}");
        }
    }

    #[test]
    fn public_providers_must_use_tls_unless_private_ones_are_allowed() {
        assert_eq!(checked("https://api.openai.com", false), Ok(()));
        assert_eq!(checked("https://8.8.8.8", false), Ok(()));
        assert_eq!(checked("https://[2606:4700::1111]", false), Ok(()));
        let e = checked("http://api.openai.com", false).unwrap_err();
        assert!(e.contains("https"), "{e}");
        assert_eq!(checked("http://api.openai.com", true), Ok(()));
    }
}
