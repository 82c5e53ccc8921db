//! Network configuration specs and their sources: the metal platform configuration in META
//! key 0xa (YAML or JSON, the format of the seed "Metal Network Configuration") and the
//! kernel cmdline (`ip=`, `talos.hostname=`, `talos.network.interface.ignore=`), merged by
//! layers as "Networking Resources" describes: default < cmdline < platform < configuration,
//! a higher layer replacing a lower one's spec with the same identity. The cmdline keys are
//! described in `docs/formats/cmdline.md`, META in `docs/formats/meta.md`.
//!
//! In: the parsed cmdline and the bytes of META 0x0a (when present). Out: the [`Merged`]
//! specs that [`super::start`] applies, or a [`ConfigError`] for a META 0x0a it cannot use
//! (the node then falls back to DHCP).

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

/// Why `ip/prefix` text is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrefixError {
    /// No `/`.
    NotPrefix(String),
    /// The part before `/` is not an IP address.
    BadAddress(String),
    /// The part after `/` is not a number.
    BadPrefix(String),
    /// The prefix is longer than the address (32 or 128).
    TooLong(String, u8),
}

impl fmt::Display for PrefixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotPrefix(s) => write!(f, "{s:?} is not ip/prefix"),
            Self::BadAddress(s) => write!(f, "{s:?}: bad address"),
            Self::BadPrefix(s) => write!(f, "{s:?}: bad prefix"),
            Self::TooLong(s, max) => write!(f, "{s:?}: prefix above {max}"),
        }
    }
}

impl std::error::Error for PrefixError {}

/// Why the platform network configuration (META 0x0a) cannot be used.
#[derive(Debug)]
pub enum ConfigError {
    /// The value is not UTF-8.
    NotUtf8(std::str::Utf8Error),
    /// Not YAML/JSON of the expected shape.
    Syntax(Box<serde_saphyr::Error>),
    /// An `addresses[].address` is not `ip/prefix`.
    Address(PrefixError),
    /// An address without `linkName`.
    NoLinkName(String),
    /// A `routes[].dst` is not `ip/prefix`.
    RouteDst(PrefixError),
    /// A `routes[].gateway` or `routes[].src` is not an IP address.
    RouteAddress {
        /// `gateway` or `src`.
        field: &'static str,
        /// The value.
        value: String,
    },
    /// A link without a name.
    UnnamedLink,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotUtf8(e) => write!(f, "{e}"),
            Self::Syntax(e) => write!(f, "{e}"),
            Self::Address(e) => write!(f, "addresses: {e}"),
            Self::NoLinkName(a) => write!(f, "addresses: {a} has no linkName"),
            Self::RouteDst(e) => write!(f, "routes: {e}"),
            Self::RouteAddress { field, value } => write!(f, "routes: bad {field} {value:?}"),
            Self::UnnamedLink => f.write_str("links: a link has no name"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Where a spec comes from (ordered by precedence).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Layer {
    /// Built-in defaults (DHCP on unconfigured physical links).
    Default,
    /// Kernel command line.
    Cmdline,
    /// META 0xa.
    Platform,
    /// The machine configuration's `machine.network`.
    Configuration,
}

impl Layer {
    /// Lower-case name for the console.
    pub fn name(self) -> &'static str {
        match self {
            Layer::Default => "default",
            Layer::Cmdline => "cmdline",
            Layer::Platform => "platform",
            Layer::Configuration => "configuration",
        }
    }
}

/// `addresses[]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct AddressSpec {
    /// `ip/prefix`.
    pub address: String,
    /// Link.
    pub link_name: String,
    /// `inet4` / `inet6`.
    pub family: String,
    /// `global`, `link`, `host`.
    pub scope: String,
}

/// `links[].bondMaster`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct BondMaster {
    /// `balance-rr`, `active-backup`, `802.3ad`, …
    pub mode: String,
}

/// `links[].vlan`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct Vlan {
    /// VLAN id.
    #[serde(rename = "vlanID")]
    pub vlan_id: u16,
    /// `802.1q` / `802.1ad`.
    pub protocol: String,
}

