//! The DHCP state machine against a scripted server on a virtual clock.

#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;
use anyhow::bail;
use std::collections::VecDeque;

const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
const OTHER_MAC: [u8; 6] = [0x52, 0x54, 0, 0x99, 0x99, 0x99];
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const OURS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);

/// A request as the server sees it.
#[derive(Debug, Clone)]
struct Seen {
    at: u64,
    kind: u8,
    xid: u32,
    ciaddr: Ipv4Addr,
    broadcast_flag: bool,
    requested: Option<Ipv4Addr>,
    dest: Dest,
}

fn seen(p: &[u8], dest: Dest, at: u64) -> Seen {
    let mut kind = 0;
    let mut requested = None;
    let mut o = &p[240..];
    while let [code, len, rest @ ..] = o {
        if *code == 255 {
            break;
        }
        let d = &rest[..*len as usize];
        match code {
            53 => kind = d[0],
            50 => requested = Some(Ipv4Addr::new(d[0], d[1], d[2], d[3])),
            _ => {}
        }
        o = &rest[*len as usize..];
    }
    Seen {
        at,
        kind,
        xid: u32::from_be_bytes(p[4..8].try_into().unwrap()),
        ciaddr: Ipv4Addr::new(p[12], p[13], p[14], p[15]),
        broadcast_flag: p[10] & 0x80 != 0,
        requested,
        dest,
    }
}

/// A server reply: `kind` to `xid` for `mac`, with options.
fn reply(kind: u8, xid: u32, mac: &[u8], yiaddr: Ipv4Addr, opts: &[(u8, &[u8])]) -> Vec<u8> {
    let mut p = vec![0u8; 236];
    p[0] = 2;
    p[1] = 1;
    p[2] = 6;
    p[4..8].copy_from_slice(&xid.to_be_bytes());
    p[16..20].copy_from_slice(&yiaddr.octets());
    p[28..28 + mac.len()].copy_from_slice(mac);
    p.extend_from_slice(&MAGIC);
    p.extend_from_slice(&[53, 1, kind]);
    for (c, d) in opts {
        p.push(*c);
        p.push(d.len() as u8);
        p.extend_from_slice(d);
    }
    p.push(255);
    p
}

fn lease_opts(secs: u32) -> Vec<(u8, Vec<u8>)> {
    vec![
        (1, vec![255, 255, 255, 0]),
        (3, SERVER.octets().to_vec()),
        (6, vec![10, 0, 2, 3]),
        (51, secs.to_be_bytes().to_vec()),
        (54, SERVER.octets().to_vec()),
    ]
}

type Server = Box<dyn FnMut(&Seen) -> Vec<Vec<u8>>>;

/// The virtual network: requests go to `server`, whose replies arrive 10 ms later.
/// Replies from other hosts (an attacker on the path, another server): bytes and source.
type Forger = Box<dyn FnMut(&Seen) -> Vec<(Vec<u8>, Ipv4Addr)>>;

struct Fake {
    t0: Instant,
    now: Instant,
    end: Instant,
    server: Server,
    forger: Option<Forger>,
    /// Sends fail (as on a link that is down) before this many seconds.
    sends_fail_until: u64,
    queue: VecDeque<(Instant, Vec<u8>, Ipv4Addr)>,
    log: Vec<Seen>,
    failed_sends: usize,
}

impl Fake {
    fn new(end_secs: u64, server: Server) -> Self {
        let t0 = Instant::now();
        Self {
            t0,
            now: t0,
            end: t0 + Duration::from_secs(end_secs),
            server,
            forger: None,
            sends_fail_until: 0,
            queue: VecDeque::new(),
            log: Vec::new(),
            failed_sends: 0,
        }
    }
    fn secs(&self) -> u64 {
        (self.now - self.t0).as_secs()
    }
    fn check_end(&self) -> Result<()> {
        if self.now >= self.end {
            bail!("end of script");
        }
        Ok(())
    }
}

