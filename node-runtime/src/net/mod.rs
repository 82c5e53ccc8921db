//! Network configuration (seeds "Networking Resources", "Metal Network Configuration"):
//! the cmdline and META 0xa layers merged, applied through rtnetlink (links incl. bond and
//! VLAN, addresses, routes), DHCPv4 on physical links nothing else configures, the hostname
//! and `/system/etc/{hosts,resolv.conf}` written, readiness reported to the services, and a
//! TCP status endpoint on port 50100 answering one line (`node-runtime hostname=…
//! addresses=…`) so that a probe from outside sees the node.
//!
//! Stage 2 starts it after META and the modules, before the services: [`start`] applies the
//! static configuration and returns; DHCP goes on in background threads. In: the cmdline
//! (`docs/formats/cmdline.md`), META 0x0a and the [`Readiness`] shared with the services.
//! Out: the configuration, the readiness keys `network.*` (see [`crate::readiness`]) and
//! console lines.
//!
//! Console lines: `network platform-config …`, `network link name=… up=…`, `network address
//! address=… link=… layer=…`, `network route …`, `network dhcp link=… address=…`, `network
//! hostname=…`, `network resolvers=…`, `network error=…`.

pub mod config;
pub mod dhcp;
pub mod netlink;

use crate::cmdline::Cmdline;
use crate::console::say;
use crate::readiness::{self, Readiness};
use config::{Layer, Merged, PlatformConfig};
use netlink::{Link, Netlink, Route};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// TCP port of the status endpoint (not a Talos port: 50000, Talos's apid port, is the node
/// API's, docs/formats/api.md).
pub const STATUS_PORT: u16 = 50100;

/// What the node ended up with (shared with the status endpoint).
#[derive(Default)]
struct State {
    hostname: String,
    addresses: Vec<String>,
    resolvers: Vec<String>,
}

fn bond_mode(m: &str) -> u8 {
    match m {
        "balance-rr" | "" => 0,
        "active-backup" => 1,
        "balance-xor" => 2,
        "broadcast" => 3,
        "802.3ad" => 4,
        "balance-tlb" => 5,
        "balance-alb" => 6,
        _ => 0,
    }
}

fn index(links: &[Link], name: &str) -> Option<i32> {
    links.iter().find(|l| l.name == name).map(|l| l.index)
}

fn err_line(what: &str, e: &anyhow::Error) {
    say(&format!("network error={:?}", format!("{what}: {e:#}")));
}

