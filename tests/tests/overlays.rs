//! Board overlays (docs/formats/overlays.md), declarative: the reference overlays built by
//! base-assets from Debian's boot loaders (`_out/overlays/*.tar.gz`). The Raspberry Pi image
//! boots under `qemu-system-aarch64 -M raspi3b` with the u-boot and device tree taken out of
//! its own ESP, through GRUB, to the ready line; the Rockchip image carries U-Boot at its
//! sectors with the GPT moved past it; the same board through Talos's program protocol, run in
//! the imager's sandbox, gives the same bytes; hostile overlays and programs are refused with
//! exit code 2 and nothing written. Two builds of each overlay image are byte-identical.
#![allow(clippy::unwrap_used)]

use e2e::fixture::{Tar, gzip};
use e2e::*;
use qemu_harness::field;
use std::path::{Path, PathBuf};
use std::process::Command;

fn overlay(name: &str) -> PathBuf {
    let p = root().join("_out/overlays").join(format!("{name}.tar.gz"));
    assert!(p.is_file(), "{} missing (hack/build.sh)", p.display());
    p
}

/// Builds `metal` for arm64 with an overlay (and extra flags), twice; asserts the same bytes;
/// returns the raw image of the first build (decompressed).
fn build_with(ov: &Path, board: &str, extra: &[&str], dir: &Path) -> PathBuf {
    let mut args = vec!["metal", "--arch", "arm64", "--overlay-name", board];
    args.extend(extra);
    build_twice(ov, &args, "metal-arm64.raw.zst", dir)
}

/// Runs `imager ARGS --overlay-image OV` twice; asserts that `file` is the same bytes both
/// times; returns it decompressed from the first build.
fn build_twice(ov: &Path, args: &[&str], file: &str, dir: &Path) -> PathBuf {
    let mut sums = Vec::new();
    for sub in ["a", "b"] {
        let out = dir.join(sub);
        ok(imager()
            .args(args)
            .arg("--overlay-image")
            .arg(ov)
            .arg("--output")
            .arg(&out));
        sums.push(sha256_file(&out.join(file)));
    }
    assert_eq!(sums[0], sums[1], "{args:?}: two builds differ");
    let raw = dir.join("disk.raw");
    decompress(&dir.join("a").join(file), &raw);
    raw
}

/// `len` bytes of `path` at `offset`.
fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut v = vec![0; len];
    f.read_exact(&mut v).unwrap();
    v
}

/// A file of an overlay tarball.
fn overlay_file(name: &str, path: &str) -> Vec<u8> {
    let f = std::fs::File::open(overlay(name)).unwrap();
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(f));
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_string_lossy() == path {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut v).unwrap();
            return v;
        }
    }
    panic!("{path} not in overlay {name}");
}

