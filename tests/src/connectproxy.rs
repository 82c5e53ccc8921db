//! A forward proxy of the tests (std only): HTTP `CONNECT` tunnels, which is how ureq (and
//! curl and Go for `https://`) use an HTTP proxy. Every tunnel goes to one fixed upstream,
//! whatever host the client named, so a client can reach a registry under a name only the
//! proxy "resolves"; the names asked for are recorded. Anything but `CONNECT` gets a `405`.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// The proxy: listening on 127.0.0.1 (10.0.2.2 for QEMU guests on user networking) until the
/// test process ends.
pub struct ConnectProxy {
    port: u16,
    targets: Arc<Mutex<Vec<String>>>,
}

impl ConnectProxy {
    /// Starts a proxy that tunnels every `CONNECT` to `upstream`.
    pub fn start(upstream: SocketAddr) -> ConnectProxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let targets = Arc::new(Mutex::new(Vec::new()));
        let t = targets.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { continue };
                let t = t.clone();
                std::thread::spawn(move || tunnel(s, upstream, &t));
            }
        });
        ConnectProxy { port, targets }
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `host:port` of every `CONNECT` so far, in order.
    pub fn targets(&self) -> Vec<String> {
        self.targets.lock().unwrap().clone()
    }
}

fn tunnel(mut client: TcpStream, upstream: SocketAddr, targets: &Mutex<Vec<String>>) {
    // the request head, byte by byte so that nothing of the tunnel is read with it
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match client.read(&mut b) {
            Ok(1) if head.len() < 16 << 10 => head.push(b[0]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut first = text.lines().next().unwrap_or("").split(' ');
    let (Some("CONNECT"), Some(target)) = (first.next(), first.next()) else {
        let _ = client.write_all(
            b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        );
        return;
    };
    targets.lock().unwrap().push(target.to_string());
    let Ok(server) = TcpStream::connect(upstream) else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n");
        return;
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .is_err()
    {
        return;
    }
    let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut s2);
        let _ = s2.shutdown(Shutdown::Write);
    });
    let (mut s, mut c) = (server, client);
    let _ = std::io::copy(&mut s, &mut c);
    let _ = c.shutdown(Shutdown::Write);
    let _ = up.join();
}
