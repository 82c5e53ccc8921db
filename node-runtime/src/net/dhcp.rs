//! A DHCPv4 client (RFC 2131): DISCOVER → OFFER → REQUEST → ACK on one link, broadcast
//! replies requested, over a UDP socket bound to port 68 on that device (no address needed).

use anyhow::{Context, Result, bail};
use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrIn, bind, setsockopt, socket, sockopt,
};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

const MAGIC: [u8; 4] = [99, 130, 83, 99];
const DISCOVER: u8 = 1;
const OFFER: u8 = 2;
const REQUEST: u8 = 3;
const ACK: u8 = 5;
const NAK: u8 = 6;

/// What the server gave.
#[derive(Debug, Clone, Default)]
pub struct Lease {
    /// Our address.
    pub address: Option<Ipv4Addr>,
    /// Prefix length from the subnet mask.
    pub prefix: u8,
    /// Default gateway.
    pub router: Option<Ipv4Addr>,
    /// DNS servers.
    pub dns: Vec<Ipv4Addr>,
    /// NTP servers.
    pub ntp: Vec<Ipv4Addr>,
    /// Host name.
    pub hostname: String,
    /// Domain name.
    pub domain: String,
    /// Lease seconds.
    pub lease_secs: u32,
    /// Server identifier.
    pub server: Option<Ipv4Addr>,
}

fn packet(kind: u8, xid: u32, mac: &[u8], req: Option<(Ipv4Addr, Ipv4Addr)>) -> Vec<u8> {
    let mut p = vec![0u8; 236];
    p[0] = 1; // BOOTREQUEST
    p[1] = 1; // ethernet
    p[2] = 6;
    p[4..8].copy_from_slice(&xid.to_be_bytes());
    p[10] = 0x80; // broadcast flag: we have no address yet
    let n = mac.len().min(16);
    p[28..28 + n].copy_from_slice(&mac[..n]);
    p.extend_from_slice(&MAGIC);
    p.extend_from_slice(&[53, 1, kind]);
    let mut cid = vec![61, 7, 1];
    cid.extend_from_slice(&mac[..mac.len().min(6)]);
    cid.resize(9, 0);
    p.extend_from_slice(&cid);
    if let Some((ip, server)) = req {
        p.extend_from_slice(&[50, 4]);
        p.extend_from_slice(&ip.octets());
        p.extend_from_slice(&[54, 4]);
        p.extend_from_slice(&server.octets());
    }
    p.extend_from_slice(&[55, 7, 1, 3, 6, 12, 15, 42, 51]);
    p.push(255);
    p.resize(p.len().max(300), 0);
    p
}

fn ipv4s(d: &[u8]) -> Vec<Ipv4Addr> {
    d.chunks_exact(4)
        .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
        .collect()
}

/// Parses a reply for `xid`: (message type, lease).
fn parse(p: &[u8], xid: u32) -> Option<(u8, Lease)> {
    if p.len() < 240 || p[0] != 2 || p[4..8] != xid.to_be_bytes() || p[236..240] != MAGIC {
        return None;
    }
    let mut l = Lease {
        address: Some(Ipv4Addr::new(p[16], p[17], p[18], p[19])),
        ..Default::default()
    };
    let mut kind = 0;
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
        let d = &rest[..len];
        match code {
            53 if len == 1 => kind = d[0],
            1 if len == 4 => {
                l.prefix = u32::from_be_bytes([d[0], d[1], d[2], d[3]]).count_ones() as u8
            }
            3 => l.router = ipv4s(d).first().copied(),
            6 => l.dns = ipv4s(d),
            42 => l.ntp = ipv4s(d),
            12 => {
                l.hostname = String::from_utf8_lossy(d)
                    .trim_end_matches('\0')
                    .to_string()
            }
            15 => {
                l.domain = String::from_utf8_lossy(d)
                    .trim_end_matches('\0')
                    .to_string()
            }
            51 if len == 4 => l.lease_secs = u32::from_be_bytes([d[0], d[1], d[2], d[3]]),
            54 => l.server = ipv4s(d).first().copied(),
            _ => {}
        }
        o = &rest[len..];
    }
    Some((kind, l))
}

fn open(link: &str) -> Result<UdpSocket> {
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
    Ok(UdpSocket::from(fd))
}

/// Runs one DHCP exchange on `link` (up, with hardware address `mac`), retrying for `total`.
pub fn acquire(link: &str, mac: &[u8], xid: u32, total: Duration) -> Result<Lease> {
    let sock = open(link)?;
    let dst = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
    let deadline = Instant::now() + total;
    let mut wait = Duration::from_millis(500);
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        sock.send_to(&packet(DISCOVER, xid, mac, None), dst)
            .context("sending DHCPDISCOVER")?;
        let offer = recv_kind(&sock, &mut buf, xid, &[OFFER], wait)?;
        let Some(offer) = offer else {
            wait = (wait * 2).min(Duration::from_secs(4));
            continue;
        };
        let (Some(ip), Some(server)) = (offer.address, offer.server) else {
            continue;
        };
        sock.send_to(&packet(REQUEST, xid, mac, Some((ip, server))), dst)
            .context("sending DHCPREQUEST")?;
        match recv_kind(&sock, &mut buf, xid, &[ACK, NAK], Duration::from_secs(2))? {
            Some(l) if l.address.is_some_and(|a| !a.is_unspecified()) => {
                let mut l = l;
                if l.prefix == 0 {
                    l.prefix = offer.prefix;
                }
                return Ok(l);
            }
            _ => continue,
        }
    }
    bail!("no DHCP lease on {link} within {} s", total.as_secs())
}

fn recv_kind(
    sock: &UdpSocket,
    buf: &mut [u8],
    xid: u32,
    kinds: &[u8],
    wait: Duration,
) -> Result<Option<Lease>> {
    let until = Instant::now() + wait;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        sock.set_read_timeout(Some(left)).context("dhcp timeout")?;
        match sock.recv_from(buf) {
            Ok((n, _)) => {
                if let Some((k, l)) = parse(&buf[..n], xid) {
                    if k == NAK {
                        return Ok(None);
                    }
                    if kinds.contains(&k) {
                        return Ok(Some(l));
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e).context("receiving DHCP"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn request_and_reply_round_trip() {
        let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
        let p = packet(
            REQUEST,
            7,
            &mac,
            Some((Ipv4Addr::new(10, 0, 2, 15), Ipv4Addr::new(10, 0, 2, 2))),
        );
        assert_eq!(p[0], 1);
        assert_eq!(&p[28..34], &mac);
        assert!(p.len() >= 300);
        // a server reply built from the request
        let mut r = p.clone();
        r[0] = 2;
        r[16..20].copy_from_slice(&[10, 0, 2, 15]);
        let opts: &[u8] = &[
            53, 1, ACK, 1, 4, 255, 255, 255, 0, 3, 4, 10, 0, 2, 2, 6, 4, 10, 0, 2, 3, 51, 4, 0, 0,
            0x0e, 0x10, 54, 4, 10, 0, 2, 2, 255,
        ];
        r.truncate(240);
        r.extend_from_slice(opts);
        let (k, l) = parse(&r, 7).unwrap();
        assert_eq!(k, ACK);
        assert_eq!(l.address, Some(Ipv4Addr::new(10, 0, 2, 15)));
        assert_eq!(l.prefix, 24);
        assert_eq!(l.router, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(l.dns, [Ipv4Addr::new(10, 0, 2, 3)]);
        assert_eq!(l.lease_secs, 3600);
        assert!(parse(&r, 8).is_none());
        assert!(parse(&r[..100], 7).is_none());
    }
}