impl Wire for &mut Fake {
    fn send(&mut self, packet: &[u8], dest: Dest) -> Result<()> {
        self.check_end()?;
        if self.secs() < self.sends_fail_until {
            self.failed_sends += 1;
            bail!("Network is unreachable (os error 101)");
        }
        let s = seen(packet, dest, self.secs());
        let at = self.now + Duration::from_millis(10);
        // forged replies arrive first
        if let Some(f) = self.forger.as_mut() {
            for (r, src) in f(&s) {
                self.queue.push_back((at, r, src));
            }
        }
        for r in (self.server)(&s) {
            self.queue.push_back((at, r, SERVER));
        }
        self.log.push(s);
        Ok(())
    }
    fn recv(&mut self, buf: &mut [u8], until: Instant) -> Result<Option<(usize, Ipv4Addr)>> {
        self.check_end()?;
        match self.queue.front() {
            Some((at, _, _)) if *at <= until => {
                let (at, p, src) = self.queue.pop_front().unwrap();
                self.now = self.now.max(at);
                buf[..p.len()].copy_from_slice(&p);
                Ok(Some((p.len(), src)))
            }
            _ => {
                self.now = self.now.max(until);
                Ok(None)
            }
        }
    }
    fn now(&self) -> Instant {
        self.now
    }
    fn sleep_until(&mut self, t: Instant) -> Result<()> {
        self.now = self.now.max(t);
        self.check_end()
    }
}

/// Runs the client until the script ends: the events, in order.
fn run(fake: &mut Fake) -> Vec<Event> {
    let mut events = Vec::new();
    let mut client = Client::new(&mut *fake, &MAC, 0x1000);
    let err = client.run(&mut |e| events.push(e)).unwrap_err();
    assert_eq!(err.root_cause().to_string(), "end of script");
    events
}

/// A well-behaved server that gives OURS for `secs`, answering renewals per `extend`.
fn server(secs: u32, mut extend: impl FnMut(&Seen) -> bool + 'static) -> Server {
    Box::new(move |s: &Seen| {
        let opts = lease_opts(secs);
        let opts: Vec<(u8, &[u8])> = opts.iter().map(|(c, d)| (*c, d.as_slice())).collect();
        match s.kind {
            DISCOVER => vec![reply(OFFER, s.xid, &MAC, OURS, &opts)],
            REQUEST if s.requested.is_some() => vec![reply(ACK, s.xid, &MAC, OURS, &opts)],
            REQUEST if extend(s) => vec![reply(ACK, s.xid, &MAC, OURS, &opts)],
            _ => vec![],
        }
    })
}

fn kinds(ev: &[Event]) -> Vec<&'static str> {
    ev.iter()
        .map(|e| match e {
            Event::Discover => "discover",
            Event::NoLease => "no-lease",
            Event::Bound(_) => "bound",
            Event::Renewing => "renewing",
            Event::Rebinding => "rebinding",
            Event::Extended(_) => "extended",
            Event::Expired(_) => "expired",
            Event::Refused(_) => "refused",
            Event::Trouble(_) => "trouble",
        })
        .collect()
}

#[test]
fn renews_at_t1_unicast_with_ciaddr() {
    let mut fake = Fake::new(1200, server(1000, |_| true));
    let ev = run(&mut fake);
    // bound at ~0, renewed at 500 and again at ~1000
    assert_eq!(
        kinds(&ev),
        [
            "discover", "bound", "renewing", "extended", "renewing", "extended"
        ]
    );
    let renewals: Vec<&Seen> = fake
        .log
        .iter()
        .filter(|s| s.requested.is_none() && s.kind == REQUEST)
        .collect();
    assert_eq!(renewals.len(), 2);
    for r in &renewals {
        assert_eq!(
            r.dest,
            Dest::Server(SERVER),
            "renewal is unicast to the server"
        );
        assert_eq!(r.ciaddr, OURS, "renewal carries ciaddr");
        assert!(!r.broadcast_flag);
    }
    assert_eq!(renewals[0].at, 500);
    assert_eq!(renewals[1].at, 1000);
}