/// `links[]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct LinkSpec {
    /// Name.
    pub name: String,
    /// A link to create (bond, vlan).
    pub logical: bool,
    /// Set up.
    pub up: bool,
    /// MTU (0 = leave).
    pub mtu: u32,
    /// `bond`, `vlan` for logical links.
    pub kind: String,
    /// Parent of a VLAN.
    pub parent_name: String,
    /// Bond this link is enslaved to.
    pub master_name: String,
    /// Bond settings.
    pub bond_master: Option<BondMaster>,
    /// VLAN settings.
    pub vlan: Option<Vlan>,
}

/// `routes[]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct RouteSpec {
    /// `inet4` / `inet6`.
    pub family: String,
    /// Destination `ip/prefix` ("" = default).
    pub dst: String,
    /// Preferred source.
    pub src: String,
    /// Gateway.
    pub gateway: String,
    /// Outgoing link.
    pub out_link_name: String,
    /// `main` or a number.
    pub table: String,
    /// Metric.
    pub priority: u32,
    /// `global`, `link`.
    pub scope: String,
    /// `unicast`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `static`, `dhcp`, …
    pub protocol: String,
}

/// `hostnames[]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct HostnameSpec {
    /// Host name.
    pub hostname: String,
    /// Domain name.
    pub domainname: String,
}

/// `resolvers[]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct ResolverSpec {
    /// DNS servers.
    pub dns_servers: Vec<String>,
}

/// `timeServers[]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct TimeServerSpec {
    /// NTP servers.
    pub time_servers: Vec<String>,
}

/// The platform network configuration document (META 0xa).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct PlatformConfig {
    /// Addresses.
    pub addresses: Vec<AddressSpec>,
    /// Links.
    pub links: Vec<LinkSpec>,
    /// Routes.
    pub routes: Vec<RouteSpec>,
    /// Host names.
    pub hostnames: Vec<HostnameSpec>,
    /// Resolvers.
    pub resolvers: Vec<ResolverSpec>,
    /// Time servers.
    pub time_servers: Vec<TimeServerSpec>,
}

impl PlatformConfig {
    /// Parses META 0xa (YAML or JSON, UTF-8). Unknown keys are ignored, as Talos's decoder
    /// does.
    pub fn from_bytes(value: &[u8]) -> Result<Self, ConfigError> {
        Self::parse(std::str::from_utf8(value).map_err(ConfigError::NotUtf8)?)
    }

    /// Parses META 0xa (YAML or JSON). Unknown keys are ignored, as Talos's decoder does.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let c: PlatformConfig =
            serde_saphyr::from_str(text).map_err(|e| ConfigError::Syntax(Box::new(e)))?;
        for a in &c.addresses {
            parse_prefix(&a.address).map_err(ConfigError::Address)?;
            if a.link_name.is_empty() {
                return Err(ConfigError::NoLinkName(a.address.clone()));
            }
        }
        for r in &c.routes {
            if !r.dst.is_empty() {
                parse_prefix(&r.dst).map_err(ConfigError::RouteDst)?;
            }
            for (field, v) in [("gateway", &r.gateway), ("src", &r.src)] {
                if !v.is_empty() {
                    v.parse::<IpAddr>().map_err(|_| ConfigError::RouteAddress {
                        field,
                        value: v.clone(),
                    })?;
                }
            }
        }
        for l in &c.links {
            if l.name.is_empty() {
                return Err(ConfigError::UnnamedLink);
            }
        }
        Ok(c)
    }
}

/// The machine configuration's layer: its specs, and how DHCP treats the links it names.
#[derive(Debug, Clone, Default)]
pub struct ConfigLayer {
    /// Links, addresses, routes, hostname, resolvers.
    pub specs: PlatformConfig,
    /// Links that run DHCP even with static addresses (`dhcp: true`).
    pub dhcp: Vec<String>,
    /// Links DHCP leaves alone (named without `dhcp: true`, or `ignore: true`).
    pub no_dhcp: Vec<String>,
    /// Interfaces whose `deviceSelector` matched no link.
    pub unmatched: Vec<String>,
}

/// Parses `ip/prefix`.
pub fn parse_prefix(s: &str) -> Result<(IpAddr, u8), PrefixError> {
    let (a, p) = s
        .split_once('/')
        .ok_or_else(|| PrefixError::NotPrefix(s.to_string()))?;
    let ip: IpAddr = a
        .parse()
        .map_err(|_| PrefixError::BadAddress(s.to_string()))?;
    let p: u8 = p
        .parse()
        .map_err(|_| PrefixError::BadPrefix(s.to_string()))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if p > max {
        return Err(PrefixError::TooLong(s.to_string(), max));
    }
    Ok((ip, p))
}

