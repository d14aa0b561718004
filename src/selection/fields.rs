//! Validators for the values inside one network selection element. Each returns the reason
//! a value is refused; the caller adds which element and which field it was.

use serde_json::{Map, Value};
use std::net::IpAddr;

/// Longest object name Kubernetes accepts (DNS-1123 subdomain).
pub const MAX_NAME_LEN: usize = 253;
/// Longest namespace Kubernetes accepts (DNS-1123 label).
pub const MAX_NAMESPACE_LEN: usize = 63;

/// Shows a refused value without letting control characters or megabytes into a message.
pub fn shown(s: &str) -> String {
    const MAX_SHOWN: usize = 64;
    if s.chars().count() <= MAX_SHOWN {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(MAX_SHOWN).collect();
        format!("{head:?}...")
    }
}

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            alnum(first) && alnum(last) && b.iter().all(|c| alnum(c) || *c == b'-')
        }
        _ => false,
    }
}

/// NAD names are Kubernetes object names: DNS-1123 subdomains (dot-separated labels, at most
/// 253 bytes). Multus checks names with the label regex only, which refuses valid NAD names
/// such as `sriov.a`; the subdomain rule is what the API server itself enforces.
pub fn dns_subdomain(s: &str) -> Result<(), String> {
    if s.len() > MAX_NAME_LEN {
        return Err(format!(
            "{} is longer than {MAX_NAME_LEN} characters",
            shown(s)
        ));
    }
    if s.split('.').all(is_label) {
        Ok(())
    } else {
        Err(format!(
            "{} is not a DNS-1123 subdomain (lowercase letters, digits, '-' and '.')",
            shown(s)
        ))
    }
}

/// Namespaces are DNS-1123 labels of at most 63 bytes. They end up in API URLs, so nothing
/// else may pass (reliability-matrix S8).
pub fn dns_label(s: &str) -> Result<(), String> {
    if s.len() > MAX_NAMESPACE_LEN {
        return Err(format!(
            "{} is longer than {MAX_NAMESPACE_LEN} characters",
            shown(s)
        ));
    }
    if is_label(s) {
        Ok(())
    } else {
        Err(format!(
            "{} is not a DNS-1123 label (lowercase letters, digits and '-')",
            shown(s)
        ))
    }
}

/// An interface the pod asks for: the CNI rules, and never the loopback device, which every
/// netns already has.
pub fn interface(s: &str) -> Result<cni::IfName, String> {
    let name = cni::IfName::parse(s).map_err(|e| e.to_string())?;
    if s == "lo" {
        return Err("\"lo\" is the loopback interface".into());
    }
    Ok(name)
}

fn hex_octets(s: &str, count: usize, sep: char) -> Option<Vec<u8>> {
    let parts: Vec<&str> = s.split(sep).collect();
    if parts.len() != count {
        return None;
    }
    parts
        .iter()
        .map(|p| {
            if p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()) {
                u8::from_str_radix(p, 16).ok()
            } else {
                None
            }
        })
        .collect()
}

