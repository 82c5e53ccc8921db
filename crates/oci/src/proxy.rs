//! Forward proxies for registry traffic, chosen as Go's `net/http` chooses them from
//! `HTTP_PROXY`, `HTTPS_PROXY` and `NO_PROXY` (docs/formats/machine-config.md, `machine.env`):
//! the upper-case name first, then the lower-case one; `https://` endpoints use the HTTPS
//! proxy, `http://` ones the HTTP proxy; `localhost` and loopback addresses never do.
//!
//! In: the variables' values (node-runtime reads them from `machine.env`). Out: the proxy URL
//! for an endpoint, or none.

use std::net::IpAddr;

/// The proxy settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Proxies {
    /// For `http://` endpoints (`HTTP_PROXY`).
    pub http: String,
    /// For `https://` endpoints (`HTTPS_PROXY`).
    pub https: String,
    /// Hosts reached directly (`NO_PROXY`): comma-separated `*`, IP addresses, CIDR ranges,
    /// domain names (the name and its subdomains; `.name` or `*.name` its subdomains only),
    /// each optionally with `:port`.
    pub no_proxy: String,
}

impl Proxies {
    /// From variables looked up by `get` (`HTTP_PROXY`, then `http_proxy`; …). Empty values
    /// count as unset.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Self {
        let var = |upper: &str| {
            get(upper)
                .filter(|v| !v.is_empty())
                .or_else(|| get(&upper.to_ascii_lowercase()).filter(|v| !v.is_empty()))
                .unwrap_or_default()
        };
        Proxies {
            http: var("HTTP_PROXY"),
            https: var("HTTPS_PROXY"),
            no_proxy: var("NO_PROXY"),
        }
    }

    /// The proxy for an endpoint of `authority` (`host[:port]`, IPv6 in brackets), `None` when
    /// it is reached directly. A proxy without a scheme is `http://`.
    pub fn for_endpoint(&self, https: bool, authority: &str) -> Option<String> {
        let proxy = if https { &self.https } else { &self.http };
        if proxy.is_empty() {
            return None;
        }
        let (host, port) = split_authority(authority, if https { 443 } else { 80 });
        if host.eq_ignore_ascii_case("localhost")
            || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
            || self.bypass(&host, port)
        {
            return None;
        }
        Some(if proxy.contains("://") {
            proxy.clone()
        } else {
            format!("http://{proxy}")
        })
    }

    fn bypass(&self, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        let ip = host.parse::<IpAddr>().ok();
        for entry in self.no_proxy.split(',').map(str::trim) {
            if entry.is_empty() {
                continue;
            }
            if entry == "*" {
                return true;
            }
            if let Some((net, bits)) = entry.split_once('/') {
                if let (Some(ip), Ok(net), Ok(bits)) =
                    (ip, net.parse::<IpAddr>(), bits.parse::<u8>())
                    && in_cidr(ip, net, bits)
                {
                    return true;
                }
                continue;
            }
            if let Ok(e) = entry.parse::<IpAddr>() {
                if ip == Some(e) {
                    return true;
                }
                continue;
            }
            // Go: an entry that is neither an IP, a CIDR nor `host:port` is a domain name
            // as written (so `[fd00::1]` without a port matches nothing)
            if entry.starts_with('[') && !entry.contains("]:") {
                continue;
            }
            let (name, want_port) = split_authority(entry, 0);
            if want_port != 0 && want_port != port {
                continue;
            }
            if let (Ok(e), Some(ip)) = (name.parse::<IpAddr>(), ip) {
                if e == ip {
                    return true;
                }
                continue;
            }
            let name = name.to_ascii_lowercase();
            // Go strips `*.` to `.`, nothing else
            let name = if name.starts_with("*.") {
                &name[1..]
            } else {
                name.as_str()
            };
            match name.strip_prefix('.') {
                // subdomains only
                Some(_) => {
                    if host.ends_with(name) {
                        return true;
                    }
                }
                None => {
                    if host == name || host.ends_with(&format!(".{name}")) {
                        return true;
                    }
                }
            }
        }
        false
    }
}

/// A proxy URL with its `user:password@` replaced by `***@`, for messages.
pub fn without_credentials(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!(
            "{}{}***@{}",
            scheme,
            if scheme.is_empty() { "" } else { "://" },
            &rest[at + 1..]
        ),
        None => url.to_string(),
    }
}

/// `host[:port]` → host (brackets of IPv6 removed) and port (`default` when none).
fn split_authority(a: &str, default: u16) -> (String, u16) {
    if let Some(rest) = a.strip_prefix('[') {
        if let Some((h, tail)) = rest.split_once(']') {
            let port = tail
                .strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .unwrap_or(default);
            return (h.to_string(), port);
        }
        return (a.to_string(), default);
    }
    // a bare IPv6 address has several colons and no port
    if a.matches(':').count() == 1
        && let Some((h, p)) = a.split_once(':')
        && let Ok(p) = p.parse()
    {
        return (h.to_string(), p);
    }
    (a.to_string(), default)
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) if bits <= 32 => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) if bits <= 128 => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chooses_as_go_does() {
        let env = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Proxies::from_vars(move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
        };
        let p = env(&[
            ("http_proxy", "10.0.2.2:3128"),
            ("HTTPS_PROXY", "http://proxy.lab:8080"),
            ("https_proxy", "http://ignored:1"),
            (
                "no_proxy",
                "internal.lab, .corp, 192.168.0.0/16, 10.1.2.3, mirror.lab:5000, [fd00::1]:5000, \
                 [fd00::2], *.star.lab, *bad.lab",
            ),
        ]);
        assert_eq!(
            p.for_endpoint(false, "registry.example:5000").as_deref(),
            Some("http://10.0.2.2:3128")
        );
        assert_eq!(
            p.for_endpoint(true, "ghcr.io").as_deref(),
            Some("http://proxy.lab:8080")
        );
        for (https, direct) in [
            (true, "internal.lab"),
            (true, "a.internal.lab:443"),
            (true, "x.corp"),
            (false, "192.168.7.9:5000"),
            (false, "10.1.2.3:80"),
            (false, "mirror.lab:5000"),
            (true, "[fd00::1]:5000"),
            (true, "a.star.lab"),
            (false, "localhost:5000"),
            (false, "127.0.0.1:5000"),
            (true, "[::1]:443"),
        ] {
            assert_eq!(p.for_endpoint(https, direct), None, "{direct}");
        }
        // Go: `[fd00::2]` without a port and `*bad.lab` match nothing
        for proxied in [
            "corp",
            "notinternal.lab",
            "mirror.lab:5001",
            "10.1.2.4",
            "[fd00::2]",
            "[fd00::1]:443",
            "x.bad.lab",
            "star.lab",
        ] {
            assert!(p.for_endpoint(true, proxied).is_some(), "{proxied}");
        }
        assert_eq!(
            env(&[("NO_PROXY", "*"), ("HTTP_PROXY", "p:1")]).for_endpoint(false, "a"),
            None
        );
        assert_eq!(Proxies::default().for_endpoint(true, "ghcr.io"), None);
        assert_eq!(
            without_credentials("http://user:secret@proxy:3128/x"),
            "http://***@proxy:3128/x"
        );
        assert_eq!(without_credentials("proxy:3128"), "proxy:3128");
    }
}