#[test]
fn rebinds_at_t2_by_broadcast_when_the_server_is_gone() {
    // the server ignores unicast renewals, answers broadcast rebinding
    let mut fake = Fake::new(1600, server(1000, |s| s.dest == Dest::Broadcast));
    let ev = run(&mut fake);
    assert_eq!(
        kinds(&ev)[..5],
        ["discover", "bound", "renewing", "rebinding", "extended"]
    );
    let first_broadcast = fake
        .log
        .iter()
        .find(|s| s.kind == REQUEST && s.requested.is_none() && s.dest == Dest::Broadcast)
        .unwrap();
    assert_eq!(first_broadcast.at, 875, "T2 = 7/8 of the lease");
    assert_eq!(first_broadcast.ciaddr, OURS);
    // unicast retries between T1 and T2: each waits half the time left, at least 10 s
    // (or what is left), so the server is not flooded and T2 is met exactly
    let unicast: Vec<u64> = fake
        .log
        .iter()
        .filter(|s| s.dest == Dest::Server(SERVER) && s.at < 875)
        .map(|s| s.at)
        .collect();
    assert_eq!(unicast, [500, 687, 781, 828, 851, 863, 873]);
}

#[test]
fn expires_and_rediscovers_when_nobody_answers() {
    let mut answered_discover = 0;
    let mut fake = Fake::new(
        1100,
        Box::new(move |s: &Seen| {
            let opts = lease_opts(1000);
            let opts: Vec<(u8, &[u8])> = opts.iter().map(|(c, d)| (*c, d.as_slice())).collect();
            match s.kind {
                DISCOVER if answered_discover == 0 => {
                    answered_discover += 1;
                    vec![reply(OFFER, s.xid, &MAC, OURS, &opts)]
                }
                REQUEST if s.requested.is_some() => vec![reply(ACK, s.xid, &MAC, OURS, &opts)],
                _ => vec![],
            }
        }),
    );
    let ev = run(&mut fake);
    assert_eq!(
        kinds(&ev)[..6],
        [
            "discover",
            "bound",
            "renewing",
            "rebinding",
            "expired",
            "discover"
        ]
    );
    // the first DISCOVER after the expiry is at the lease's end
    let rediscover = fake
        .log
        .iter()
        .filter(|s| s.kind == DISCOVER)
        .nth(1)
        .unwrap();
    assert_eq!(rediscover.at, 1000);
    // nothing was sent for this lease after it expired
    assert!(
        !fake
            .log
            .iter()
            .any(|s| s.kind == REQUEST && s.ciaddr == OURS && s.at >= 1000)
    );
}

#[test]
fn a_nak_during_renewal_drops_the_lease_at_once() {
    let mut fake = Fake::new(
        700,
        Box::new(|s: &Seen| {
            let opts = lease_opts(1000);
            let opts: Vec<(u8, &[u8])> = opts.iter().map(|(c, d)| (*c, d.as_slice())).collect();
            match s.kind {
                DISCOVER => vec![reply(OFFER, s.xid, &MAC, OURS, &opts)],
                REQUEST if s.requested.is_some() => vec![reply(ACK, s.xid, &MAC, OURS, &opts)],
                REQUEST => vec![reply(NAK, s.xid, &MAC, Ipv4Addr::UNSPECIFIED, &[])],
                _ => vec![],
            }
        }),
    );
    let ev = run(&mut fake);
    assert_eq!(
        kinds(&ev)[..5],
        ["discover", "bound", "renewing", "refused", "discover"]
    );
}

