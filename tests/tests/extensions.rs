//! System extensions end to end (docs/formats/extensions.md): an OCI-layout extension (two layers
//! with whiteouts, a file under /usr/local, a modules-load.d entry, two kernel modules from the
//! Debian tree that the base image lacks, a firmware blob and Intel microcode), a zstd tarball
//! extension and an embedded machine configuration go into a PXE set that
//!
//! - is byte-identical when built twice;
//! - has the layout of docs/formats/extensions.md: uncompressed microcode cpio ‖ the base
//!   initramfs unchanged ‖ a zstd cpio with the squashfs images, extensions.yaml and the firmware;
//! - holds squashfs images that `unsquashfs` extracts to exactly the input trees (whiteouts
//!   applied, firmware and microcode moved out, everything root-owned), and a modules.dep
//!   layer whose modules.dep / modules.alias equal `depmod -b` on the same merged tree;
//! - boots: node-runtime stacks the layers, reports each extension, sees the files, has the
//!   firmware, loads the extension's virtio_balloon by the modalias of a QEMU balloon device
//!   and its dummy module from the extension's modules-load.d.
#![allow(clippy::unwrap_used)]

use e2e::fixture::{Tar, gzip, manifest, oci_layout};
use e2e::*;
use qemu_harness::{Firmware, Machine, field};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const HELLO: &[u8] = b"hello from an extension\n";
const FW: &[u8] = b"\x7fFIRMWARE test blob\n";
const UCODE: &[u8] = b"not really Intel microcode\n";
const CONFIG: &str = "version: v1alpha1\nmachine:\n  type: worker\n";
const LABEL: &str = "system_u:object_r:system_extension_t:s0";

fn kernel_tree() -> (String, PathBuf) {
    let base = kernel_root().join("lib/modules");
    let kvers = dir_entries(&base);
    assert_eq!(
        kvers.len(),
        1,
        "one kernel in {} (hack/deps.sh)",
        base.display()
    );
    let kver = kvers[0].clone();
    (kver.clone(), base.join(kver))
}

struct Inputs {
    _dir: tempfile::TempDir,
    oci: PathBuf,
    tarball: PathBuf,
    config: PathBuf,
    balloon: Vec<u8>,
    dummy: Vec<u8>,
    kver: String,
}

