//! Dynamic VHDs (qemu's default subformat, what Talos accepts without options): readable by
//! `qemu-img`, identical in content to the raw image, byte-identical on rebuild.
#![allow(clippy::unwrap_used)]

use e2e::*;
use std::process::Command;

fn build(format: &str, opts: &str, out: &std::path::Path) -> std::path::PathBuf {
    let yaml = format!(
        "baseProfileName: metal\narch: amd64\noutput:\n  imageOptions:\n    diskSize: 1306525696\n    bootloader: sd-boot\n    diskFormat: {format}\n    diskFormatOptions: '{opts}'\n  outFormat: raw\n"
    );
    let mut c = imager();
    c.arg("-").arg("--output").arg(out);
    let r = run(&mut c, Some(yaml.as_bytes()));
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    out.join(format!("metal-amd64.{format}"))
}

#[test]
fn dynamic_vhd_matches_the_raw_image_and_rebuilds_identically() {
    let d = tempfile::tempdir().unwrap();
    let raw = build("raw", "", &d.path().join("raw"));
    let a = build("vhd", "", &d.path().join("a"));
    let b = build("vhd", "subformat=dynamic", &d.path().join("b"));
    assert_eq!(sha256_file(&a), sha256_file(&b), "two builds differ");
    // dynamic, not fixed: the file is far smaller than the disk, and says so
    let raw_len = std::fs::metadata(&raw).unwrap().len();
    let len = std::fs::metadata(&a).unwrap().len();
    assert!(len < raw_len / 4, "{len} bytes: not a dynamic VHD");
    let info = ok(Command::new("qemu-img").args(["info", "-f", "vpc"]).arg(&a));
    assert!(info.contains(&format!("({raw_len} bytes)")), "{info}");
    // qemu has no consistency check for vpc (exit 63, "does not support checks"): the
    // header and table are validated by opening the image (info) and reading every block
    // (compare)
    let chk = run(
        Command::new("qemu-img")
            .args(["check", "-f", "vpc"])
            .arg(&a),
        None,
    );
    let text = String::from_utf8_lossy(&chk.stderr);
    assert!(
        chk.status.success()
            || (chk.status.code() == Some(63) && text.contains("does not support checks")),
        "qemu-img check: {text}"
    );
    let cmp = ok(Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "vpc"])
        .arg(&raw)
        .arg(&a));
    assert!(cmp.contains("Images are identical"), "{cmp}");
}