/// Applies links, addresses and routes of `m`; returns the links that got an address.
fn apply_static(nl: &mut Netlink, m: &Merged, state: &Mutex<State>) -> Vec<String> {
    let mut links = nl.links().unwrap_or_default();
    // logical links first: bonds, then VLANs on their parents
    for (name, (layer, l)) in &m.links {
        if !l.logical {
            continue;
        }
        let mode_name = l.bond_master.as_ref().map_or("", |b| b.mode.as_str());
        let existing = links.iter().find(|x| &x.name == name);
        let (action, r) = match (l.kind.as_str(), existing) {
            // the bonding module creates bond0 when it loads: configure it
            ("bond", Some(x)) if x.info_kind.as_deref() == Some("bond") => {
                ("updated", nl.set_bond_mode(x.index, bond_mode(mode_name)))
            }
            (_, Some(_)) => continue,
            ("bond", None) => ("created", nl.create_bond(name, bond_mode(mode_name))),
            (kind, None) => (
                "created",
                match kind {
                    "vlan" => match (index(&links, &l.parent_name), &l.vlan) {
                        (Some(p), Some(v)) => nl.create_vlan(
                            name,
                            p,
                            v.vlan_id,
                            if v.protocol == "802.1ad" {
                                0x88a8
                            } else {
                                0x8100
                            },
                        ),
                        _ => Err(anyhow::anyhow!(
                            "vlan {name}: parent {:?} missing",
                            l.parent_name
                        )),
                    },
                    k => Err(anyhow::anyhow!("link {name}: unsupported kind {k:?}")),
                },
            ),
        };
        let detail = if l.kind == "bond" {
            format!(
                " mode={}",
                if mode_name.is_empty() {
                    "balance-rr"
                } else {
                    mode_name
                }
            )
        } else {
            l.vlan
                .as_ref()
                .map_or(String::new(), |v| format!(" vlan={}", v.vlan_id))
        };
        match r {
            Ok(()) => say(&format!(
                "network link name={name} {action} kind={}{detail} layer={}",
                l.kind,
                layer.name()
            )),
            Err(e) => err_line(&format!("creating {name}"), &e),
        }
        links = nl.links().unwrap_or_default();
    }
    for (name, (_, l)) in &m.links {
        if l.master_name.is_empty() {
            continue;
        }
        match (index(&links, name), index(&links, &l.master_name)) {
            (Some(i), Some(mi)) => {
                let r = nl.set_link(i, false, 0).and_then(|_| nl.set_master(i, mi));
                match r {
                    Ok(()) => say(&format!(
                        "network link name={name} master={}",
                        l.master_name
                    )),
                    Err(e) => err_line(&format!("enslaving {name}"), &e),
                }
            }
            _ => say(&format!(
                "network error=\"link {name} or its master {} is missing\"",
                l.master_name
            )),
        }
    }
    let mut up: Vec<String> = m
        .links
        .iter()
        .filter(|(_, (_, l))| l.up)
        .map(|(n, _)| n.clone())
        .collect();
    for (link, _) in m.addresses.keys() {
        if !up.contains(link) {
            up.push(link.clone());
        }
    }
    for name in &up {
        let mtu = m.links.get(name).map_or(0, |(_, l)| l.mtu);
        match index(&links, name) {
            Some(i) => match nl.set_link(i, true, mtu) {
                Ok(()) => say(&format!("network link name={name} up=true mtu={mtu}")),
                Err(e) => err_line(&format!("setting {name} up"), &e),
            },
            None => say(&format!("network error=\"link {name} does not exist\"")),
        }
    }
    let mut configured = Vec::new();
    for ((link, addr), (layer, a)) in &m.addresses {
        let Ok((ip, prefix)) = config::parse_prefix(addr) else {
            continue;
        };
        let scope = match a.scope.as_str() {
            "link" => 253,
            "host" => 254,
            _ => 0,
        };
        let Some(i) = index(&links, link) else {
            say(&format!(
                "network error=\"address {addr}: link {link} does not exist\""
            ));
            continue;
        };
        match nl.add_address(i, ip, prefix, scope) {
            Ok(()) => {
                say(&format!(
                    "network address address={addr} link={link} layer={}",
                    layer.name()
                ));
                configured.push(link.clone());
                if let Ok(mut s) = state.lock() {
                    s.addresses.push(addr.clone());
                }
            }
            Err(e) => err_line(&format!("address {addr} on {link}"), &e),
        }
    }
    for (_, (layer, r)) in m.routes.iter() {
        let dst = if r.dst.is_empty() {
            None
        } else {
            config::parse_prefix(&r.dst).ok()
        };
        let gateway = r.gateway.parse::<IpAddr>().ok();
        let oif = index(&links, &r.out_link_name);
        let table = match r.table.as_str() {
            "" | "main" => 254,
            "local" => 255,
            t => t.parse().unwrap_or(254),
        };
        let route = Route {
            dst,
            gateway,
            src: r.src.parse().ok(),
            oif,
            table,
            priority: r.priority,
            scope: if r.scope == "link" || gateway.is_none() {
                253
            } else {
                0
            },
            protocol: if r.protocol == "dhcp" { 16 } else { 4 },
            kind: 1,
        };
        let shown = format!(
            "dst={} gateway={} link={}",
            if r.dst.is_empty() { "default" } else { &r.dst },
            if r.gateway.is_empty() {
                "-"
            } else {
                &r.gateway
            },
            if r.out_link_name.is_empty() {
                "-"
            } else {
                &r.out_link_name
            }
        );
        match nl.add_route(&route) {
            Ok(()) => say(&format!("network route {shown} layer={}", layer.name())),
            Err(e) => err_line(&format!("route {shown}"), &e),
        }
    }
    configured
}

fn write_etc(state: &Mutex<State>, ready: &Readiness) {
    let Ok(s) = state.lock() else { return };
    let mut hosts = String::from("127.0.0.1 localhost\n::1 localhost\n");
    if !s.hostname.is_empty() {
        let short = s.hostname.split('.').next().unwrap_or(&s.hostname);
        if short == s.hostname {
            hosts.push_str(&format!("127.0.1.1 {}\n", s.hostname));
        } else {
            hosts.push_str(&format!("127.0.1.1 {} {short}\n", s.hostname));
        }
    }
    let resolv: String = s
        .resolvers
        .iter()
        .map(|r| format!("nameserver {r}\n"))
        .collect();
    let ok = std::fs::write("/system/etc/hosts", hosts).is_ok()
        && std::fs::write("/system/etc/resolv.conf", resolv).is_ok();
    if ok {
        ready.set(readiness::NET_ETCFILES);
    }
}

