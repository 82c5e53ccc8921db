//! A DHCPv4 client (RFC 2131) for one link, over a UDP socket bound to port 68 on that
//! device (no address needed). The whole lease life is here (`docs/formats/dhcp.md`):
//!
//! - INIT/SELECTING/REQUESTING: DISCOVER → OFFER → REQUEST → ACK, broadcast replies asked
//!   for, retransmitted with a doubling wait;
//! - BOUND until T1 (option 58, default half the lease), RENEWING until T2 (option 59,
//!   default 7/8 of it: REQUEST unicast to the server with `ciaddr`), REBINDING until expiry
//!   (the same REQUEST broadcast), then the lease is dropped and discovery starts again; a
//!   NAK at any point drops the lease at once.
//!
//! Replies count only when `op`, `xid`, `chaddr` and the magic cookie all match, so another
//! client's exchange on the same segment is never taken for ours. Options split across
//! several instances are concatenated (RFC 3396). Option 121 (classless static routes,
//! RFC 3442) replaces the router option when present. Server-supplied names reach the
//! hostname and `/etc/hosts` only when they are valid DNS names.
//!
//! The protocol runs against the [`Wire`] trait (send, receive with a deadline, a clock), so
//! the whole state machine is tested with a scripted server and a virtual clock.

use anyhow::{Context, Result};
use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrIn, bind, setsockopt, socket, sockopt,
};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

const MAGIC: [u8; 4] = [99, 130, 83, 99];
const DISCOVER: u8 = 1;
const OFFER: u8 = 2;
const REQUEST: u8 = 3;
const ACK: u8 = 5;
const NAK: u8 = 6;

/// Lease time assumed when an ACK carries none (RFC 2131 makes it mandatory in an ACK).
pub const DEFAULT_LEASE_SECS: u32 = 3600;
/// The shortest lease honoured: a server offering less is treated as offering this much,
/// so that a hostile or broken server cannot make the client spin.
pub const MIN_LEASE_SECS: u32 = 10;
/// How long one discovery round tries before it reports and starts over.
pub const DISCOVER_ROUND: Duration = Duration::from_secs(60);

/// A classless static route (option 121): `dst/prefix` via `gateway` (0.0.0.0: on-link).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticRoute {
    /// Destination network.
    pub dst: Ipv4Addr,
    /// Its prefix length (0..=32).
    pub prefix: u8,
    /// Next hop; unspecified means the destination is on the link.
    pub gateway: Ipv4Addr,
}

/// What the server gave.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lease {
    /// Our address.
    pub address: Option<Ipv4Addr>,
    /// Prefix length from the subnet mask.
    pub prefix: u8,
    /// Default gateway (option 3; cleared when option 121 is present).
    pub router: Option<Ipv4Addr>,
    /// Classless static routes (option 121), in the server's order.
    pub routes: Vec<StaticRoute>,
    /// DNS servers.
    pub dns: Vec<Ipv4Addr>,
    /// NTP servers.
    pub ntp: Vec<Ipv4Addr>,
    /// Host name (empty unless a valid DNS name was sent).
    pub hostname: String,
    /// Domain name (empty unless a valid DNS name was sent).
    pub domain: String,
    /// Lease seconds (option 51; 0 when absent).
    pub lease_secs: u32,
    /// Renewal time T1 (option 58).
    pub renew_secs: Option<u32>,
    /// Rebinding time T2 (option 59).
    pub rebind_secs: Option<u32>,
    /// Server identifier.
    pub server: Option<Ipv4Addr>,
}

/// When a lease's timers fire, measured from the moment it was bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// T1: start renewing.
    pub renew: Duration,
    /// T2: start rebinding.
    pub rebind: Duration,
    /// The lease ends.
    pub expire: Duration,
}

impl Lease {
    /// Whether the lease never expires (lease time 0xffffffff).
    pub fn infinite(&self) -> bool {
        self.lease_secs == u32::MAX
    }