#[test]
fn replies_for_another_client_with_the_same_xid_are_ignored() {
    // a reply to our xid but another chaddr arrives first, carrying another address
    let mut fake = Fake::new(
        100,
        Box::new(|s: &Seen| {
            let opts = lease_opts(3600);
            let opts: Vec<(u8, &[u8])> = opts.iter().map(|(c, d)| (*c, d.as_slice())).collect();
            let theirs = Ipv4Addr::new(10, 0, 2, 99);
            match s.kind {
                DISCOVER => vec![
                    reply(OFFER, s.xid, &OTHER_MAC, theirs, &opts),
                    reply(OFFER, s.xid, &MAC, OURS, &opts),
                ],
                REQUEST => vec![
                    reply(ACK, s.xid, &OTHER_MAC, theirs, &opts),
                    reply(ACK, s.xid, &MAC, OURS, &opts),
                ],
                _ => vec![],
            }
        }),
    );
    let ev = run(&mut fake);
    let Event::Bound(l) = &ev[1] else {
        panic!("{ev:?}")
    };
    assert_eq!(l.address, Some(OURS));
    assert_eq!(fake.log[1].requested, Some(OURS), "we asked for our offer");
    // and a reply for someone else alone never binds
    let mut fake = Fake::new(
        30,
        Box::new(|s: &Seen| {
            let opts = lease_opts(3600);
            let opts: Vec<(u8, &[u8])> = opts.iter().map(|(c, d)| (*c, d.as_slice())).collect();
            vec![reply(OFFER, s.xid, &OTHER_MAC, OURS, &opts)]
        }),
    );
    let ev = run(&mut fake);
    assert_eq!(kinds(&ev), ["discover"]);
    assert!(fake.log.iter().all(|s| s.kind == DISCOVER));
}

#[test]
fn classless_routes_replace_the_router() {
    // RFC 3442 examples: default via 10.0.2.1, 10.17.0.0/16 via 10.0.2.5, a /32 and an
    // on-link 192.168.7.0/24
    let o121: &[u8] = &[
        0, 10, 0, 2, 1, //
        16, 10, 17, 10, 0, 2, 5, //
        32, 172, 16, 1, 1, 10, 0, 2, 6, //
        24, 192, 168, 7, 0, 0, 0, 0,
    ];
    let r = reply(
        ACK,
        9,
        &MAC,
        OURS,
        &[(3, &SERVER.octets()), (121, o121), (51, &[0, 0, 1, 0])],
    );
    let (k, l) = parse(&r, 9, &MAC).unwrap();
    assert_eq!(k, ACK);
    assert_eq!(l.router, None, "option 121 present: option 3 ignored");
    assert_eq!(
        l.routes,
        [
            StaticRoute {
                dst: Ipv4Addr::UNSPECIFIED,
                prefix: 0,
                gateway: Ipv4Addr::new(10, 0, 2, 1)
            },
            StaticRoute {
                dst: Ipv4Addr::new(10, 17, 0, 0),
                prefix: 16,
                gateway: Ipv4Addr::new(10, 0, 2, 5)
            },
            StaticRoute {
                dst: Ipv4Addr::new(172, 16, 1, 1),
                prefix: 32,
                gateway: Ipv4Addr::new(10, 0, 2, 6)
            },
            StaticRoute {
                dst: Ipv4Addr::new(192, 168, 7, 0),
                prefix: 24,
                gateway: Ipv4Addr::UNSPECIFIED
            },
        ]
    );
    // split across two instances (RFC 3396): concatenated
    let r = reply(ACK, 9, &MAC, OURS, &[(121, &o121[..7]), (121, &o121[7..])]);
    assert_eq!(parse(&r, 9, &MAC).unwrap().1.routes.len(), 4);
    // malformed: width 33, or a truncated entry: ignored, router kept
    for bad in [
        &[33u8, 1, 2, 3, 4, 5, 10, 0, 2, 1][..],
        &[24, 10, 0, 2, 10, 0][..],
    ] {
        let r = reply(ACK, 9, &MAC, OURS, &[(3, &SERVER.octets()), (121, bad)]);
        let (_, l) = parse(&r, 9, &MAC).unwrap();
        assert!(l.routes.is_empty());
        assert_eq!(l.router, Some(SERVER));
    }
    // host bits beyond the width are masked
    assert_eq!(
        classless_routes(&[8, 10, 1, 1, 1, 1]).unwrap()[0].dst,
        Ipv4Addr::new(10, 0, 0, 0)
    );
}

