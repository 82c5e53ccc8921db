//! A minimal rtnetlink client (NETLINK_ROUTE): list links, set them up / MTU / master, create
//! bond and VLAN links, add addresses and routes. Messages are encoded by hand (struct
//! nlmsghdr + ifinfomsg / ifaddrmsg / rtmsg + attributes, 4-byte aligned, native endian) and
//! every request is acknowledged (NLM_F_ACK) so errors come back as errno values.

use anyhow::{Context, Result, bail};
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send,
    socket,
};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_REPLACE: u16 = 0x100;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_VLAN_ID: u16 = 1;
const IFLA_VLAN_PROTOCOL: u16 = 5;
const IFLA_BOND_MODE: u16 = 1;

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;

const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_PREFSRC: u16 = 7;
const RTA_TABLE: u16 = 15;

/// `IFF_UP`.
pub const IFF_UP: u32 = 0x1;
/// `IFF_LOOPBACK`.
pub const IFF_LOOPBACK: u32 = 0x8;
/// `ARPHRD_ETHER`.
pub const ARPHRD_ETHER: u16 = 1;

/// A link as the kernel reports it.
#[derive(Debug, Clone)]
pub struct Link {
    /// Interface index.
    pub index: i32,
    /// Name.
    pub name: String,
    /// `IFF_*` flags.
    pub flags: u32,
    /// `ARPHRD_*` type.
    pub kind: u16,
    /// Hardware address.
    pub mac: Vec<u8>,
    /// `IFLA_LINKINFO` kind (`bond`, `vlan`, …) for logical links.
    pub info_kind: Option<String>,
    /// Index of the master (bond) link.
    pub master: Option<i32>,
}

/// A route to add.
#[derive(Debug, Clone)]
pub struct Route {
    /// Destination network (None = default route).
    pub dst: Option<(IpAddr, u8)>,
    /// Gateway.
    pub gateway: Option<IpAddr>,
    /// Preferred source.
    pub src: Option<IpAddr>,
    /// Outgoing interface.
    pub oif: Option<i32>,
    /// Routing table (254 = main).
    pub table: u32,
    /// Metric.
    pub priority: u32,
    /// `RT_SCOPE_*` (0 universe, 253 link).
    pub scope: u8,
    /// `RTPROT_*` (4 static, 16 dhcp).
    pub protocol: u8,
    /// `RTN_*` (1 unicast).
    pub kind: u8,
}

/// An open rtnetlink socket.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

struct Msg {
    buf: Vec<u8>,
}

impl Msg {
    fn new(ty: u16, flags: u16, header: &[u8]) -> Self {
        let mut buf = vec![0u8; 16];
        buf[4..6].copy_from_slice(&ty.to_ne_bytes());
        buf[6..8].copy_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(header);
        buf.resize(align(buf.len()), 0);
        Self { buf }
    }

    fn attr(&mut self, ty: u16, data: &[u8]) -> &mut Self {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align(self.buf.len()), 0);
        self
    }

    /// Starts a nested attribute; returns its offset for [`Msg::end_nest`].
    fn nest(&mut self, ty: u16) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(&(ty | 0x8000).to_ne_bytes());
        at
    }

    fn end_nest(&mut self, at: usize) {
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    /// `IFLA_LINKINFO { kind "bond", data { mode } }`.
    fn bond_info(&mut self, mode: u8) {
        let li = self.nest(IFLA_LINKINFO);
        self.attr(IFLA_INFO_KIND, b"bond\0");
        let data = self.nest(IFLA_INFO_DATA);
        self.attr(IFLA_BOND_MODE, &[mode]);
        self.end_nest(data);
        self.end_nest(li);
    }
}

fn ifinfomsg(index: i32, flags: u32, change: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0] = libc::AF_UNSPEC as u8;
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    h[8..12].copy_from_slice(&flags.to_ne_bytes());
    h[12..16].copy_from_slice(&change.to_ne_bytes());
    h
}

fn ip_bytes(a: &IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

fn family(a: &IpAddr) -> u8 {
    match a {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    }
}

/// Iterates `(type, payload)` over netlink attributes.
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        let data = &b[4..len];
        b = &b[align(len).min(b.len())..];
        Some((ty, data))
    })
}

