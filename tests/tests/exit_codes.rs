//! Exit codes and messages of failures a user or an attacker provokes: the documented code,
//! one `error:` line naming the input, each cause said once, no terminal control bytes and no
//! flood echoed back, nothing created where it should not be.
#![allow(clippy::unwrap_used)]

use e2e::*;
use std::path::Path;
use std::process::Command;

fn failing(c: &mut Command, stdin: Option<&[u8]>, code: i32) -> String {
    let out = run(c, stdin);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "exit code; stderr:\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(lines.len(), 1, "one error line:\n{err}");
    err
}

#[test]
fn a_full_disk_is_an_io_failure_said_once() {
    // a 2 MiB tmpfs holds no disk image (CI runs as root, as the README says)
    let mnt = tempfile::tempdir().unwrap();
    ok(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(mnt.path()));
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _u = Unmount(mnt.path());
    for (kind, extra) in [("image", &[][..]), ("iso", &["--output-kind", "iso"][..])] {
        let out = mnt.path().join(kind);
        let err = failing(
            imager().arg("metal").args(extra).arg("--output").arg(&out),
            None,
            6,
        );
        assert_eq!(
            err.matches("No space left on device").count(),
            1,
            "{kind}: the OS error once:\n{err}"
        );
        assert!(
            dir_entries(&out).is_empty(),
            "{kind}: {:?}",
            dir_entries(&out)
        );
    }
}

#[test]
fn echoed_values_are_escaped_and_cut() {
    let out = tempfile::tempdir().unwrap();
    // ESC ] 0 ; … BEL would set the terminal's title; NUL and a newline that starts a fake
    // error line must not pass either
    let yaml =
        "baseProfileName: metal\narch: amd64\nplatform: \"x\\e]0;pwned\\a\\0\\nerror: fake\"\n";
    let err = failing(
        imager().arg("-").arg("--output").arg(out.path()),
        Some(yaml.as_bytes()),
        2,
    );
    assert!(
        !err.contains('\u{1b}') && !err.contains('\u{7}') && !err.contains('\0'),
        "{err:?}"
    );
    assert!(err.contains("\\u{1b}]0;pwned"), "{err}");
    // a 1 MiB value is not echoed whole
    let long = format!(
        "baseProfileName: metal\narch: amd64\nplatform: {}\n",
        "p".repeat(1 << 20)
    );
    let err = failing(
        imager().arg("-").arg("--output").arg(out.path()),
        Some(long.as_bytes()),
        2,
    );
    assert!(err.len() < 4096, "{} bytes echoed", err.len());
    assert!(dir_entries(out.path()).is_empty());
}

#[test]
fn profile_fields_are_checked_at_validation() {
    let out = tempfile::tempdir().unwrap();
    for (yaml, says) in [
        (
            "baseProfileName: [metal]\narch: amd64\n",
            "field baseProfileName: expected a profile name",
        ),
        (
            "baseProfileName: metal\narch: amd64\noutput:\n  imageOptions:\n    diskSize: 18446744073709551000\n",
            "field output.imageOptions.diskSize",
        ),
        (
            "baseProfileName: metal\narch: amd64\noutput:\n  imageOptions:\n    diskSize: 9223372036854775807\n",
            "field output.imageOptions.diskSize",
        ),
        (
            "baseProfileName: metal\narch: amd64\noutput:\n  imageOptions:\n    bootloader: lilo\n",
            "sd-boot, grub, dual-boot",
        ),
        (
            "baseProfileName: metal\narch: amd64\ninput:\n  systemExtensions:\n    - {}\n",
            "input.systemExtensions[0]: one of tarballPath, ociPath or imageRef is required",
        ),
    ] {
        let err = failing(
            imager().arg("-").arg("--output").arg(out.path()),
            Some(yaml.as_bytes()),
            2,
        );
        assert!(err.contains(says), "{yaml}: {err}");
    }
    assert!(dir_entries(out.path()).is_empty());
}

#[test]
fn a_bad_image_reference_touches_no_cache() {
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("out");
    let err = failing(
        imager()
            .args(["metal", "--system-extension-image", "Ghcr.io/UPPER/x:v1"])
            .arg("--output")
            .arg(&out)
            .env("HOME", home.path())
            .env_remove("IMAGER_CACHE_DIR")
            .env_remove("XDG_CACHE_HOME"),
        None,
        2,
    );
    assert!(err.contains("input.systemExtensions[0].imageRef"), "{err}");
    assert_eq!(
        dir_entries(home.path()),
        Vec::<String>::new(),
        "created: {:?}",
        dir_entries(home.path())
    );
}

#[test]
fn boot_refuses_what_it_cannot_boot_before_starting_qemu() {
    let d = tempfile::tempdir().unwrap();
    let text = d.path().join("notes.txt");
    std::fs::write(&text, "hello\n".repeat(10_000)).unwrap();
    let qcow = d.path().join("x.qcow2");
    let mut q = b"QFI\xfb".to_vec();
    q.resize(70_000, 0);
    std::fs::write(&qcow, q).unwrap();
    for (artifact, code, says) in [
        (text.as_path(), 2, "neither a raw disk image nor an ISO"),
        (qcow.as_path(), 2, "a qcow2 image"),
        (d.path(), 2, "not a regular file"),
        (Path::new("/nonexistent.raw"), 6, "/nonexistent.raw"),
    ] {
        let start = std::time::Instant::now();
        let err = failing(
            Command::new(bin("imager")).arg("boot").arg(artifact).args([
                "--until-ready",
                "--timeout",
                "600",
            ]),
            None,
            code,
        );
        assert!(err.contains(says), "{}: {err}", artifact.display());
        assert!(
            start.elapsed().as_secs() < 10,
            "{}: QEMU was started",
            artifact.display()
        );
    }
}