/// Everything to apply, after the merge.
#[derive(Debug, Clone, Default)]
pub struct Merged {
    /// Links by name.
    pub links: BTreeMap<String, (Layer, LinkSpec)>,
    /// Addresses by (link, address).
    pub addresses: BTreeMap<(String, String), (Layer, AddressSpec)>,
    /// Routes by (dst, gateway, table, priority).
    pub routes: BTreeMap<(String, String, String, u32), (Layer, RouteSpec)>,
    /// Host name.
    pub hostname: Option<(Layer, HostnameSpec)>,
    /// Resolvers.
    pub resolvers: Option<(Layer, Vec<String>)>,
    /// Time servers.
    pub time_servers: Option<(Layer, Vec<String>)>,
    /// Links DHCP must not touch.
    pub ignored: Vec<String>,
    /// Links DHCP runs on even when they have static addresses.
    pub dhcp: Vec<String>,
}

impl Merged {
    /// Adds `c` as `layer`: it replaces specs of the same identity from lower layers.
    pub fn add(&mut self, layer: Layer, c: &PlatformConfig) {
        fn put<K: Ord, V>(m: &mut BTreeMap<K, (Layer, V)>, k: K, layer: Layer, v: V) {
            match m.get(&k) {
                Some((l, _)) if *l > layer => {}
                _ => {
                    m.insert(k, (layer, v));
                }
            }
        }
        for l in &c.links {
            put(&mut self.links, l.name.clone(), layer, l.clone());
        }
        for a in &c.addresses {
            put(
                &mut self.addresses,
                (a.link_name.clone(), a.address.clone()),
                layer,
                a.clone(),
            );
        }
        for r in &c.routes {
            put(
                &mut self.routes,
                (
                    r.dst.clone(),
                    r.gateway.clone(),
                    r.table.clone(),
                    r.priority,
                ),
                layer,
                r.clone(),
            );
        }
        if let Some(h) = c.hostnames.last()
            && self.hostname.as_ref().is_none_or(|(l, _)| *l <= layer)
        {
            self.hostname = Some((layer, h.clone()));
        }
        let dns: Vec<String> = c
            .resolvers
            .iter()
            .flat_map(|r| r.dns_servers.clone())
            .collect();
        if !dns.is_empty() && self.resolvers.as_ref().is_none_or(|(l, _)| *l <= layer) {
            self.resolvers = Some((layer, dns));
        }
        let ntp: Vec<String> = c
            .time_servers
            .iter()
            .flat_map(|r| r.time_servers.clone())
            .collect();
        if !ntp.is_empty() && self.time_servers.as_ref().is_none_or(|(l, _)| *l <= layer) {
            self.time_servers = Some((layer, ntp));
        }
    }
}