fn inputs() -> Inputs {
    let dir = tempfile::tempdir().unwrap();
    let (kver, ktree) = kernel_tree();
    let balloon = std::fs::read(ktree.join("kernel/drivers/virtio/virtio_balloon.ko")).unwrap();
    let dummy = std::fs::read(ktree.join("kernel/drivers/net/dummy.ko")).unwrap();
    let m = format!("rootfs/usr/lib/modules/{kver}");
    let l1 = Tar::new()
        .file(
            "manifest.yaml",
            0o644,
            manifest("hello", "1.2.3", ">= v1.9.0").as_bytes(),
        )
        .dir("rootfs", 0o755)
        .dir("rootfs/usr", 0o755)
        .dir("rootfs/usr/local", 0o755)
        .dir("rootfs/usr/local/share", 0o755)
        .dir("rootfs/usr/local/share/hello", 0o755)
        .file("rootfs/usr/local/share/hello/hello.txt", 0o644, HELLO)
        .file(
            "rootfs/usr/local/share/hello/gone.txt",
            0o644,
            b"deleted by layer 2\n",
        )
        .labelled_file(
            "rootfs/usr/local/share/hello/labelled",
            0o600,
            b"l\n",
            LABEL,
        )
        .symlink("rootfs/usr/local/share/hello/link", "hello.txt")
        .dir("rootfs/usr/local/bin", 0o755)
        .file("rootfs/usr/local/bin/tool", 0o755, b"#!/bin/true\n")
        .dir("rootfs/usr/local/lib", 0o755)
        .dir("rootfs/usr/local/lib/modules-load.d", 0o755)
        .file(
            "rootfs/usr/local/lib/modules-load.d/hello.conf",
            0o644,
            b"# test\ndummy\n",
        )
        .dir("rootfs/usr/lib", 0o755)
        .dir("rootfs/usr/lib/modules", 0o755)
        .dir(&m, 0o755)
        .dir(&format!("{m}/extras"), 0o755)
        .file(&format!("{m}/extras/virtio_balloon.ko"), 0o644, &balloon)
        .file(&format!("{m}/extras/dummy.ko"), 0o644, &dummy)
        .dir("rootfs/usr/lib/firmware", 0o755)
        .dir("rootfs/usr/lib/firmware/hello", 0o755)
        .file("rootfs/usr/lib/firmware/hello/fw.bin", 0o644, FW)
        .dir("rootfs/usr/lib/firmware/intel-ucode", 0o755)
        .file("rootfs/usr/lib/firmware/intel-ucode/06-55-04", 0o644, UCODE)
        .finish();
    let l2 = Tar::new()
        .file("rootfs/usr/local/share/hello/.wh.gone.txt", 0o644, b"")
        .file(
            "rootfs/usr/local/share/hello/layer2.txt",
            0o644,
            b"from layer 2\n",
        )
        .finish();
    let oci = dir.path().join("hello-oci");
    oci_layout(
        &oci,
        &[
            ("arm64", vec![gzip(b"wrong arch")]),
            ("amd64", vec![gzip(&l1), l2]),
        ],
    );
    let b = Tar::new()
        .file(
            "manifest.yaml",
            0o644,
            manifest("bee", "0.1.0", ">= 1.10.0 < 2.0.0").as_bytes(),
        )
        .dir("rootfs", 0o755)
        .dir("rootfs/usr", 0o755)
        .dir("rootfs/usr/local", 0o755)
        .file("rootfs/usr/local/bee.txt", 0o640, b"bee\n")
        .finish();
    let tarball = dir.path().join("bee.tar.zst");
    std::fs::write(&tarball, zstd::encode_all(&b[..], 3).unwrap()).unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    Inputs {
        _dir: dir,
        oci,
        tarball,
        config,
        balloon,
        dummy,
        kver,
    }
}

fn build_pxe(i: &Inputs, out: &Path) {
    ok(imager()
        .args(["metal", "--output-kind", "pxe", "--output"])
        .arg(out)
        .arg("--system-extension-image")
        .arg(&i.oci)
        .arg("--system-extension-image")
        .arg(&i.tarball)
        .arg("--embedded-config-path")
        .arg(&i.config)
        .args(["--extra-kernel-arg", "console=ttyS0"])
        .args(["--extra-kernel-arg", "node_runtime.test_poweroff"])
        .args([
            "--extra-kernel-arg",
            "node_runtime.test_stat=/usr/local/share/hello/hello.txt,/usr/local/share/hello/gone.txt,/usr/local/share/hello/layer2.txt,/usr/local/bee.txt,/usr/local/etc/talos/config.yaml,/usr/lib/firmware/hello/fw.bin,/sys/module/virtio_balloon,/sys/module/dummy",
        ]));
}

/// Splits the built initramfs into (microcode cpio entries, base part, zstd cpio entries).
fn split(initramfs: &[u8], base_len: usize) -> (Vec<cpio::Entry>, Vec<u8>, Vec<cpio::Entry>) {
    assert_eq!(
        &initramfs[..6],
        b"070701",
        "starts with an uncompressed cpio"
    );
    let early = cpio::read_all(initramfs).unwrap();
    // the early archive is padded to 512 bytes; find where the base (xz) starts
    let start = (0..initramfs.len())
        .step_by(512)
        .find(|&o| initramfs[o..].starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]))
        .unwrap();
    let base = initramfs[start..start + base_len].to_vec();
    let rest = &initramfs[start + base_len..];
    assert_eq!(&rest[..4], &[0x28, 0xb5, 0x2f, 0xfd], "then a zstd segment");
    let late = cpio::read_all(zstd::stream::read::Decoder::new(rest).unwrap()).unwrap();
    (early, base, late)
}