    /// T1, T2 and expiry, sanitised: a missing lease time is [`DEFAULT_LEASE_SECS`], a short
    /// one [`MIN_LEASE_SECS`]; T1 and T2 default to 1/2 and 7/8 of it (RFC 2131 §4.4.5), and
    /// out-of-order values sent by the server are replaced by those defaults.
    pub fn timers(&self) -> Timers {
        let lease = match self.lease_secs {
            0 => DEFAULT_LEASE_SECS,
            s => s.max(MIN_LEASE_SECS),
        } as u64;
        let mut t2 = self.rebind_secs.map_or(lease * 7 / 8, u64::from);
        if t2 == 0 || t2 >= lease {
            t2 = lease * 7 / 8;
        }
        let mut t1 = self.renew_secs.map_or(lease / 2, u64::from);
        if t1 == 0 || t1 >= t2 {
            t1 = (lease / 2).min(t2);
        }
        Timers {
            renew: Duration::from_secs(t1),
            rebind: Duration::from_secs(t2),
            expire: Duration::from_secs(lease),
        }
    }
}

/// Where a packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    /// 255.255.255.255:67.
    Broadcast,
    /// The server's address, port 67.
    Server(Ipv4Addr),
}

/// What the client needs from the network and the clock.
pub trait Wire {
    /// Sends one datagram.
    fn send(&mut self, packet: &[u8], dest: Dest) -> Result<()>;
    /// Waits for one datagram until `until`: its length and source address; `None` when the
    /// time is up.
    fn recv(&mut self, buf: &mut [u8], until: Instant) -> Result<Option<(usize, Ipv4Addr)>>;
    /// The current time.
    fn now(&self) -> Instant;
    /// Waits until `t`.
    fn sleep_until(&mut self, t: Instant) -> Result<()>;
}

/// What happened, in order, for the caller to apply and report.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Discovery started (again).
    Discover,
    /// A discovery round ended without a lease; another one follows.
    NoLease,
    /// A new lease: configure it.
    Bound(Lease),
    /// T1 reached: asking our server to extend the lease.
    Renewing,
    /// T2 reached: asking any server to extend the lease.
    Rebinding,
    /// The lease was extended (possibly with new parameters): apply it.
    Extended(Lease),
    /// The lease ended without extension: remove its address and routes.
    Expired(Lease),
    /// The server refused the lease while we held it: remove it.
    Refused(Lease),
    /// Sending or receiving failed (the link went down, …): counted as a missed attempt.
    Trouble(String),
}

/// The request being built.
enum Req {
    Discover,
    Select { ip: Ipv4Addr, server: Ipv4Addr },
    Extend { ciaddr: Ipv4Addr },
}

fn packet(xid: u32, mac: &[u8], req: &Req) -> Vec<u8> {
    let mut p = vec![0u8; 236];
    p[0] = 1; // BOOTREQUEST
    p[1] = 1; // ethernet
    p[2] = 6;
    p[4..8].copy_from_slice(&xid.to_be_bytes());
    let n = mac.len().min(16);
    p[28..28 + n].copy_from_slice(&mac[..n]);
    let kind = match req {
        Req::Discover => DISCOVER,
        _ => REQUEST,
    };
    match req {
        // no address yet: replies must be broadcast
        Req::Discover | Req::Select { .. } => p[10] = 0x80,
        Req::Extend { ciaddr } => p[12..16].copy_from_slice(&ciaddr.octets()),
    }
    p.extend_from_slice(&MAGIC);
    p.extend_from_slice(&[53, 1, kind]);
    let mut cid = vec![61, 7, 1];
    cid.extend_from_slice(&mac[..mac.len().min(6)]);
    cid.resize(9, 0);
    p.extend_from_slice(&cid);
    if let Req::Select { ip, server } = req {
        p.extend_from_slice(&[50, 4]);
        p.extend_from_slice(&ip.octets());
        p.extend_from_slice(&[54, 4]);
        p.extend_from_slice(&server.octets());
    }
    p.extend_from_slice(&[55, 10, 1, 3, 6, 12, 15, 42, 51, 58, 59, 121]);
    p.push(255);
    p.resize(p.len().max(300), 0);
    p
}

fn ipv4s(d: &[u8]) -> Vec<Ipv4Addr> {
    d.chunks_exact(4)
        .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
        .collect()
}

fn u32_of(d: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(d.try_into().ok()?))
}

/// A DNS name as RFC 1123 allows it, or `None`.
fn dns_name(d: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(d).ok()?.trim_end_matches('\0');
    let s = s.strip_suffix('.').unwrap_or(s);
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    ok.then(|| s.to_string())
}

