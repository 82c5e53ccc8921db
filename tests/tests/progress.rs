//! Progress on stderr (imager/src/progress.rs): redrawn lines on a terminal (run under
//! `script`, which gives the imager a pseudo-terminal), one summary line per step in a pipe,
//! nothing extra with --json.
#![allow(clippy::unwrap_used)]

use e2e::*;
use std::process::Command;

#[test]
fn a_terminal_gets_bars_a_pipe_gets_lines_json_gets_nothing() {
    let t = tempfile::tempdir().unwrap();
    // a pipe: one summary line per step
    let o = run(
        imager()
            .args(["metal", "--output"])
            .arg(t.path().join("pipe")),
        None,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    for step in [
        "imager: write metal-amd64.raw: ",
        "imager: compress metal-amd64.raw.zst: ",
    ] {
        assert_eq!(
            err.lines().filter(|l| l.starts_with(step)).count(),
            1,
            "{step} in\n{err}"
        );
    }
    assert!(!err.contains('\r') && !err.contains('\x1b'), "{err:?}");
    // --json: the report, no progress
    let o = run(
        imager()
            .args(["metal", "--json", "--output"])
            .arg(t.path().join("json")),
        None,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("compress"), "{err}");
    // a terminal: the compression step is redrawn in place, then summarised
    let cmd = format!(
        "{} metal --output {}",
        bin("imager").display(),
        t.path().join("tty").display()
    );
    let o = run(
        Command::new("script")
            .args(["-qfec", &cmd, "/dev/null"])
            .env("IMAGER_INSTALL_DIR", assets())
            .env("SOURCE_DATE_EPOCH", "1700000000"),
        None,
    );
    let tty = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{tty}");
    assert!(
        tty.contains("\r\x1b[2Kcompress metal-amd64.raw.zst "),
        "no redrawn line in {tty:?}"
    );
    assert!(
        tty.contains("imager: compress metal-amd64.raw.zst: "),
        "{tty:?}"
    );
}