#[test]
fn timers_are_sane_whatever_the_server_says() {
    let l = |lease, t1, t2| Lease {
        lease_secs: lease,
        renew_secs: t1,
        rebind_secs: t2,
        ..Default::default()
    };
    let s = |t: Timers| (t.renew.as_secs(), t.rebind.as_secs(), t.expire.as_secs());
    assert_eq!(s(l(1000, None, None).timers()), (500, 875, 1000));
    assert_eq!(s(l(1000, Some(100), Some(200)).timers()), (100, 200, 1000));
    // T1 after T2, T2 after expiry: defaults
    assert_eq!(s(l(1000, Some(900), Some(800)).timers()), (500, 800, 1000));
    assert_eq!(s(l(1000, None, Some(5000)).timers()), (500, 875, 1000));
    // missing lease time, and a tiny one
    assert_eq!(s(l(0, None, None).timers()), (1800, 3150, 3600));
    assert_eq!(s(l(1, Some(0), Some(0)).timers()), (5, 8, 10));
    assert!(l(u32::MAX, None, None).infinite());
}

#[test]
fn names_from_the_server_must_be_dns_names() {
    for (name, want) in [
        (&b"node-1"[..], "node-1"),
        (b"node-1.example.com.", "node-1.example.com"),
        (b"node\0\0", "node"),
        (b"evil\x1b]0;pwned\x07", ""),
        (b"a\nb", ""),
        (b"-lead", ""),
        (b"", ""),
    ] {
        let r = reply(ACK, 9, &MAC, OURS, &[(12, name), (15, name)]);
        let (_, l) = parse(&r, 9, &MAC).unwrap();
        assert_eq!(l.hostname, want, "{name:?}");
        assert_eq!(l.domain, want, "{name:?}");
    }
    let long = "a".repeat(64);
    let r = reply(ACK, 9, &MAC, OURS, &[(12, long.as_bytes())]);
    assert_eq!(parse(&r, 9, &MAC).unwrap().1.hostname, "");
}

#[test]
fn requests_carry_what_the_protocol_needs() {
    let p = packet(
        7,
        &MAC,
        &Req::Select {
            ip: OURS,
            server: SERVER,
        },
    );
    let s = seen(&p, Dest::Broadcast, 0);
    assert_eq!((s.kind, s.xid, s.requested), (REQUEST, 7, Some(OURS)));
    assert!(s.broadcast_flag);
    assert_eq!(&p[28..34], &MAC);
    assert!(p.len() >= 300);
    // parameter request list asks for T1, T2 and classless routes
    let prl = p.windows(2).position(|w| w == [55, 10]).unwrap();
    assert!(p[prl + 2..prl + 12].contains(&121));
    assert!(p[prl + 2..prl + 12].contains(&58));
    // garbage and short packets are not replies
    assert!(parse(&p, 7, &MAC).is_none(), "a request is not a reply");
    assert!(parse(&p[..100], 7, &MAC).is_none());
    let r = reply(ACK, 7, &MAC, OURS, &[]);
    assert!(parse(&r, 8, &MAC).is_none(), "other xid");
    assert!(parse(&r, 7, &OTHER_MAC).is_none(), "other chaddr");
    let mut r2 = r.clone();
    r2.truncate(243 - 3);
    r2.push(255);
    assert!(parse(&r2, 7, &MAC).is_none(), "no message type");
}

