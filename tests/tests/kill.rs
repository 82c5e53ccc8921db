//! State after a kill: builds killed with SIGKILL at many points leave nothing that a later
//! build does not remove, SIGINT/SIGTERM clean up before exiting, and the output directory
//! then holds exactly the complete artifacts of the last build — never a temporary file, a
//! staging tree or a partial artifact.
#![allow(clippy::unwrap_used)]

use e2e::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn start(out: &Path, args: &[&str]) -> Child {
    let mut c = imager();
    c.args(args)
        .arg("--output")
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c.spawn().unwrap()
}

fn build_dirs(dir: &Path) -> Vec<String> {
    dir_entries(dir)
        .into_iter()
        .filter(|n| n.starts_with(".imager-build."))
        .collect()
}

fn wait_bounded(c: &mut Child, secs: u64) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(s) = c.try_wait().unwrap() {
            return s;
        }
        assert!(
            t.elapsed().as_secs() < secs,
            "imager did not exit within {secs} s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(c: &Child, sig: &str) {
    ok(Command::new("kill").args(["-s", sig, &c.id().to_string()]));
}

#[test]
fn killed_builds_leave_nothing_the_next_build_keeps() {
    let args = ["metal", "--arch", "amd64"];
    // how long a whole build takes here, to spread the kills over it
    let reference = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let st = wait_bounded(&mut start(reference.path(), &args), 600);
    assert!(st.success());
    let full = t.elapsed();
    let want = dir_entries(reference.path());
    assert_eq!(want, vec!["metal-amd64.raw.zst"]);
    let digest = sha256_file(&reference.path().join("metal-amd64.raw.zst"));

    let out = tempfile::tempdir().unwrap();
    let out = out.path();
    // SIGKILL at 12 points spread over the build (a fixed pseudo-random sequence)
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..12 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let at = full.mul_f64((x % 1000) as f64 / 1000.0);
        let mut c = start(out, &args);
        std::thread::sleep(at);
        let _ = c.kill();
        let _ = c.wait();
    }
    // SIGINT and SIGTERM, once the build has its private directory: it cleans up itself
    // before it exits with 128 + the signal
    for (sig, code) in [("INT", 130), ("TERM", 143)] {
        let before = build_dirs(out);
        let mut c = start(out, &args);
        let t = Instant::now();
        while build_dirs(out).iter().all(|d| before.contains(d)) {
            assert!(t.elapsed().as_secs() < 60, "no build directory appeared");
            std::thread::sleep(Duration::from_millis(2));
        }
        signal(&c, sig);
        let st = wait_bounded(&mut c, 60);
        assert_eq!(st.code(), Some(code), "SIG{sig}");
    }
    let st = wait_bounded(&mut start(out, &args), 600);
    assert!(st.success());
    assert_eq!(
        dir_entries(out),
        want,
        "the output directory after the last build"
    );
    assert_eq!(sha256_file(&out.join("metal-amd64.raw.zst")), digest);
}

#[test]
fn an_interrupted_build_removes_its_own_files() {
    let out = tempfile::tempdir().unwrap();
    let mut c = start(out.path(), &["iso", "--arch", "amd64"]);
    // wait until the build has its private directory, then interrupt it
    let t = Instant::now();
    while build_dirs(out.path()).is_empty() {
        assert!(t.elapsed().as_secs() < 60, "no build directory appeared");
        if c.try_wait().unwrap().is_some() {
            panic!("the build ended before it could be interrupted");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    signal(&c, "INT");
    let st = wait_bounded(&mut c, 60);
    assert_eq!(st.code(), Some(130), "exit code after SIGINT");
    assert_eq!(dir_entries(out.path()), Vec::<String>::new(), "left behind");
}