/// Whether link `name` is backed by a device (`/sys/class/net/<name>/device`): not `lo`, nor
/// a virtual link.
pub(crate) fn is_physical(name: &str) -> bool {
    !name.contains('/')
        && Path::new("/sys/class/net")
            .join(name)
            .join("device")
            .exists()
}

fn set_hostname(state: &Mutex<State>, name: &str, source: &str, ready: &Readiness) {
    let short = name.split('.').next().unwrap_or(name);
    match nix::unistd::sethostname(short) {
        Ok(()) => {
            say(&format!("network hostname={name} source={source}"));
            if let Ok(mut s) = state.lock() {
                s.hostname = name.to_string();
            }
            ready.set(readiness::NET_HOSTNAME);
        }
        Err(e) => say(&format!("network error=\"sethostname {name}: {e}\"")),
    }
}

/// Serves one status line per TCP connection on [`STATUS_PORT`].
fn status_endpoint(state: Arc<Mutex<State>>) {
    std::thread::spawn(move || {
        let l = match std::net::TcpListener::bind(("0.0.0.0", STATUS_PORT)) {
            Ok(l) => l,
            Err(e) => {
                say(&format!("network error=\"status endpoint: {e}\""));
                return;
            }
        };
        say(&format!("network status-endpoint port={STATUS_PORT}"));
        for c in l.incoming().flatten() {
            use std::io::Write;
            let line = state
                .lock()
                .map(|s| {
                    format!(
                        "node-runtime hostname={} addresses={}\n",
                        s.hostname,
                        s.addresses.join(",")
                    )
                })
                .unwrap_or_default();
            let mut c = c;
            let _ = c.write_all(line.as_bytes());
        }
    });
}

/// Configures the network from the cmdline and META 0xa (`platform`); DHCP runs in
/// background threads. Returns once static configuration is applied.
pub fn start(
    cmd: &Cmdline,
    platform: Option<&[u8]>,
    configuration: Option<config::ConfigLayer>,
    ready: Arc<Readiness>,
) {
    let state = Arc::new(Mutex::new(State::default()));
    let (cmdline_layer, ignored) = config::from_cmdline(cmd);
    let mut m = Merged {
        ignored,
        ..Default::default()
    };
    m.add(Layer::Cmdline, &cmdline_layer);
    if let Some(v) = platform {
        match PlatformConfig::from_bytes(v) {
            Ok(c) => {
                say(&format!(
                    "network platform-config source=meta-0x0a links={} addresses={} routes={}",
                    c.links.len(),
                    c.addresses.len(),
                    c.routes.len()
                ));
                m.add(Layer::Platform, &c);
            }
            Err(e) => say(&format!(
                "network platform-config source=meta-0x0a error={:?} fallback=dhcp",
                e.to_string()
            )),
        }
    }
    if let Some(c) = &configuration {
        say(&format!(
            "network configuration-layer source=machine-config hostnames={} resolvers={} links={} addresses={} routes={}",
            c.specs.hostnames.len(),
            c.specs.resolvers.len(),
            c.specs.links.len(),
            c.specs.addresses.len(),
            c.specs.routes.len()
        ));
        for u in &c.unmatched {
            say(&format!(
                "network error=\"{u}.deviceSelector matches no link\""
            ));
        }
        m.add(Layer::Configuration, &c.specs);
        m.ignored.extend(c.no_dhcp.iter().cloned());
        m.dhcp.extend(c.dhcp.iter().cloned());
    }
    let mut nl = match Netlink::open() {
        Ok(n) => n,
        Err(e) => {
            err_line("rtnetlink", &e);
            return;
        }
    };
    if let Some(lo) = nl
        .links()
        .unwrap_or_default()
        .iter()
        .find(|l| l.flags & netlink::IFF_LOOPBACK != 0)
    {
        let _ = nl.set_link(lo.index, true, 0);
    }
    let configured = apply_static(&mut nl, &m, &state);
    // the links as configured: for the default hostname and the DHCP candidates
    let links = nl.links().unwrap_or_default();
    if !configured.is_empty() {
        ready.set(readiness::NET_ADDRESSES);
    }
    if m.routes.values().any(|(_, r)| r.dst.is_empty()) {
        ready.set(readiness::NET_CONNECTIVITY);
    }
    if let Some((layer, h)) = &m.hostname {
        let name = if h.domainname.is_empty() {
            h.hostname.clone()
        } else {
            format!("{}.{}", h.hostname, h.domainname)
        };
        set_hostname(&state, &name, layer.name(), &ready);
    } else if let Some(l) = links
        .iter()
        .filter(|l| l.kind == netlink::ARPHRD_ETHER && l.mac.len() == 6 && is_physical(&l.name))
        .min_by(|a, b| a.name.cmp(&b.name))
    {
        // Talos-style default until DHCP or configuration names the node: the first physical
        // link by name (the one `talos.config`'s `${mac}` names), never the random address of
        // a `bond0` or `dummy0` that modules create
        let name = format!("talos-{}", hex::encode(&l.mac[3..]));
        set_hostname(&state, &name, Layer::Default.name(), &ready);
    }
    if let Some((layer, r)) = &m.resolvers {
        say(&format!(
            "network resolvers={} layer={}",
            r.join(","),
            layer.name()
        ));
        if let Ok(mut s) = state.lock() {
            s.resolvers = r.clone();
        }
    }
    if let Some((layer, t)) = &m.time_servers {
        say(&format!(
            "network time-servers={} layer={}",
            t.join(","),
            layer.name()
        ));
    }
    write_etc(&state, &ready);
    status_endpoint(state.clone());

    // DHCP on physical links nothing else configures
    let enslaved: Vec<&String> = m
        .links
        .iter()
        .filter(|(_, (_, l))| !l.master_name.is_empty())
        .map(|(n, _)| n)
        .collect();
    let dhcp: Vec<Link> = links
        .into_iter()
        .filter(|l| {
            l.kind == netlink::ARPHRD_ETHER
                && l.info_kind.is_none()
                && l.master.is_none()
                && (!configured.contains(&l.name) || m.dhcp.contains(&l.name))
                && (!m.ignored.contains(&l.name) || m.dhcp.contains(&l.name))
                && !enslaved.contains(&&l.name)
        })
        .collect();
    if dhcp.is_empty() && configured.is_empty() {
        say("network links=none-to-configure");
    }
    let have_hostname = m.hostname.is_some();
    let have_resolvers = m.resolvers.is_some();
    for (n, l) in dhcp.into_iter().enumerate() {
        let (state, ready) = (state.clone(), ready.clone());
        std::thread::spawn(move || {
            run_dhcp(&l, n as u32, &state, &ready, have_hostname, have_resolvers);
        });
    }
}