impl Netlink {
    /// Opens and binds a NETLINK_ROUTE socket.
    pub fn open() -> Result<Self> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )
        .context("netlink socket")?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).context("netlink bind")?;
        Ok(Self { fd, seq: 1 })
    }

    /// Sends `m` and collects the reply messages until ACK / DONE; errors carry errno.
    fn request(&mut self, mut m: Msg) -> Result<Vec<(u16, Vec<u8>)>> {
        self.seq += 1;
        let len = m.buf.len() as u32;
        m.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        m.buf[8..12].copy_from_slice(&self.seq.to_ne_bytes());
        send(self.fd.as_raw_fd(), &m.buf, MsgFlags::empty()).context("netlink send")?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n =
                recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()).context("netlink recv")?;
            let mut b = &buf[..n];
            while b.len() >= 16 {
                let mlen = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
                let ty = u16::from_ne_bytes([b[4], b[5]]);
                let seq = u32::from_ne_bytes([b[8], b[9], b[10], b[11]]);
                if mlen < 16 || mlen > b.len() {
                    bail!("netlink: malformed reply");
                }
                let payload = &b[16..mlen];
                b = &b[align(mlen).min(b.len())..];
                if seq != self.seq {
                    continue;
                }
                match ty {
                    NLMSG_ERROR => {
                        let code = payload
                            .get(0..4)
                            .map(|e| i32::from_ne_bytes([e[0], e[1], e[2], e[3]]))
                            .unwrap_or(0);
                        if code == 0 {
                            return Ok(out);
                        }
                        return Err(std::io::Error::from_raw_os_error(-code).into());
                    }
                    NLMSG_DONE => return Ok(out),
                    _ => out.push((ty, payload.to_vec())),
                }
            }
        }
    }

    /// Every link.
    pub fn links(&mut self) -> Result<Vec<Link>> {
        let m = Msg::new(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, &ifinfomsg(0, 0, 0));
        let replies = self.request(m)?;
        let mut links = Vec::new();
        for (ty, p) in replies {
            if ty != RTM_NEWLINK || p.len() < 16 {
                continue;
            }
            let kind = u16::from_ne_bytes([p[2], p[3]]);
            let index = i32::from_ne_bytes([p[4], p[5], p[6], p[7]]);
            let flags = u32::from_ne_bytes([p[8], p[9], p[10], p[11]]);
            let mut l = Link {
                index,
                name: String::new(),
                flags,
                kind,
                mac: Vec::new(),
                info_kind: None,
                master: None,
            };
            for (t, d) in attrs(&p[16..]) {
                match t {
                    IFLA_IFNAME => {
                        l.name = String::from_utf8_lossy(d.split(|&c| c == 0).next().unwrap_or(d))
                            .into_owned()
                    }
                    IFLA_ADDRESS => l.mac = d.to_vec(),
                    IFLA_MASTER if d.len() >= 4 => {
                        l.master = Some(i32::from_ne_bytes([d[0], d[1], d[2], d[3]]))
                    }
                    IFLA_LINKINFO => {
                        for (it, id) in attrs(d) {
                            if it == IFLA_INFO_KIND {
                                l.info_kind = Some(
                                    String::from_utf8_lossy(
                                        id.split(|&c| c == 0).next().unwrap_or(id),
                                    )
                                    .into_owned(),
                                );
                            }
                        }
                    }
                    _ => {}
                }
            }
            links.push(l);
        }
        Ok(links)
    }

    /// Sets a link up or down, and its MTU when non-zero.
    pub fn set_link(&mut self, index: i32, up: bool, mtu: u32) -> Result<()> {
        let flags = if up { IFF_UP } else { 0 };
        let mut m = Msg::new(
            RTM_NEWLINK,
            NLM_F_REQUEST | NLM_F_ACK,
            &ifinfomsg(index, flags, IFF_UP),
        );
        if mtu != 0 {
            m.attr(IFLA_MTU, &mtu.to_ne_bytes());
        }
        self.request(m).map(|_| ())
    }

    /// Enslaves `index` to `master` (the link must be down).
    pub fn set_master(&mut self, index: i32, master: i32) -> Result<()> {
        let mut m = Msg::new(
            RTM_NEWLINK,
            NLM_F_REQUEST | NLM_F_ACK,
            &ifinfomsg(index, 0, 0),
        );
        m.attr(IFLA_MASTER, &master.to_ne_bytes());
        self.request(m).map(|_| ())
    }

    /// Creates a bond (`mode` as the kernel numbers it: 0 balance-rr, 1 active-backup,
    /// 4 802.3ad, …).
    pub fn create_bond(&mut self, name: &str, mode: u8) -> Result<()> {
        let mut m = Msg::new(
            RTM_NEWLINK,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            &ifinfomsg(0, 0, 0),
        );
        m.attr(IFLA_IFNAME, &[name.as_bytes(), &[0]].concat());
        m.bond_info(mode);
        self.request(m).map(|_| ())
    }

    /// Sets the mode of an existing bond (it must be down and have no slaves, e.g. the
    /// `bond0` the bonding module creates when it loads).
    pub fn set_bond_mode(&mut self, index: i32, mode: u8) -> Result<()> {
        let mut m = Msg::new(
            RTM_NEWLINK,
            NLM_F_REQUEST | NLM_F_ACK,
            &ifinfomsg(index, 0, 0),
        );
        m.bond_info(mode);
        self.request(m).map(|_| ())
    }

    /// Creates a VLAN link on `parent` (`protocol` 0x8100 for 802.1q, 0x88a8 for 802.1ad).
    pub fn create_vlan(&mut self, name: &str, parent: i32, id: u16, protocol: u16) -> Result<()> {
        let mut m = Msg::new(
            RTM_NEWLINK,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            &ifinfomsg(0, 0, 0),
        );
        m.attr(IFLA_IFNAME, &[name.as_bytes(), &[0]].concat());
        m.attr(IFLA_LINK, &parent.to_ne_bytes());
        let li = m.nest(IFLA_LINKINFO);
        m.attr(IFLA_INFO_KIND, b"vlan\0");
        let data = m.nest(IFLA_INFO_DATA);
        m.attr(IFLA_VLAN_ID, &id.to_ne_bytes());
        m.attr(IFLA_VLAN_PROTOCOL, &protocol.to_be_bytes());
        m.end_nest(data);
        m.end_nest(li);
        self.request(m).map(|_| ())
    }

    /// Adds (or replaces) an address on a link.
    pub fn add_address(&mut self, index: i32, addr: IpAddr, prefix: u8, scope: u8) -> Result<()> {
        let mut h = [0u8; 8];
        h[0] = family(&addr);
        h[1] = prefix;
        h[3] = scope;
        h[4..8].copy_from_slice(&(index as u32).to_ne_bytes());
        let mut m = Msg::new(
            RTM_NEWADDR,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            &h,
        );
        let b = ip_bytes(&addr);
        m.attr(IFA_LOCAL, &b);
        m.attr(IFA_ADDRESS, &b);
        if let IpAddr::V4(v) = addr
            && prefix < 31
        {
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix)
            };
            let bcast = u32::from(v) | !mask;
            m.attr(IFA_BROADCAST, &bcast.to_be_bytes());
        }
        self.request(m).map(|_| ())
    }

    /// Removes an address from a link; the kernel flushes the routes whose preferred source
    /// it was.
    pub fn del_address(&mut self, index: i32, addr: IpAddr, prefix: u8) -> Result<()> {
        let mut h = [0u8; 8];
        h[0] = family(&addr);
        h[1] = prefix;
        h[4..8].copy_from_slice(&(index as u32).to_ne_bytes());
        let mut m = Msg::new(RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK, &h);
        m.attr(IFA_LOCAL, &ip_bytes(&addr));
        self.request(m).map(|_| ())
    }

    /// Adds (or replaces) a route.
    pub fn add_route(&mut self, r: &Route) -> Result<()> {
        let fam = r
            .dst
            .map(|(a, _)| family(&a))
            .or(r.gateway.as_ref().map(family))
            .unwrap_or(libc::AF_INET as u8);
        let mut h = [0u8; 12];
        h[0] = fam;
        h[1] = r.dst.map_or(0, |(_, p)| p);
        h[4] = if r.table < 256 { r.table as u8 } else { 252 };
        h[5] = r.protocol;
        h[6] = r.scope;
        h[7] = r.kind;
        let mut m = Msg::new(
            RTM_NEWROUTE,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            &h,
        );
        if let Some((d, _)) = &r.dst {
            m.attr(RTA_DST, &ip_bytes(d));
        }
        if let Some(g) = &r.gateway {
            m.attr(RTA_GATEWAY, &ip_bytes(g));
        }
        if let Some(s) = &r.src {
            m.attr(RTA_PREFSRC, &ip_bytes(s));
        }
        if let Some(o) = r.oif {
            m.attr(RTA_OIF, &o.to_ne_bytes());
        }
        if r.priority != 0 {
            m.attr(RTA_PRIORITY, &r.priority.to_ne_bytes());
        }
        m.attr(RTA_TABLE, &r.table.to_ne_bytes());
        self.request(m).map(|_| ())
    }
}
