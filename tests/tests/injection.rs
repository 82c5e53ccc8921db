//! No boot-configuration injection: kernel arguments and names are checked where they enter
//! (flags or profile), the finished command line against the boot protocol's length, and
//! every value that lands in a loader entry, grub.cfg or an iPXE script goes through that
//! format's quoting or refusal. Each refusal: exit 2, one `error:` line naming the field, no
//! file written, in bounded time.
#![allow(clippy::unwrap_used)]

use e2e::*;
use std::time::Instant;

fn refused(name: &str, args: &[String], stdin: Option<&str>, says: &[&str]) {
    let out = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let mut c = imager();
    c.args(args).arg("--output").arg(out.path());
    let r = run(&mut c, stdin.map(str::as_bytes));
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{name}: exit code:\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(lines.len(), 1, "{name}: one error line:\n{err}");
    for s in says {
        assert!(err.contains(s), "{name}: message lacks {s:?}:\n{err}");
    }
    assert!(err.len() < 4096, "{name}: {} bytes of message", err.len());
    assert!(
        dir_entries(out.path()).is_empty(),
        "{name}: wrote {:?}",
        dir_entries(out.path())
    );
    assert!(
        start.elapsed().as_secs() < 20,
        "{name}: took {:?}",
        start.elapsed()
    );
}

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn kernel_arguments_are_checked_where_they_enter() {
    let field = "customization.extraKernelArgs[0]";
    for (what, arg, why) in [
        (
            "newline",
            "console=ttyS0\ninitrd /evil",
            "control characters",
        ),
        ("NUL", "a\0b", "control characters"),
        ("ESC", "a\u{1b}[2Jb", "control characters"),
        ("unbalanced quote", "a=\"b", "unbalanced double quote"),
        ("empty", "", "empty argument"),
        ("space", "a b", "white space"),
    ] {
        // NUL cannot pass through argv: that one only comes in a profile
        if !arg.contains('\0') {
            for kind in ["image", "iso", "pxe", "cmdline"] {
                refused(
                    &format!("{what} ({kind}, flag)"),
                    &args(&["metal", "--output-kind", kind, "--extra-kernel-arg", arg]),
                    None,
                    &[field, why],
                );
            }
        }
        let yaml = format!(
            "baseProfileName: metal\narch: amd64\ncustomization:\n  extraKernelArgs:\n    - {}\noutput:\n  imageOptions:\n    bootloader: grub\n",
            serde_json::to_string(arg).unwrap()
        );
        refused(
            &format!("{what} (profile)"),
            &args(&["-"]),
            Some(&yaml),
            &[field, why],
        );
    }
}

#[test]
fn command_line_length_is_bounded_by_the_boot_protocol() {
    // 5 KiB of arguments: refused at the profile, naming the limit
    let many: Vec<String> = (0..600)
        .map(|i| format!("--extra-kernel-arg=a{i}=xxxx"))
        .collect();
    let mut a = args(&["metal"]);
    a.extend(many);
    refused(
        "600 arguments",
        &a,
        None,
        &["customization.extraKernelArgs"],
    );
    // 240 000 small arguments: refused as fast (no quadratic merge first)
    let yaml = format!(
        "baseProfileName: metal\narch: amd64\ncustomization:\n  extraKernelArgs: [{}]\n",
        vec!["x"; 240_000].join(",")
    );
    refused(
        "240 000 arguments",
        &args(&["-"]),
        Some(&yaml),
        &["customization.extraKernelArgs", "more than 512"],
    );
    // META that only fits a META partition: on the command line it is named as the cause
    // incompressible: gzip does not save it
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let meta: String = (0..150 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect();
    let yaml = format!(
        "baseProfileName: metal\narch: amd64\ncustomization:\n  metaContents:\n    - key: 12\n      value: {meta}\noutput:\n  kind: cmdline\n"
    );
    refused(
        "150 KiB of META as INSTALLER_META_BASE64",
        &args(&["-"]),
        Some(&yaml),
        &[
            "kernel command line",
            "META",
            "INSTALLER_META_BASE64",
            "2047",
        ],
    );
}

#[test]
fn names_are_checked_at_the_profile() {
    for layout in ["grub", "sd-boot", "dual-boot"] {
        let yaml = format!(
            "baseProfileName: metal\narch: amd64\nname: \"x\\\" {{\\ninsmod evil\\nmenuentry y {{\"\noutput:\n  imageOptions:\n    bootloader: {layout}\n"
        );
        refused(
            &format!("name ({layout})"),
            &args(&["-"]),
            Some(&yaml),
            &["field name"],
        );
    }
    let yaml = "baseProfileName: metal\narch: amd64\nversion: \"v1.14.0/../../x\"\n";
    refused("version", &args(&["-"]), Some(yaml), &["field version"]);
}

#[test]
fn ipxe_scripts_carry_nothing_ipxe_would_interpret() {
    for arg in ["x=${net0/ip}", "a||reboot", "b&&shell"] {
        refused(
            arg,
            &args(&["metal", "--output-kind", "pxe", "--extra-kernel-arg", arg]),
            None,
            &["iPXE"],
        );
    }
    // the same arguments are fine where no iPXE script is written
    let out = tempfile::tempdir().unwrap();
    ok(imager()
        .args([
            "metal",
            "--output-kind",
            "cmdline",
            "--extra-kernel-arg",
            "x=${y}",
        ])
        .arg("--output")
        .arg(out.path()));
}