/// The historical classful prefix of `a` (A /8, B /16, C /24), for a lease whose server sent
/// no subnet mask: never /0, which would make every IPv4 address on-link.
pub fn classful_prefix(a: Ipv4Addr) -> u8 {
    match a.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

/// Option 121 (RFC 3442): `width, significant octets of the destination, router` repeated.
/// `None` when malformed (the option is then ignored as a whole).
pub fn classless_routes(mut d: &[u8]) -> Option<Vec<StaticRoute>> {
    let mut out = Vec::new();
    while let [width, rest @ ..] = d {
        if *width > 32 {
            return None;
        }
        let sig = (*width as usize).div_ceil(8);
        if rest.len() < sig + 4 {
            return None;
        }
        let mut dst = [0u8; 4];
        dst[..sig].copy_from_slice(&rest[..sig]);
        let mask = if *width == 0 {
            0
        } else {
            u32::MAX << (32 - *width)
        };
        out.push(StaticRoute {
            dst: Ipv4Addr::from(u32::from_be_bytes(dst) & mask),
            prefix: *width,
            gateway: Ipv4Addr::new(rest[sig], rest[sig + 1], rest[sig + 2], rest[sig + 3]),
        });
        d = &rest[sig + 4..];
    }
    (!out.is_empty()).then_some(out)
}

/// Parses a reply to our `xid` from our `mac`: (message type, lease).
pub fn parse(p: &[u8], xid: u32, mac: &[u8]) -> Option<(u8, Lease)> {
    let n = mac.len().min(16);
    if p.len() < 240
        || p[0] != 2
        || p[4..8] != xid.to_be_bytes()
        || p[28..28 + n] != mac[..n]
        || p[236..240] != MAGIC
    {
        return None;
    }
    // every option, instances of one code concatenated (RFC 3396)
    let mut opts: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
    let mut o = &p[240..];
    while let [code, rest @ ..] = o {
        match *code {
            0 => {
                o = rest;
                continue;
            }
            255 => break,
            _ => {}
        }
        let [len, rest @ ..] = rest else { break };
        let len = *len as usize;
        if rest.len() < len {
            break;
        }
        opts.entry(*code)
            .or_default()
            .extend_from_slice(&rest[..len]);
        o = &rest[len..];
    }
    let get = |c: u8| opts.get(&c).map(Vec::as_slice);
    let kind = match get(53) {
        Some([k]) => *k,
        _ => return None,
    };
    let yiaddr = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    let routes = get(121).and_then(classless_routes).unwrap_or_default();
    let l = Lease {
        address: (!yiaddr.is_unspecified()).then_some(yiaddr),
        prefix: get(1).and_then(u32_of).map_or(0, |m| m.count_ones() as u8),
        // RFC 3442: with classless routes the router option is ignored
        router: if routes.is_empty() {
            get(3).and_then(|d| ipv4s(d).first().copied())
        } else {
            None
        },
        routes,
        dns: get(6).map(ipv4s).unwrap_or_default(),
        ntp: get(42).map(ipv4s).unwrap_or_default(),
        hostname: get(12).and_then(dns_name).unwrap_or_default(),
        domain: get(15).and_then(dns_name).unwrap_or_default(),
        lease_secs: get(51).and_then(u32_of).unwrap_or(0),
        renew_secs: get(58).and_then(u32_of),
        rebind_secs: get(59).and_then(u32_of),
        server: get(54).and_then(|d| ipv4s(d).first().copied()),
    };
    Some((kind, l))
}

/// How long to wait after a NAK before discovering again (RFC 2131 §3.1 suggests at least
/// 10 s between restarts).
const AFTER_NAK: Duration = Duration::from_secs(10);

/// The DHCP client of one link.
#[derive(Debug)]
pub struct Client<W: Wire> {
    wire: W,
    mac: Vec<u8>,
    xid: u32,
    /// The last send/receive failure, reported once as [`Event::Trouble`].
    trouble: Option<String>,
}

impl<W: Wire> Client<W> {
    /// A client sending with hardware address `mac`; transaction IDs start at `xid` (take
    /// it from a random source: a predictable xid lets a remote host forge replies).
    pub fn new(wire: W, mac: &[u8], xid: u32) -> Self {
        Self {
            wire,
            mac: mac.to_vec(),
            xid,
            trouble: None,
        }
    }

    /// Sends; a failure is a missed attempt: noted, and the attempt's time waited out.
    fn send(&mut self, p: &[u8], dest: Dest, until: Instant, what: &str) -> Result<bool> {
        match self.wire.send(p, dest) {
            Ok(()) => Ok(true),
            Err(e) => {
                self.trouble = Some(format!("sending {what}: {e:#}"));
                self.wire.sleep_until(until)?;
                Ok(false)
            }
        }
    }

    fn report(&mut self, on: &mut dyn FnMut(Event)) {
        if let Some(t) = self.trouble.take() {
            on(Event::Trouble(t));
        }
    }

    fn next_xid(&mut self) -> u32 {
        self.xid = self.xid.wrapping_add(1);
        self.xid
    }

    /// Waits until `until` for a reply of one of `kinds` to `xid` (from `from` only, when
    /// given). A receive failure is noted and the rest of the time waited out.
    fn reply(
        &mut self,
        xid: u32,
        kinds: &[u8],
        until: Instant,
        from: Option<Ipv4Addr>,
    ) -> Result<Option<(u8, Lease)>> {
        let mut buf = [0u8; 1500];
        loop {
            let (n, src) = match self.wire.recv(&mut buf, until) {
                Ok(Some(x)) => x,
                Ok(None) => return Ok(None),
                Err(e) => {
                    self.trouble = Some(format!("receiving: {e:#}"));
                    self.wire.sleep_until(until)?;
                    return Ok(None);
                }
            };
            if from.is_some_and(|f| f != src) {
                continue;
            }
            if let Some((k, l)) = parse(&buf[..n.min(buf.len())], xid, &self.mac)
                && kinds.contains(&k)
            {
                return Ok(Some((k, l)));
            }
        }
    }

    /// One discovery round of at most `total`: the lease and the moment it was bound.
    pub fn discover(
        &mut self,
        total: Duration,
        on: &mut dyn FnMut(Event),
    ) -> Result<Option<(Lease, Instant)>> {
        let deadline = self.wire.now() + total;
        let mut wait = Duration::from_millis(500);
        while self.wire.now() < deadline {
            self.report(on);
            let xid = self.next_xid();
            let until = (self.wire.now() + wait).min(deadline);
            wait = (wait * 2).min(Duration::from_secs(4));
            let discover = packet(xid, &self.mac, &Req::Discover);
            if !self.send(&discover, Dest::Broadcast, until, "DHCPDISCOVER")? {
                continue;
            }
            // a NAK here answers nobody's request of ours: only offers count
            let Some((_, offer)) = self.reply(xid, &[OFFER], until, None)? else {
                continue;
            };
            let (Some(ip), Some(server)) = (offer.address, offer.server) else {
                self.wire.sleep_until(until)?;
                continue;
            };
            let until = (self.wire.now() + Duration::from_secs(2)).min(deadline);
            let request = packet(xid, &self.mac, &Req::Select { ip, server });
            if !self.send(&request, Dest::Broadcast, until, "DHCPREQUEST")? {
                continue;
            }
            match self.reply(xid, &[ACK, NAK], until, None)? {
                Some((ACK, mut l)) if l.address.is_some() => {
                    if l.prefix == 0 {
                        l.prefix = offer.prefix;
                    }
                    if l.prefix == 0
                        && let Some(a) = l.address
                    {
                        l.prefix = classful_prefix(a);
                    }
                    if l.server.is_none() {
                        l.server = Some(server);
                    }
                    return Ok(Some((l, self.wire.now())));
                }
                Some(_) => {
                    let next = (self.wire.now() + AFTER_NAK).min(deadline);
                    self.wire.sleep_until(next)?;
                }
                None => {}
            }
        }
        self.report(on);
        Ok(None)
    }

    /// Keeps `lease` (bound at `bound_at`) alive: renews at T1, rebinds at T2. Returns when
    /// it is lost ([`Event::Expired`] or [`Event::Refused`] already reported); never returns
    /// for an infinite lease unless the wire fails.
    pub fn keep(
        &mut self,
        mut lease: Lease,
        mut bound_at: Instant,
        on: &mut dyn FnMut(Event),
    ) -> Result<()> {
        loop {
            let Some(addr) = lease.address else {
                return Ok(());
            };
            let t = lease.timers();
            if lease.infinite() {
                self.wire
                    .sleep_until(bound_at + Duration::from_secs(u32::MAX as u64))?;
                continue;
            }
            let (t1, t2, end) = (bound_at + t.renew, bound_at + t.rebind, bound_at + t.expire);
            self.wire.sleep_until(t1)?;
            on(Event::Renewing);
            let mut rebinding = false;
            let reply = loop {
                let now = self.wire.now();
                if now >= end {
                    break None;
                }
                if !rebinding && now >= t2 {
                    rebinding = true;
                    on(Event::Rebinding);
                }
                // renewing: our server only, by unicast; rebinding: any server
                let (dest, limit, from) = match (rebinding, lease.server) {
                    (false, Some(s)) => (Dest::Server(s), t2, Some(s)),
                    _ => (Dest::Broadcast, end, None),
                };
                // RFC 2131 §4.4.5: wait half the time left, but not less than a floor
                let left = limit.saturating_duration_since(now);
                let until = now + (left / 2).max(Duration::from_secs(10)).min(left);
                let xid = self.next_xid();
                let request = packet(xid, &self.mac, &Req::Extend { ciaddr: addr });
                let sent = self.send(&request, dest, until, "DHCPREQUEST (renewal)")?;
                self.report(on);
                if !sent {
                    continue;
                }
                let r = self.reply(xid, &[ACK, NAK], until, from)?;
                self.report(on);
                if let Some(r) = r {
                    break Some(r);
                }
            };
            match reply {
                Some((ACK, mut l)) if l.address.is_some() => {
                    if l.prefix == 0 && l.address == lease.address {
                        l.prefix = lease.prefix;
                    }
                    if l.server.is_none() {
                        l.server = lease.server;
                    }
                    bound_at = self.wire.now();
                    lease = l;
                    on(Event::Extended(lease.clone()));
                }
                Some(_) => {
                    on(Event::Refused(lease));
                    return Ok(());
                }
                None => {
                    on(Event::Expired(lease));
                    return Ok(());
                }
            }
        }
    }

    /// The client's life: discover, bind, keep the lease, and start over when it is lost.
    /// Returns only when the wire fails.
    pub fn run(&mut self, on: &mut dyn FnMut(Event)) -> Result<()> {
        loop {
            on(Event::Discover);
            match self.discover(DISCOVER_ROUND, on)? {
                Some((lease, at)) => {
                    on(Event::Bound(lease.clone()));
                    self.keep(lease, at, on)?;
                }
                None => on(Event::NoLease),
            }
        }
    }
}

/// The real wire: a UDP socket on port 68 bound to one device.
#[derive(Debug)]
pub struct Socket(UdpSocket);

impl Socket {
    /// Opens the socket on `link`.
    pub fn open(link: &str) -> Result<Self> {
        let fd = socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .context("dhcp socket")?;
        setsockopt(&fd, sockopt::ReuseAddr, &true).context("SO_REUSEADDR")?;
        setsockopt(&fd, sockopt::Broadcast, &true).context("SO_BROADCAST")?;
        setsockopt(&fd, sockopt::BindToDevice, &std::ffi::OsString::from(link))
            .with_context(|| format!("SO_BINDTODEVICE {link}"))?;
        use std::os::fd::AsRawFd;
        bind(
            fd.as_raw_fd(),
            &SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68)),
        )
        .context("binding port 68")?;
        Ok(Self(UdpSocket::from(fd)))
    }
}

impl Wire for Socket {
    fn send(&mut self, packet: &[u8], dest: Dest) -> Result<()> {
        let ip = match dest {
            Dest::Broadcast => Ipv4Addr::BROADCAST,
            Dest::Server(s) => s,
        };
        self.0.send_to(packet, SocketAddrV4::new(ip, 67))?;
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8], until: Instant) -> Result<Option<(usize, Ipv4Addr)>> {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        self.0
            .set_read_timeout(Some(left))
            .context("dhcp timeout")?;
        match self.0.recv_from(buf) {
            Ok((n, std::net::SocketAddr::V4(a))) => Ok(Some((n, *a.ip()))),
            Ok((n, _)) => Ok(Some((n, Ipv4Addr::UNSPECIFIED))),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e).context("receiving DHCP"),
        }
    }

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep_until(&mut self, t: Instant) -> Result<()> {
        std::thread::sleep(t.saturating_duration_since(Instant::now()));
        Ok(())
    }
}

#[cfg(test)]
#[path = "dhcp/tests.rs"]
mod tests;