fn unsquash(img: &[u8], dir: &Path) -> PathBuf {
    let f = dir.with_extension("sqsh");
    std::fs::write(&f, img).unwrap();
    ok(Command::new("unsquashfs")
        .args(["-no-progress", "-d"])
        .arg(dir)
        .arg(&f));
    // every inode root-owned, every mtime SOURCE_DATE_EPOCH
    let list = ok(Command::new("unsquashfs").args(["-lln", "-UTC"]).arg(&f));
    for l in list.lines().filter(|l| l.starts_with(['d', '-', 'l'])) {
        assert!(l.contains(" 0/0 "), "not root-owned: {l}");
        assert!(
            l.contains("2023-11-14 22:13"),
            "mtime is not SOURCE_DATE_EPOCH: {l}"
        );
    }
    dir.to_path_buf()
}

/// `(relative path, mode, content or link target)` of a directory tree.
fn tree(dir: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    use std::os::unix::fs::PermissionsExt;
    let mut m = BTreeMap::new();
    fn walk(root: &Path, d: &Path, m: &mut BTreeMap<String, (u32, Vec<u8>)>) {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let mode = md.permissions().mode() & 0o7777;
            if md.file_type().is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                m.insert(rel, (0o777, t.to_string_lossy().as_bytes().to_vec()));
            } else if md.is_dir() {
                m.insert(rel, (mode, Vec::new()));
                walk(root, &p, m);
            } else {
                m.insert(rel, (mode, std::fs::read(&p).unwrap()));
            }
        }
    }
    walk(dir, dir, &mut m);
    m
}