fn run_dhcp(
    l: &Link,
    n: u32,
    state: &Mutex<State>,
    ready: &Readiness,
    have_hostname: bool,
    have_resolvers: bool,
) {
    let mut nl = match Netlink::open() {
        Ok(n) => n,
        Err(e) => return err_line("rtnetlink", &e),
    };
    if let Err(e) = nl.set_link(l.index, true, 0) {
        return err_line(&format!("setting {} up", l.name), &e);
    }
    // a random xid (a predictable one lets a remote host forge replies); the MAC and link
    // number only if the kernel's random source is unreadable
    let xid = random_u32().unwrap_or_else(|| {
        u32::from_be_bytes([
            l.mac.get(2).copied().unwrap_or(0),
            l.mac.get(3).copied().unwrap_or(0),
            l.mac.get(4).copied().unwrap_or(0),
            l.mac.get(5).copied().unwrap_or(0),
        ]) ^ (n << 24)
    });
    let wire = match dhcp::Socket::open(&l.name) {
        Ok(w) => w,
        Err(e) => return err_line(&format!("dhcp on {}", l.name), &e),
    };
    let mut client = dhcp::Client::new(wire, &l.mac, xid);
    let name = l.name.clone();
    let mut held: Option<dhcp::Lease> = None;
    let r = client.run(&mut |e| match e {
        dhcp::Event::Discover => say(&format!("network dhcp link={name} state=discover")),
        dhcp::Event::NoLease => say(&format!(
            "network dhcp link={name} state=no-lease within_s={} retry=yes",
            dhcp::DISCOVER_ROUND.as_secs()
        )),
        dhcp::Event::Renewing => say(&format!("network dhcp link={name} state=renewing")),
        dhcp::Event::Rebinding => say(&format!("network dhcp link={name} state=rebinding")),
        dhcp::Event::Trouble(t) => say(&format!(
            "network dhcp link={name} state=retry error={:?}",
            t
        )),
        dhcp::Event::Bound(lease) | dhcp::Event::Extended(lease) => {
            let renewal = held.is_some();
            if let Some(old) = held.take()
                && (old.address, old.prefix) != (lease.address, lease.prefix)
            {
                drop_lease(&mut nl, l, &old, state, "replaced");
            }
            apply_lease(&mut nl, l, &lease, state, ready, renewal);
            if !have_resolvers
                && let Ok(mut s) = state.lock()
                && s.resolvers.is_empty()
            {
                s.resolvers = lease.dns.iter().map(|d| d.to_string()).collect();
            }
            if !have_hostname && !lease.hostname.is_empty() && !renewal {
                set_hostname(state, &lease.hostname, "dhcp", ready);
            }
            write_etc(state, ready);
            held = Some(lease);
        }
        dhcp::Event::Expired(lease) => {
            drop_lease(&mut nl, l, &lease, state, "expired");
            held = None;
        }
        dhcp::Event::Refused(lease) => {
            drop_lease(&mut nl, l, &lease, state, "refused");
            held = None;
        }
    });
    if let Err(e) = r {
        err_line(&format!("dhcp on {}", l.name), &e);
    }
    // the client only stops on a failure it cannot wait out: no lease outlives it
    if let Some(lease) = held {
        drop_lease(&mut nl, l, &lease, state, "abandoned");
    }
}

