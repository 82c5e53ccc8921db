//! `test-service`: a tiny, std-only program that the end-to-end tests run as an extension
//! service inside node-runtime's containers. Its behaviour is chosen by the arguments:
//!
//! - `hello` — prints `hello from test-service` and exits 0;
//! - `exit CODE` — exits with CODE;
//! - `sleep-exit SECS CODE` — sleeps SECS seconds, then exits with CODE;
//! - `fail-until N STATEFILE` — increments the counter kept in STATEFILE and prints
//!   `attempt=K`; exits 1 while K < N, 0 from then on;
//! - `check-pid1` — prints `pid=<own pid> root=<ro|rw> proc=<yes|no> greeting=<$GREETING|->`:
//!   its pid is 1 in the service's PID namespace, `root` says whether a file can be created
//!   in `/`, `proc` whether `/proc/self` is this process;
//! - `serve PORT` — listens on TCP PORT and answers each connection with one line.
//!
//! Exit code 2 means bad arguments.

use std::io::Write;
use std::time::Duration;

fn usage() -> ! {
    eprintln!(
        "usage: test-service hello | exit CODE | sleep-exit SECS CODE | fail-until N STATEFILE | check-pid1 | serve PORT"
    );
    std::process::exit(2)
}

fn num<T: std::str::FromStr>(arg: Option<&String>) -> T {
    match arg.and_then(|a| a.parse().ok()) {
        Some(v) => v,
        None => usage(),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else { usage() };
    match cmd.as_str() {
        "hello" => println!("hello from test-service"),
        "exit" => std::process::exit(num(args.get(1))),
        "sleep-exit" => {
            let secs: u64 = num(args.get(1));
            let code: i32 = num(args.get(2));
            std::thread::sleep(Duration::from_secs(secs));
            println!("exiting with {code} after {secs} s");
            std::process::exit(code)
        }
        "fail-until" => {
            let n: u64 = num(args.get(1));
            let Some(state) = args.get(2) else { usage() };
            let count = std::fs::read_to_string(state)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .unwrap_or(0)
                + 1;
            if let Err(e) = std::fs::write(state, format!("{count}\n")) {
                eprintln!("writing {state}: {e}");
                std::process::exit(3)
            }
            println!("attempt={count}");
            std::process::exit(if count < n { 1 } else { 0 })
        }
        "check-pid1" => {
            let probe = "/.test-service-probe";
            let root = match std::fs::write(probe, b"x") {
                Ok(()) => {
                    let _ = std::fs::remove_file(probe);
                    "rw"
                }
                Err(_) => "ro",
            };
            let proc_ok = std::fs::read_link("/proc/self")
                .map(|p| p.to_string_lossy() == "1")
                .unwrap_or(false);
            let greeting = std::env::var("GREETING").unwrap_or_else(|_| "-".into());
            println!(
                "pid={} root={root} proc={} greeting={greeting}",
                std::process::id(),
                if proc_ok { "yes" } else { "no" }
            );
        }
        "serve" => {
            let port: u16 = num(args.get(1));
            let l = match std::net::TcpListener::bind(("0.0.0.0", port)) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("listening on {port}: {e}");
                    std::process::exit(3)
                }
            };
            println!("listening on {port}");
            for mut c in l.incoming().flatten() {
                let _ = c.write_all(b"hello from test-service\n");
            }
        }
        _ => usage(),
    }
}