#[test]
fn extensions_build_reproducibly_match_the_reference_tools_and_boot() {
    let i = inputs();
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    build_pxe(&i, &a);
    build_pxe(&i, &b);
    for f in dir_entries(&a) {
        assert_eq!(
            sha256_file(&a.join(&f)),
            sha256_file(&b.join(&f)),
            "{f} differs between builds"
        );
    }
    let initramfs = std::fs::read(a.join("initramfs-amd64.xz")).unwrap();
    let base = std::fs::read(assets().join("amd64/initramfs.xz")).unwrap();
    let (early, base_part, late) = split(&initramfs, base.len());
    assert!(
        base_part == base,
        "the base initramfs is embedded unchanged"
    );
    let names: Vec<&str> = early.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "kernel",
            "kernel/x86",
            "kernel/x86/microcode",
            "kernel/x86/microcode/GenuineIntel.bin"
        ]
    );
    assert_eq!(early[3].data, UCODE);
    let names: Vec<&str> = late.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "0.sqsh",
            "1.sqsh",
            "2.sqsh",
            "extensions.yaml",
            "modules.dep.sqsh",
            "usr",
            "usr/lib",
            "usr/lib/firmware",
            "usr/lib/firmware/hello",
            "usr/lib/firmware/hello/fw.bin",
            // emptied by the microcode move, then moved with the firmware, as in Talos
            "usr/lib/firmware/intel-ucode"
        ]
    );
    let get = |n: &str| &late.iter().find(|e| e.name == n).unwrap().data;
    assert_eq!(get("usr/lib/firmware/hello/fw.bin"), FW);
    for e in &late {
        assert_eq!((e.uid, e.gid, e.mtime), (0, 0, 1_700_000_000), "{}", e.name);
    }

    // extensions.yaml: every layer in order with its metadata
    let yaml = String::from_utf8(get("extensions.yaml").clone()).unwrap();
    let cfg = sysext::Config::parse(&yaml).unwrap();
    let layers: Vec<(&str, &str, &str)> = cfg
        .layers
        .iter()
        .map(|l| {
            (
                l.image.as_str(),
                l.metadata.name.as_str(),
                l.metadata.version.as_str(),
            )
        })
        .collect();
    let cfg_digest = sha256(CONFIG.as_bytes());
    assert_eq!(
        layers,
        [
            ("0.sqsh", "hello", "1.2.3"),
            ("1.sqsh", "bee", "0.1.0"),
            ("2.sqsh", "embedded-config", cfg_digest.as_str()),
            ("modules.dep.sqsh", "modules.dep", i.kver.as_str()),
        ]
    );
    assert!(
        yaml.contains("              Test extension hello.\n"),
        "{yaml}"
    );
    assert_eq!(cfg.layers[2].metadata.author, "Imager");
    assert_eq!(
        cfg.layers[3].metadata.description,
        "Combined modules.dep for all extensions"
    );

    // squashfs images: unsquashfs gives exactly the flattened input
    let x = t.path().join("x");
    std::fs::create_dir_all(&x).unwrap();
    let hello = tree(&unsquash(get("0.sqsh"), &x.join("0")));
    let m = format!("usr/lib/modules/{}", i.kver);
    let expect: BTreeMap<String, (u32, Vec<u8>)> = [
        ("usr", 0o755, &b""[..]),
        ("usr/lib", 0o755, b""),
        ("usr/lib/modules", 0o755, b""),
        (&m, 0o755, b""),
        (&format!("{m}/extras"), 0o755, b""),
        (&format!("{m}/extras/dummy.ko"), 0o644, &i.dummy),
        (&format!("{m}/extras/virtio_balloon.ko"), 0o644, &i.balloon),
        ("usr/local", 0o755, b""),
        ("usr/local/bin", 0o755, b""),
        ("usr/local/bin/tool", 0o755, b"#!/bin/true\n"),
        ("usr/local/lib", 0o755, b""),
        ("usr/local/lib/modules-load.d", 0o755, b""),
        (
            "usr/local/lib/modules-load.d/hello.conf",
            0o644,
            b"# test\ndummy\n",
        ),
        ("usr/local/share", 0o755, b""),
        ("usr/local/share/hello", 0o755, b""),
        ("usr/local/share/hello/hello.txt", 0o644, HELLO),
        ("usr/local/share/hello/labelled", 0o600, b"l\n"),
        ("usr/local/share/hello/layer2.txt", 0o644, b"from layer 2\n"),
        ("usr/local/share/hello/link", 0o777, b"hello.txt"),
    ]
    .into_iter()
    .map(|(p, m, c)| (p.to_string(), (m, c.to_vec())))
    .collect();
    assert_eq!(hello, expect, "0.sqsh differs from the flattened extension");
    // SELinux labels: from the PAX header, and the embedded config's fixed one (unsquashfs
    // extracts xattrs when run as root)
    let label = |p: &Path| {
        xattr::get(p, "security.selinux")
            .unwrap()
            .unwrap_or_default()
    };
    assert_eq!(
        label(&x.join("0/usr/local/share/hello/labelled")),
        LABEL.as_bytes()
    );
    assert!(label(&x.join("0/usr/local/share/hello/hello.txt")).is_empty());
    let bee = tree(&unsquash(get("1.sqsh"), &x.join("1")));
    assert_eq!(bee["usr/local/bee.txt"], (0o640, b"bee\n".to_vec()));
    let cfg_tree = tree(&unsquash(get("2.sqsh"), &x.join("2")));
    assert_eq!(
        cfg_tree["usr/local/etc/talos/config.yaml"],
        (0o400, CONFIG.as_bytes().to_vec())
    );
    assert_eq!(
        label(&x.join("2/usr/local/etc/talos/config.yaml")),
        b"system_u:object_r:system_state_t:s0"
    );
    // modules.dep layer = depmod -b on the same merged tree
    let deps = tree(&unsquash(get("modules.dep.sqsh"), &x.join("deps")));
    let dep_files: Vec<&String> = deps.keys().filter(|k| k.contains("/modules.")).collect();
    assert!(
        dep_files.iter().any(|k| k.ends_with("/modules.dep")),
        "{dep_files:?}"
    );
    let merged = t.path().join("merged");
    let base_sqsh = t.path().join("base-rootfs.sqsh");
    let base_cpio = initramfs_entries(&assets().join("amd64/initramfs.xz"));
    let rootfs = base_cpio.iter().find(|e| e.name == "rootfs.sqsh").unwrap();
    std::fs::write(&base_sqsh, &rootfs.data).unwrap();
    ok(Command::new("unsquashfs")
        .args(["-no-progress", "-no-xattrs", "-d"])
        .arg(&merged)
        .arg(&base_sqsh)
        .arg("usr/lib/modules"));
    let kdir = merged.join(&m);
    std::fs::create_dir_all(kdir.join("extras")).unwrap();
    std::fs::write(kdir.join("extras/virtio_balloon.ko"), &i.balloon).unwrap();
    std::fs::write(kdir.join("extras/dummy.ko"), &i.dummy).unwrap();
    let conf = t.path().join("depmod.d");
    std::fs::create_dir_all(&conf).unwrap();
    ok(Command::new("depmod")
        .arg("-b")
        .arg(merged.join("usr"))
        .arg("-C")
        .arg(&conf)
        .arg(&i.kver));
    for f in ["modules.dep", "modules.alias", "modules.softdep"] {
        let ours = &deps[&format!("{m}/{f}")].1;
        let theirs = std::fs::read(kdir.join(f)).unwrap();
        assert!(
            *ours == theirs,
            "{f} differs from depmod -b:\nours:\n{}\ndepmod:\n{}",
            String::from_utf8_lossy(ours),
            String::from_utf8_lossy(&theirs)
        );
    }
    let dep = String::from_utf8(deps[&format!("{m}/modules.dep")].1.clone()).unwrap();
    assert!(dep.contains("extras/virtio_balloon.ko: "), "{dep}");

    // boot it
    let cmdline = std::fs::read_to_string(a.join("cmdline-metal-amd64")).unwrap();
    let booted = boot_to_ready(&Machine {
        firmware: Firmware::Bios,
        direct: Some((
            a.join("kernel-amd64"),
            a.join("initramfs-amd64.xz"),
            cmdline,
        )),
        extra: vec!["-device".into(), "virtio-balloon-pci".into()],
        ..Default::default()
    });
    let console = booted.console.join("\n");
    let line = |prefix: &str| {
        booted
            .console
            .iter()
            .find(|l| l.contains(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line:\n{console}"))
            .clone()
    };
    for (name, version, image) in [
        ("hello", "1.2.3", "0.sqsh"),
        ("bee", "0.1.0", "1.sqsh"),
        ("embedded-config", cfg_digest.as_str(), "2.sqsh"),
        ("modules.dep", i.kver.as_str(), "modules.dep.sqsh"),
    ] {
        line(&format!(
            "node-runtime: extension name={name} version={version} image={image} "
        ));
    }
    line("node-runtime: rootfs overlay layers=4 ro");
    line("node-runtime: firmware path=/usr/lib/firmware files=1");
    // the balloon driver by the device's modalias, dummy by the extension's modules-load.d
    line("node-runtime: module-loaded name=virtio_balloon by=modalias");
    line("node-runtime: module-loaded name=dummy by=modules-load.d");
    line(&format!(
        "test-stat path=/usr/local/share/hello/hello.txt type=file mode=0644 size={} sha256={}",
        HELLO.len(),
        sha256(HELLO)
    ));
    line("test-stat path=/usr/local/share/hello/gone.txt missing");
    line("test-stat path=/usr/local/share/hello/layer2.txt type=file");
    line("test-stat path=/usr/local/bee.txt type=file mode=0640");
    line(&format!(
        "test-stat path=/usr/local/etc/talos/config.yaml type=file mode=0400 size={} sha256={cfg_digest}",
        CONFIG.len()
    ));
    line(&format!(
        "test-stat path=/usr/lib/firmware/hello/fw.bin type=file mode=0644 size={} sha256={}",
        FW.len(),
        sha256(FW)
    ));
    line("test-stat path=/sys/module/virtio_balloon type=dir");
    line("test-stat path=/sys/module/dummy type=dir");
    let want = format!(
        "hello@1.2.3,bee@0.1.0,embedded-config@{cfg_digest},modules.dep@{}",
        i.kver
    );
    assert_eq!(
        field(&booted.line, "extensions"),
        Some(want.as_str()),
        "{}",
        booted.line
    );
    assert!(booted.powered_off);
}