/// Four bytes from the kernel's random source.
fn random_u32() -> Option<u32> {
    use std::io::Read;
    let mut b = [0u8; 4];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .ok()?;
    Some(u32::from_ne_bytes(b))
}

/// Configures a (new or extended) lease: its address, then its routes (option 121's when
/// the server sent them, on-link ones first; else a default route via the router).
fn apply_lease(
    nl: &mut Netlink,
    l: &Link,
    lease: &dhcp::Lease,
    state: &Mutex<State>,
    ready: &Readiness,
    renewal: bool,
) {
    let Some(addr) = lease.address else { return };
    if let Err(e) = nl.add_address(l.index, IpAddr::V4(addr), lease.prefix, 0) {
        return err_line(&format!("dhcp address on {}", l.name), &e);
    }
    let route = |dst: Option<(IpAddr, u8)>, gw: Option<std::net::Ipv4Addr>| Route {
        dst,
        gateway: gw.map(IpAddr::V4),
        src: Some(IpAddr::V4(addr)),
        oif: Some(l.index),
        table: 254,
        priority: 1024,
        scope: if gw.is_some() { 0 } else { 253 },
        protocol: 16,
        kind: 1,
    };
    let mut routes = Vec::new();
    if lease.routes.is_empty() {
        if let Some(gw) = lease.router {
            routes.push(route(None, Some(gw)));
        }
    } else {
        let mut sorted: Vec<&dhcp::StaticRoute> = lease.routes.iter().collect();
        sorted.sort_by_key(|r| !r.gateway.is_unspecified());
        for r in sorted {
            let dst = (r.prefix > 0).then_some((IpAddr::V4(r.dst), r.prefix));
            let gw = (!r.gateway.is_unspecified()).then_some(r.gateway);
            routes.push(route(dst, gw));
        }
    }
    let mut default_via = None;
    for r in &routes {
        match nl.add_route(r) {
            Err(e) => err_line(&format!("dhcp route on {}", l.name), &e),
            Ok(()) if r.dst.is_none() => {
                default_via = r.gateway;
                ready.set(readiness::NET_CONNECTIVITY);
            }
            Ok(()) => {}
        }
    }
    let cidr = format!("{addr}/{}", lease.prefix);
    if let Ok(mut s) = state.lock()
        && !s.addresses.contains(&cidr)
    {
        s.addresses.push(cidr.clone());
    }
    let dns: Vec<String> = lease.dns.iter().map(|d| d.to_string()).collect();
    say(&format!(
        "network dhcp link={} state={} address={cidr} router={} dns={} lease_s={} routes={}",
        l.name,
        if renewal { "renewed" } else { "bound" },
        default_via.map_or("-".to_string(), |g| g.to_string()),
        if dns.is_empty() {
            "-".to_string()
        } else {
            dns.join(",")
        },
        lease.lease_secs,
        routes.len(),
    ));
    ready.set(readiness::NET_ADDRESSES);
}

/// Removes a lost lease's address (its routes go with it) from the link and the state.
fn drop_lease(nl: &mut Netlink, l: &Link, lease: &dhcp::Lease, state: &Mutex<State>, why: &str) {
    let Some(addr) = lease.address else { return };
    if let Err(e) = nl.del_address(l.index, IpAddr::V4(addr), lease.prefix) {
        err_line(&format!("dhcp address removal on {}", l.name), &e);
    }
    let cidr = format!("{addr}/{}", lease.prefix);
    if let Ok(mut s) = state.lock() {
        s.addresses.retain(|a| a != &cidr);
    }
    say(&format!(
        "network dhcp link={} state={why} address={cidr}",
        l.name
    ));
}