/// The cmdline layer: `ip=client:server:gw:netmask:hostname:device:autoconf:dns0:dns1:ntp0`,
/// `talos.hostname=`, and the ignore list.
pub fn from_cmdline(cmd: &crate::cmdline::Cmdline) -> (PlatformConfig, Vec<String>) {
    let mut c = PlatformConfig::default();
    for ip in cmd.get_all("ip") {
        let f: Vec<&str> = ip.split(':').collect();
        let get = |i: usize| f.get(i).copied().unwrap_or("");
        let (client, gw, mask, host, dev) = (get(0), get(2), get(3), get(4), get(5));
        if let (Ok(addr), false) = (client.parse::<IpAddr>(), dev.is_empty()) {
            let prefix = mask
                .parse::<std::net::Ipv4Addr>()
                .map(|m| u32::from(m).count_ones())
                .unwrap_or(if addr.is_ipv4() { 24 } else { 64 });
            c.addresses.push(AddressSpec {
                address: format!("{addr}/{prefix}"),
                link_name: dev.to_string(),
                family: String::new(),
                scope: String::new(),
            });
            c.links.push(LinkSpec {
                name: dev.to_string(),
                up: true,
                ..Default::default()
            });
            if gw.parse::<IpAddr>().is_ok() {
                c.routes.push(RouteSpec {
                    gateway: gw.to_string(),
                    out_link_name: dev.to_string(),
                    table: "main".into(),
                    priority: 1024,
                    protocol: "static".into(),
                    ..Default::default()
                });
            }
        }
        if !host.is_empty() {
            c.hostnames.push(HostnameSpec {
                hostname: host.to_string(),
                domainname: String::new(),
            });
        }
        let dns: Vec<String> = [get(7), get(8)]
            .iter()
            .filter(|s| s.parse::<IpAddr>().is_ok())
            .map(|s| s.to_string())
            .collect();
        if !dns.is_empty() {
            c.resolvers.push(ResolverSpec { dns_servers: dns });
        }
    }
    if let Some(h) = cmd.get("talos.hostname").filter(|h| !h.is_empty()) {
        c.hostnames.push(HostnameSpec {
            hostname: h.to_string(),
            domainname: String::new(),
        });
    }
    let ignored = cmd
        .get_all("talos.network.interface.ignore")
        .flat_map(|v| v.split(','))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    (c, ignored)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_the_seed_example_and_json() {
        let y = include_str!("../../../hack/examples/network.yaml");
        let c = PlatformConfig::parse(y).unwrap();
        assert_eq!(c.addresses[0].address, "10.0.2.15/24");
        assert_eq!(c.routes[0].gateway, "10.0.2.2");
        assert_eq!(c.hostnames[0].hostname, "node-1");
        let j = r#"{"addresses":[{"address":"10.0.0.2/8","linkName":"eth1"}],"links":[{"name":"bond0","logical":true,"kind":"bond","bondMaster":{"mode":"802.3ad"}},{"name":"eth1.5","logical":true,"kind":"vlan","parentName":"eth1","vlan":{"vlanID":5,"protocol":"802.1q"}}]}"#;
        let c = PlatformConfig::parse(j).unwrap();
        assert_eq!(c.links[1].vlan.as_ref().unwrap().vlan_id, 5);
        assert!(PlatformConfig::parse("addresses: [{address: banana, linkName: x}]").is_err());
        assert!(PlatformConfig::parse("addresses: {").is_err());
    }

    /// The errors are console text (`network platform-config … error="…"`): exact strings.
    #[test]
    fn error_texts() {
        let e = |t: &str| PlatformConfig::parse(t).unwrap_err().to_string();
        assert_eq!(
            e("addresses: [{address: 10.0.0.1, linkName: x}]"),
            "addresses: \"10.0.0.1\" is not ip/prefix"
        );
        assert_eq!(
            e("addresses: [{address: banana/8, linkName: x}]"),
            "addresses: \"banana/8\": bad address"
        );
        assert_eq!(
            e("addresses: [{address: 10.0.0.1/x, linkName: x}]"),
            "addresses: \"10.0.0.1/x\": bad prefix"
        );
        assert_eq!(
            e("addresses: [{address: 10.0.0.1/8}]"),
            "addresses: 10.0.0.1/8 has no linkName"
        );
        assert_eq!(
            e("routes: [{dst: 10.0.0.0/33}]"),
            "routes: \"10.0.0.0/33\": prefix above 32"
        );
        assert_eq!(
            e("routes: [{gateway: nope}]"),
            "routes: bad gateway \"nope\""
        );
        assert_eq!(e("links: [{up: true}]"), "links: a link has no name");
        let bad: Vec<u8> = vec![0xff, 0xfe];
        assert_eq!(
            PlatformConfig::from_bytes(&bad).unwrap_err().to_string(),
            std::str::from_utf8(&bad).unwrap_err().to_string()
        );
    }

    #[test]
    fn higher_layers_win() {
        let cmd = crate::cmdline::Cmdline::parse(
            "ip=10.0.2.30::10.0.2.2:255.255.255.0:cmdhost:eth0:off:10.0.2.3 talos.network.interface.ignore=eth9",
        );
        let (c, ignored) = from_cmdline(&cmd);
        assert_eq!(ignored, ["eth9"]);
        assert_eq!(c.addresses[0].address, "10.0.2.30/24");
        let mut m = Merged::default();
        m.add(Layer::Cmdline, &c);
        let p = PlatformConfig::parse("hostnames: [{hostname: metahost}]").unwrap();
        m.add(Layer::Platform, &p);
        assert_eq!(m.hostname.as_ref().unwrap().1.hostname, "metahost");
        assert_eq!(m.resolvers.as_ref().unwrap().1, ["10.0.2.3"]);
        m.add(Layer::Cmdline, &c);
        assert_eq!(m.hostname.as_ref().unwrap().1.hostname, "metahost");
    }
}