#[test]
fn rpi_generic_boots_on_raspberry_pi_u_boot_from_its_own_esp() {
    let t = tempfile::tempdir().unwrap();
    let value = t.path().join("meta.yaml");
    std::fs::write(&value, "hostname: pi\n").unwrap();
    // the overlay's own profile (profiles/rpi_generic.yaml) is the base: arm64, GRUB, the
    // board, xz
    let raw = build_twice(
        &overlay("rpi_generic"),
        &[
            "rpi_generic",
            "--extra-kernel-arg",
            "node_runtime.test_poweroff",
            "--meta",
            &format!("0xa=@{}", value.display()),
            "--overlay-option",
            "configTxtAppend=dtparam=audio=on",
        ],
        "metal-arm64.raw.xz",
        t.path(),
    );
    // GRUB-only, as SBC images are
    let p = ok(Command::new("sgdisk").arg("-p").arg(&raw));
    assert!(p.contains("BIOS") && p.contains("BOOT"), "{p}");
    let files = esp_files(&raw, t.path());
    let get = |n: &str| {
        files
            .iter()
            .find(|f| f.0 == n)
            .unwrap_or_else(|| {
                panic!(
                    "{n} not in the ESP: {:?}",
                    files.iter().map(|f| &f.0).collect::<Vec<_>>()
                )
            })
            .1
            .clone()
    };
    assert_eq!(
        get("config.txt"),
        b"arm_64bit=1\nenable_uart=1\nkernel=u-boot.bin\ndtparam=audio=on\n"
    );
    let uboot = get("u-boot.bin");
    assert_eq!(
        uboot,
        overlay_file("rpi_generic", "artifacts/arm64/u-boot/rpi_arm64/u-boot.bin")
    );
    assert!(!get("EFI/boot/BOOTAA64.efi").is_empty());
    // the firmware files come out of the image itself
    let b = boot_raspi(&raw, &files, t.path());
    let console = b.console.join("\n");
    assert!(console.contains("U-Boot"), "{console}");
    assert!(console.contains("GNU GRUB"), "not through GRUB:\n{console}");
    assert!(
        console.contains("meta disk=/dev/mmcblk0"),
        "META not read from the SD card:\n{console}"
    );
    assert_eq!(
        field(&b.line, "meta"),
        Some(format!("0x0a:{}", sha256(b"hostname: pi\n")).as_str()),
        "{}",
        b.line
    );
}

#[test]
fn rockchip_u_boot_sits_at_its_sectors_before_the_partitions() {
    let t = tempfile::tempdir().unwrap();
    let raw = build_with(&overlay("rockchip"), "rockpro64", &[], t.path());
    let disk = std::fs::read(&raw).unwrap();
    let idb = overlay_file(
        "rockchip",
        "artifacts/arm64/u-boot/rockpro64-rk3399/idbloader.img",
    );
    let itb = overlay_file(
        "rockchip",
        "artifacts/arm64/u-boot/rockpro64-rk3399/u-boot.itb",
    );
    assert_eq!(&disk[32768..32768 + idb.len()], &idb[..], "idbloader.img");
    assert_eq!(&disk[8388608..8388608 + itb.len()], &itb[..], "u-boot.itb");
    let v = ok(Command::new("sgdisk").arg("-v").arg(&raw));
    assert!(v.contains("No problems found"), "{v}");
    let l = gpt::read(
        &mut std::fs::File::open(&raw).unwrap(),
        512,
        disk.len() as u64,
    )
    .unwrap();
    // the entry array moved down 20480 sectors; the first partition follows it, after U-Boot
    assert_eq!(l.entries_lba, 2 + 20480);
    let first = l.partitions.iter().map(|p| p.first_lba).min().unwrap();
    assert!(
        first * 512 >= 8388608 + itb.len() as u64,
        "first partition at LBA {first}"
    );
    assert_eq!(first, 22528);
    let files = esp_files(&raw, t.path());
    let dtb = files
        .iter()
        .find(|f| f.0 == "dtb/rockchip/rk3399-rockpro64.dtb")
        .unwrap();
    assert_eq!(
        dtb.1,
        overlay_file(
            "rockchip",
            "artifacts/arm64/dtb/rockchip/rk3399-rockpro64.dtb"
        )
    );
    // the board's console reaches GRUB's entry
    drop(disk);
    let boot = l.partitions.iter().find(|p| p.name == "BOOT").unwrap();
    let img = t.path().join("boot.img");
    extract(&raw, boot.offset(512), boot.size(512), &img);
    let mut r = fat::read::FatReader::open(std::fs::File::open(&img).unwrap(), 0).unwrap();
    let mut cfg = Vec::new();
    for (path, e) in r.walk().unwrap() {
        if path.trim_start_matches('/') == "grub/grub.cfg" {
            r.read_file(&e, &mut cfg).unwrap();
        }
    }
    let cfg = String::from_utf8(cfg).unwrap();
    assert!(
        cfg.contains(" console=tty0 console=ttyS2,1500000n8 "),
        "{cfg}"
    );
}