#[test]
fn forged_replies_from_another_host_are_ignored_while_renewing() {
    // our server ignores unicast renewals; a host on the path answers them with a NAK and an
    // ACK for another address: both are ignored, and rebinding reaches the server
    let mut fake = Fake::new(1000, server(1000, |s| s.dest == Dest::Broadcast));
    let attacker = Ipv4Addr::new(10, 0, 2, 66);
    fake.forger = Some(Box::new(move |s: &Seen| {
        if s.kind == REQUEST && s.requested.is_none() && s.dest != Dest::Broadcast {
            let opts = lease_opts(99_999);
            let opts: Vec<(u8, &[u8])> = opts.iter().map(|(c, d)| (*c, d.as_slice())).collect();
            vec![
                (
                    reply(NAK, s.xid, &MAC, Ipv4Addr::UNSPECIFIED, &[]),
                    attacker,
                ),
                (
                    reply(ACK, s.xid, &MAC, Ipv4Addr::new(10, 0, 2, 99), &opts),
                    attacker,
                ),
            ]
        } else {
            vec![]
        }
    }));
    let ev = run(&mut fake);
    assert_eq!(
        kinds(&ev)[..5],
        ["discover", "bound", "renewing", "rebinding", "extended"]
    );
    let Event::Extended(l) = &ev[4] else {
        panic!("{ev:?}")
    };
    assert_eq!(l.address, Some(OURS));
}

#[test]
fn send_failures_are_missed_attempts_not_the_end() {
    // the link cannot send for the first 30 s: each attempt's time is waited out, the trouble
    // is reported, and the client binds once it can send
    let mut fake = Fake::new(100, server(3600, |_| true));
    fake.sends_fail_until = 30;
    let ev = run(&mut fake);
    let k = kinds(&ev);
    assert_eq!(k[..2], ["discover", "trouble"]);
    assert!(k.contains(&"bound"), "{k:?}");
    let Some(Event::Trouble(t)) = ev.get(1) else {
        panic!("{ev:?}")
    };
    assert!(t.contains("Network is unreachable"), "{t}");
    // no spinning: the waits double up to 4 s, so about ten attempts fit in 30 s
    assert!(
        fake.failed_sends <= 12,
        "{} failed sends",
        fake.failed_sends
    );
}

#[test]
fn a_nak_while_requesting_waits_before_discovering_again() {
    let mut fake = Fake::new(
        60,
        Box::new(|s: &Seen| {
            let opts = lease_opts(3600);
            let opts: Vec<(u8, &[u8])> = opts.iter().map(|(c, d)| (*c, d.as_slice())).collect();
            match s.kind {
                DISCOVER => vec![reply(OFFER, s.xid, &MAC, OURS, &opts)],
                _ => vec![reply(NAK, s.xid, &MAC, Ipv4Addr::UNSPECIFIED, &[])],
            }
        }),
    );
    let ev = run(&mut fake);
    assert!(!kinds(&ev).contains(&"bound"));
    let discovers: Vec<u64> = fake
        .log
        .iter()
        .filter(|s| s.kind == DISCOVER)
        .map(|s| s.at)
        .collect();
    assert!(discovers.len() >= 3, "{discovers:?}");
    assert!(
        discovers.windows(2).all(|w| w[1] - w[0] >= 10),
        "restarts after a NAK must wait: {discovers:?}"
    );
}

#[test]
fn a_lease_without_a_subnet_mask_gets_its_classful_prefix() {
    assert_eq!(classful_prefix(Ipv4Addr::new(10, 1, 2, 3)), 8);
    assert_eq!(classful_prefix(Ipv4Addr::new(172, 16, 0, 1)), 16);
    assert_eq!(classful_prefix(Ipv4Addr::new(192, 168, 1, 5)), 24);
    let mut fake = Fake::new(
        5,
        Box::new(|s: &Seen| {
            let opts: &[(u8, &[u8])] = &[(51, &[0, 0, 14, 16]), (54, &[10, 0, 2, 2])];
            match s.kind {
                DISCOVER => vec![reply(OFFER, s.xid, &MAC, OURS, opts)],
                _ => vec![reply(ACK, s.xid, &MAC, OURS, opts)],
            }
        }),
    );
    let ev = run(&mut fake);
    let Event::Bound(l) = &ev[1] else {
        panic!("{ev:?}")
    };
    assert_eq!(l.prefix, 8, "never /0");
}