fn colon_hex(octets: &[u8]) -> String {
    octets
        .iter()
        .map(|o| format!("{o:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A unicast Ethernet address, `aa:bb:cc:dd:ee:ff` or `aa-bb-...`; returned lowercase with
/// colons, the form the kernel reports and delegates compare against.
pub fn mac(s: &str) -> Result<String, String> {
    let octets = hex_octets(s, 6, ':')
        .or_else(|| hex_octets(s, 6, '-'))
        .ok_or_else(|| format!("{} is not six hex octets", shown(s)))?;
    // Bit 0 of the first octet marks group addresses; broadcast is one of them.
    if octets[0] & 1 == 1 {
        return Err(format!("{} is a multicast or broadcast address", shown(s)));
    }
    if octets.iter().all(|o| *o == 0) {
        return Err(format!("{} is the all-zero address", shown(s)));
    }
    Ok(colon_hex(&octets))
}

/// An InfiniBand GUID: eight hex octets separated by colons, returned lowercase.
pub fn infiniband_guid(s: &str) -> Result<String, String> {
    let octets =
        hex_octets(s, 8, ':').ok_or_else(|| format!("{} is not eight hex octets", shown(s)))?;
    if octets.iter().all(|o| *o == 0) {
        return Err(format!("{} is the all-zero GUID", shown(s)));
    }
    Ok(colon_hex(&octets))
}

/// A bare IP address. std's parser already refuses zones (`fe80::1%eth0`), octets above 255
/// and leading zeros in IPv4 (`010.0.0.1`, which Go once read as octal).
pub fn ip_addr(s: &str) -> Result<IpAddr, String> {
    s.parse::<IpAddr>()
        .map_err(|_| format!("{} is not an IP address", shown(s)))
}

/// An address with an optional prefix length (`10.1.0.5/24`, `2001:db8::5`). The text is
/// kept as written: host bits are meaningful here (the address the pod wants).
pub fn ip_with_prefix(s: &str) -> Result<IpAddr, String> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let ip = ip_addr(addr)?;
    if let Some(p) = prefix {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let ok = !p.is_empty()
            && p.len() <= 3
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u8>().is_ok_and(|n| n <= max);
        if !ok {
            return Err(format!(
                "{} has a prefix length outside 0..={max}",
                shown(s)
            ));
        }
    }
    Ok(ip)
}

fn port(m: &Map<String, Value>, key: &str) -> Result<(), String> {
    match m.get(key) {
        None => Err(format!("{key} is missing")),
        Some(v) => match v.as_u64() {
            Some(1..=65535) => Ok(()),
            _ => Err(format!("{key} {v} is not a port in 1..=65535")),
        },
    }
}

/// One `portMappings` entry as the portmap plugin reads it. Keys other than the four checked
/// here go through untouched.
pub fn port_mapping(v: &Value) -> Result<(), String> {
    let Value::Object(m) = v else {
        return Err("entry is not an object".into());
    };
    port(m, "hostPort")?;
    port(m, "containerPort")?;
    match m.get("protocol") {
        None => {}
        Some(Value::String(p)) if ["tcp", "udp", "sctp"].contains(&p.to_lowercase().as_str()) => {}
        Some(p) => return Err(format!("protocol {p} is not tcp, udp or sctp")),
    }
    match m.get("hostIP") {
        None => Ok(()),
        Some(Value::String(ip)) if ip.is_empty() => Ok(()),
        Some(Value::String(ip)) => ip_addr(ip).map(|_| ()).map_err(|e| format!("hostIP: {e}")),
        Some(_) => Err("hostIP is not a string".into()),
    }
}

/// The bandwidth plugin's four limits, each a non-negative integer (bits per second, bits).
pub fn bandwidth(v: &Value) -> Result<(), String> {
    let Value::Object(m) = v else {
        return Err("is not an object".into());
    };
    for key in ["ingressRate", "ingressBurst", "egressRate", "egressBurst"] {
        if let Some(n) = m.get(key)
            && n.as_u64().is_none()
        {
            return Err(format!("{key} {n} is not a non-negative integer"));
        }
    }
    Ok(())
}

/// The `deviceID` key Multus reads from the element (a PCI address or a vendor's device
/// name). Opaque to us, but it reaches delegates and CNI_ARGS-free runtimeConfig, so it must
/// be short printable text.
pub fn device_id(s: &str) -> Result<(), String> {
    const MAX_DEVICE_ID: usize = 256;
    if s.len() > MAX_DEVICE_ID {
        return Err(format!("{} is longer than {MAX_DEVICE_ID} bytes", shown(s)));
    }
    if s.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(format!(
            "{} contains whitespace or non-ASCII characters",
            shown(s)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kubernetes_rules() {
        for ok in ["a", "net-1", "a.b", "0abc", &"a".repeat(253)] {
            assert!(dns_subdomain(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Net_1",
            "-a",
            "a-",
            "a..b",
            ".a",
            "a/b",
            "..",
            &"a".repeat(254),
        ] {
            assert!(dns_subdomain(bad).is_err(), "{bad}");
        }
        for ok in ["default", "kube-system", &"n".repeat(63)] {
            assert!(dns_label(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a.b", "a/b", "..", "A", "a%2Fb", &"n".repeat(64)] {
            assert!(dns_label(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mac_must_be_unicast_and_is_lowercased() {
        assert_eq!(mac("02:23:45:67:89:AB").unwrap(), "02:23:45:67:89:ab");
        assert_eq!(mac("02-23-45-67-89-ab").unwrap(), "02:23:45:67:89:ab");
        for bad in [
            "ff:ff:ff:ff:ff:ff",
            "01:00:5e:00:00:01",
            "00:00:00:00:00:00",
            "zz:00:00:00:00:01",
            "02:23:45:67:89",
            "02:23:45:67:89:ab:cd",
            "2:23:45:67:89:ab",
            "02:23-45:67:89:ab",
            "02:23:45:67:89:+b",
        ] {
            assert!(mac(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn guid_is_eight_octets() {
        assert_eq!(
            infiniband_guid("24:8A:07:03:00:8d:ae:2f").unwrap(),
            "24:8a:07:03:00:8d:ae:2f"
        );
        for bad in [
            "24:8a:07:03:00:8d:ae",
            "00:00:00:00:00:00:00:00",
            "24-8a-07-03-00-8d-ae-2f",
        ] {
            assert!(infiniband_guid(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ips_accept_optional_prefix_in_range() {
        for ok in [
            "10.1.0.5",
            "10.1.0.5/24",
            "10.0.0.0/0",
            "2001:db8::5/64",
            "::1/128",
        ] {
            assert!(ip_with_prefix(ok).is_ok(), "{ok}");
        }
        for bad in [
            "10.0.0.1/33",
            "300.1.1.1",
            "fe80::1%eth0",
            "2001:db8::1/129",
            "10.0.0.1/",
            "10.0.0.1/+8",
            "10.0.0.1/0008",
            "010.0.0.1",
            " 10.0.0.1",
            "10.0.0.1/24/1",
        ] {
            assert!(ip_with_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn port_mappings_and_bandwidth_are_checked() {
        let pm = |s: &str| port_mapping(&serde_json::from_str(s).unwrap());
        assert!(pm(r#"{"hostPort":8080,"containerPort":80,"protocol":"TCP"}"#).is_ok());
        assert!(pm(r#"{"hostPort":8080,"containerPort":80,"hostIP":"10.0.0.1"}"#).is_ok());
        for bad in [
            r#"{"hostPort":0,"containerPort":80}"#,
            r#"{"hostPort":70000,"containerPort":80}"#,
            r#"{"hostPort":8080}"#,
            r#"{"hostPort":"80","containerPort":80}"#,
            r#"{"hostPort":80,"containerPort":80,"protocol":"icmp"}"#,
            r#"{"hostPort":80,"containerPort":80,"hostIP":"x"}"#,
            r#"[1]"#,
        ] {
            assert!(pm(bad).is_err(), "{bad}");
        }
        let bw = |s: &str| bandwidth(&serde_json::from_str(s).unwrap());
        assert!(bw(r#"{"ingressRate":2048,"ingressBurst":0}"#).is_ok());
        assert!(bw(r#"{"ingressRate":-1}"#).is_err());
        assert!(bw(r#"{"egressBurst":1.5}"#).is_err());
        assert!(bw(r#"[]"#).is_err());
    }
}