#[test]
fn qemu_virt_overlay_sets_its_console() {
    let t = tempfile::tempdir().unwrap();
    ok(imager()
        .args([
            "metal",
            "--arch",
            "arm64",
            "--output-kind",
            "cmdline",
            "--overlay-image",
        ])
        .arg(overlay("qemu-virt-arm64"))
        .args(["--overlay-name", "qemu-virt-arm64", "--output"])
        .arg(t.path()));
    // metal's outFormat (.zst) applies to every kind, as in Talos
    let plain = t.path().join("cmdline");
    decompress(&t.path().join("cmdline-metal-arm64.zst"), &plain);
    let c = std::fs::read_to_string(plain).unwrap();
    assert!(
        c.starts_with("talos.platform=metal console=ttyAMA0 "),
        "{c}"
    );
    assert!(!c.contains("console=tty0"), "{c}");
}

#[test]
fn overlay_profiles_are_base_profiles() {
    let t = tempfile::tempdir().unwrap();
    let rockchip = overlay("rockchip");
    // the overlay's profile is the base: no --arch, no --overlay-name needed
    let dump = ok(imager()
        .args(["rockpro64", "--dump-profile", "--overlay-image"])
        .arg(&rockchip));
    for want in [
        "arch: arm64",
        "name: rockpro64",
        "outFormat: .xz",
        "diskSize: 2355101696",
        "bootloader: grub",
    ] {
        assert!(dump.contains(want), "{want}:\n{dump}");
    }
    // --arch still wins over the base, as every flag does
    let dump = ok(imager()
        .args([
            "rockpro64",
            "--arch",
            "amd64",
            "--dump-profile",
            "--overlay-image",
        ])
        .arg(&rockchip));
    assert!(dump.contains("arch: amd64"), "{dump}");
    // an unknown name lists both sets
    let r = run(
        imager()
            .args(["rockpro65", "--dump-profile", "--overlay-image"])
            .arg(&rockchip),
        None,
    );
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{err}");
    assert!(err.contains("the overlay's: rockpro64"), "{err}");
    // the image the profile describes: the board's U-Boot at its sector, the profile's size
    // with the version's BOOT growth (1000 MiB from 1.11, docs/formats/disk-layout.md)
    let raw = build_twice(&rockchip, &["rockpro64"], "metal-arm64.raw.xz", t.path());
    assert_eq!(
        std::fs::metadata(&raw).unwrap().len(),
        1306525696 + (1000 << 20)
    );
    let idb = overlay_file(
        "rockchip",
        "artifacts/arm64/u-boot/rockpro64-rk3399/idbloader.img",
    );
    assert_eq!(read_at(&raw, 32768, idb.len()), idb);
    // an overlay's profile named like a built-in one comes first (Talos's order)
    let board = "version: v1\nboards:\n  b: {}\n";
    let shadow = hostile(
        t.path(),
        "shadow",
        board,
        &[(
            "profiles/metal.yaml",
            b"arch: arm64\nplatform: metal\noutput:\n  kind: cmdline\n  outFormat: raw\n",
        )],
    );
    let dump = ok(imager()
        .args(["metal", "--dump-profile", "--overlay-image"])
        .arg(&shadow));
    assert!(
        dump.contains("kind: cmdline") && dump.contains("arch: arm64"),
        "{dump}"
    );
    // profiles that name host files, re-point the overlay, or do not type are refused
    let cases: [(&str, &[u8], &str); 3] = [
        (
            "host file",
            b"input:\n  kernel:\n    path: /etc/shadow\n",
            "may not set input",
        ),
        (
            "another overlay",
            b"overlay:\n  image:\n    tarballPath: /tmp/x.tar\n",
            "may not set overlay.image",
        ),
        (
            "unknown field",
            b"output:\n  kindd: iso\n",
            "profiles/evil.yaml",
        ),
    ];
    for (i, (what, yaml, needle)) in cases.iter().enumerate() {
        let ov = hostile(
            t.path(),
            &format!("p{i}"),
            board,
            &[("profiles/evil.yaml", yaml)],
        );
        let out = t.path().join(format!("pout{i}"));
        let r = run(
            imager()
                .args(["evil", "--overlay-image"])
                .arg(&ov)
                .arg("--output")
                .arg(&out),
            None,
        );
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(2), "{what}: {err}");
        assert!(err.contains(needle), "{what}: {err}");
        assert!(
            !out.exists() || dir_entries(&out).is_empty(),
            "{what}: left {:?}",
            dir_entries(&out)
        );
    }
}

/// An overlay tarball with `overlay.yaml` = `yaml` and a few artifacts.
fn hostile(dir: &Path, name: &str, yaml: &str, extra: &[(&str, &[u8])]) -> PathBuf {
    let mut t = Tar::new()
        .dir("artifacts", 0o755)
        .file("artifacts/blob.bin", 0o644, &[0xAB; 4096])
        .file("overlay.yaml", 0o644, yaml.as_bytes());
    for (p, d) in extra {
        t = t.file(p, 0o644, d);
    }
    let p = dir.join(format!("{name}.tar.gz"));
    std::fs::write(&p, gzip(&t.finish())).unwrap();
    p
}

#[test]
fn hostile_overlays_are_refused_and_nothing_is_written() {
    let t = tempfile::tempdir().unwrap();
    let board = |body: &str| format!("version: v1\nboards:\n  b:\n{body}");
    let cases: Vec<(&str, String, i32, &str)> = vec![
        (
            "esp target escapes",
            board("    esp:\n      - from: artifacts/blob.bin\n        to: ../../etc/passwd\n"),
            2,
            "not a plain relative path",
        ),
        (
            "esp source escapes",
            board("    esp:\n      - from: ../../../etc/passwd\n        to: x\n"),
            2,
            "not a plain relative path",
        ),
        (
            "blob past the disk end",
            board("    blobs:\n      - from: artifacts/blob.bin\n        offset: 99999999999\n"),
            2,
            "ends past the disk",
        ),
        (
            "blob over the GPT",
            board("    blobs:\n      - from: artifacts/blob.bin\n        offset: 512\n"),
            2,
            "overlaps the MBR and the GPT header",
        ),
        (
            "blob over a partition",
            board("    blobs:\n      - from: artifacts/blob.bin\n        offset: 1048576\n"),
            2,
            "overlaps partition 1 (EFI)",
        ),
        (
            "two blobs overlapping",
            board(
                "    blobs:\n      - from: artifacts/blob.bin\n        offset: 32768\n      - from: artifacts/blob.bin\n        offset: 34816\n",
            ),
            2,
            "overlaps another blob",
        ),
        (
            "unknown field",
            board("    runScript: rm -rf /\n"),
            2,
            "runScript",
        ),
        (
            "control character in a kernel argument",
            board("    kernelArgs: [\"a\\nb\"]\n"),
            2,
            "kernel argument",
        ),
        (
            "missing artifact",
            board("    esp:\n      - from: artifacts/nope.bin\n        to: x\n"),
            2,
            "not in the overlay image",
        ),
        (
            "unknown board",
            "version: v1\nboards:\n  other: {}\n".into(),
            2,
            "not a board",
        ),
    ];
    for (i, (what, yaml, code, needle)) in cases.iter().enumerate() {
        let ov = hostile(t.path(), &format!("o{i}"), yaml, &[]);
        let out = t.path().join(format!("out{i}"));
        let r = run(
            imager()
                .args(["metal", "--arch", "arm64", "--overlay-image"])
                .arg(&ov)
                .args(["--overlay-name", "b", "--output"])
                .arg(&out),
            None,
        );
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(*code), "{what}: {err}");
        assert!(err.contains(needle), "{what}: {err}");
        assert!(
            !out.exists() || dir_entries(&out).is_empty(),
            "{what}: left {:?}",
            dir_entries(&out)
        );
    }
    // a tar entry that climbs out of the image is refused while extracting
    let evil = Tar::new()
        .file("overlay.yaml", 0o644, board("").as_bytes())
        .file("artifacts/../../escape", 0o644, b"x")
        .finish();
    let ov = t.path().join("evil.tar.gz");
    std::fs::write(&ov, gzip(&evil)).unwrap();
    let r = run(
        imager()
            .args(["metal", "--arch", "arm64", "--overlay-image"])
            .arg(&ov)
            .args(["--overlay-name", "b", "--output"])
            .arg(t.path().join("out-evil")),
        None,
    );
    assert_eq!(
        r.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(!t.path().join("escape").exists());
    // a program that needs what the sandbox does not have (a shell) is refused before it runs
    let marker = t.path().join("overlay-ran");
    let prog = Tar::new()
        .dir("installers", 0o755)
        .file(
            "installers/b",
            0o755,
            format!("#!/bin/sh\ntouch {}\n", marker.display()).as_bytes(),
        )
        .finish();
    let ov = t.path().join("prog.tar.gz");
    std::fs::write(&ov, gzip(&prog)).unwrap();
    let r = run(
        imager()
            .args(["metal", "--arch", "arm64", "--overlay-image"])
            .arg(&ov)
            .args(["--overlay-name", "b", "--output"])
            .arg(t.path().join("out-prog")),
        None,
    );
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{err}");
    assert!(
        err.contains("installers/b") && err.contains("not a 64-bit little-endian ELF"),
        "{err}"
    );
    assert!(!marker.exists(), "the script ran on the host");
    // an option the board does not declare
    let r = run(
        imager()
            .args(["metal", "--arch", "arm64", "--overlay-image"])
            .arg(overlay("rpi_generic"))
            .args([
                "--overlay-name",
                "rpi_generic",
                "--overlay-option",
                "nope=1",
                "--output",
            ])
            .arg(t.path().join("out-opt")),
        None,
    );
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{err}");
    assert!(err.contains("overlay.options.nope"), "{err}");
}

/// The rockchip overlay's artifacts with `installers/rockpro64` = our protocol program
/// (overlays/test-installer) and no `overlay.yaml`: a Talos-style overlay.
fn protocol_overlay(dir: &Path) -> PathBuf {
    let prog = std::fs::read(bin("overlay-test-installer")).unwrap();
    let mut t = Tar::new()
        .dir("installers", 0o755)
        .file("installers/rockpro64", 0o755, &prog);
    let f = std::fs::File::open(overlay("rockchip")).unwrap();
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(f));
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches('/')
            .to_string();
        if !path.starts_with("artifacts") {
            continue;
        }
        if e.header().entry_type().is_dir() {
            t = t.dir(&path, 0o755);
        } else {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut v).unwrap();
            t = t.file(&path, 0o644, &v);
        }
    }
    let p = dir.join("protocol.tar.gz");
    std::fs::write(&p, gzip(&t.finish())).unwrap();
    p
}

/// The same board through Talos's protocol (the program run in the sandbox) and through the
/// declarative description: the same image bytes.
#[test]
fn protocol_overlay_gives_the_declarative_image_bytes() {
    let t = tempfile::tempdir().unwrap();
    let declarative = build_with(&overlay("rockchip"), "rockpro64", &[], &t.path().join("d"));
    let ov = protocol_overlay(t.path());
    let protocol = build_with(&ov, "rockpro64", &[], &t.path().join("p"));
    assert_eq!(
        sha256_file(&protocol),
        sha256_file(&declarative),
        "the protocol path and the declarative path differ"
    );
}

/// The sandbox holds: writes outside what the program was given fail, a program that hangs
/// is killed after IMAGER_OVERLAY_TIMEOUT, and it has no network; each build fails with exit
/// code 2 and leaves nothing.
#[test]
fn protocol_sandbox_holds() {
    let t = tempfile::tempdir().unwrap();
    let ov = protocol_overlay(t.path());
    let build = |opts: &[&str], out: &str, timeout: &str| {
        let mut c = imager();
        c.args(["metal", "--arch", "arm64", "--overlay-image"])
            .arg(&ov)
            .args(["--overlay-name", "rockpro64", "--output"])
            .arg(t.path().join(out))
            .env("IMAGER_OVERLAY_TIMEOUT", timeout);
        for o in opts {
            c.args(["--overlay-option", o]);
        }
        let started = std::time::Instant::now();
        let r = run(&mut c, None);
        let out_dir = t.path().join(out);
        assert!(
            !out_dir.exists() || dir_entries(&out_dir).is_empty(),
            "{out}: left {:?}",
            dir_entries(&out_dir)
        );
        (
            r.status.code(),
            String::from_utf8_lossy(&r.stderr).to_string(),
            started.elapsed(),
        )
    };
    let escaped = t.path().join("escaped");
    let (code, err, _) = build(
        &["mode=escape", &format!("escapeTo={}", escaped.display())],
        "out-escape",
        "60",
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("succeeded for []"), "{err}");
    assert!(!escaped.exists(), "the program wrote on the host");
    let (code, err, took) = build(&["mode=hang"], "out-hang", "3");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("did not finish within 3 s and was killed"),
        "{err}"
    );
    assert!(took.as_secs() < 30, "took {took:?}");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (code, err, _) = build(
        &["mode=network", &format!("connectTo=127.0.0.1:{port}")],
        "out-net",
        "60",
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no network to"), "{err}");
    assert!(
        listener.accept().is_err(),
        "the program reached the host's network"
    );
}

/// Installer images carry the overlay as Talos's do (`overlay/artifacts/**`,
/// `overlay/installers/default`, `overlay/extra-options`; and `overlay.yaml` of a declarative
/// one); nothing of it is run at build time; two builds give the same image.
#[test]
fn installer_images_carry_the_overlay() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("base");
    publish_base_layout("arm64", &base);
    let protocol = protocol_overlay(t.path());
    for (ov, board, program) in [
        (overlay("rpi_generic"), "rpi_generic", false),
        (protocol, "rockpro64", true),
    ] {
        let mut digests = Vec::new();
        for sub in ["a", "b"] {
            let out = t.path().join(format!("{board}-{sub}"));
            let profile = format!(
                "baseProfileName: installer\narch: arm64\ninput:\n  baseInstaller:\n    ociPath: {}\noverlay:\n  name: {board}\n  image:\n    tarballPath: {}\n  options:\n    answer: 42\n",
                base.display(),
                ov.display()
            );
            let o = run(
                imager().args(["-", "--output"]).arg(&out),
                Some(profile.as_bytes()),
            );
            assert!(
                o.status.success(),
                "{board}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            digests.push(sha256_file(&out.join("installer-arm64/index.json")));
        }
        assert_eq!(digests[0], digests[1], "{board}: two builds differ");
        let x = last_layer(
            &t.path().join(format!("{board}-a/installer-arm64")),
            &t.path().join(format!("{board}-layer")),
        );
        let extra = std::fs::read_to_string(x.join("overlay/extra-options")).unwrap();
        assert_eq!(extra, r#"{"answer":42}"#);
        if program {
            let p = x.join("overlay/installers/default");
            assert_eq!(
                std::fs::read(&p).unwrap(),
                std::fs::read(bin("overlay-test-installer")).unwrap()
            );
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o755
            );
            assert!(
                x.join("overlay/artifacts/arm64/u-boot/rockpro64-rk3399/u-boot.itb")
                    .is_file()
            );
        } else {
            assert!(x.join("overlay/overlay.yaml").is_file());
            assert_eq!(
                std::fs::read(x.join("overlay/artifacts/arm64/u-boot/rpi_arm64/u-boot.bin"))
                    .unwrap(),
                overlay_file("rpi_generic", "artifacts/arm64/u-boot/rpi_arm64/u-boot.bin")
            );
        }
    }
}
