//! The starting corpus of every fuzz target, made by the project's own writers.

use std::io::Write;

use cosign::testing::{BundleOptions, Log, Signed};

type Seeds = Vec<(&'static str, &'static str, Vec<u8>)>;

fn put(out: &mut Seeds, target: &'static str, name: &'static str, data: &[u8]) {
    out.push((target, name, data.to_vec()));
}

/// Every seed: `(target, name, bytes)`.
pub fn all() -> Seeds {
    let mut seeds = Seeds::new();
    let out = &mut seeds;

    // schematic
    for (n, y) in [
        ("empty", "{}"),
        ("json", r#"{"customization": {"meta": [{"key": 10, "value": "foo"}], "extraKernelArgs": ["noapic"]}}"#),
        (
            "full",
            "overlay:\n  image: siderolabs/sbc-raspberrypi\n  name: rpi_generic\n  options:\n    a: [1, 'x y', {b: ~}]\n\
             customization:\n  embeddedMachineConfiguration: |\n    version: v1alpha1\n  bootloader: sd-boot\n  \
             systemExtensions:\n    officialExtensions: [siderolabs/gvisor]\n  secureboot: {enrollKeys: force}\n  \
             diskImage: {sectorSize: 4096}\n",
        ),
    ] {
        put(out, "schematic", n, y.as_bytes());
    }

    // factory_request
    for (n, y) in [
        ("iso", "metal-amd64-secureboot.iso"),
        ("disk", "digital-ocean-x86_64.raw.tar.gz"),
        ("installer", "aws-installer-arm64.tar"),
        ("cmdline", "cmdline-metal-arm64-secureboot"),
        ("name", "metal-installer-secureboot/4dbdc2927dd8f52fb90a2d1842abe5f7a6bd149a4336b085471855edc7f6c0b7"),
        ("form", "version=v1.14.0&platform=metal&arch=amd64&ext=siderolabs%2Fgvisor&args=console%3DttyS0+%3Cb%3E"),
        (
            "catalog",
            "ghcr.io/siderolabs/gvisor:20231214.0@sha256:5ab365f2b98ab885b1d9a6ebb2e2b06d0a7887d2c173a2b7d3f9e0e4f2f4f1cb\n\
             \"ghcr.io/siderolabs/gvisor:20231214.0@sha256:5ab365f2b98ab885b1d9a6ebb2e2b06d0a7887d2c173a2b7d3f9e0e4f2f4f1cb\":\n  author: A\n",
        ),
        ("overlays", "overlays:\n  - {name: rpi_generic, image: ghcr.io/siderolabs/sbc-raspberrypi:v0.1.0, digest: 'sha256:5ab365f2b98ab885b1d9a6ebb2e2b06d0a7887d2c173a2b7d3f9e0e4f2f4f1cb'}\n"),
        ("tags", "v1.14.0\nv1.9.2\nv1.15.0-alpha.1\nv1.15.0-beta.10\nv1.15.0-beta.9\nlatest\n1h30m"),
    ] {
        put(out, "factory_request", n, y.as_bytes());
    }

    // profile
    for (n, y) in [
        ("metal", "baseProfileName: metal\narch: amd64\n"),
        (
            "image",
            "arch: arm64\nplatform: metal\nversion: 1.7.6\nsecureboot: false\ncustomization:\n  extraKernelArgs: [console=ttyS0, \"a=b c\"]\n  metaContents:\n    - key: 0xa\n      value: 'hostname: x'\ninput:\n  systemExtensions:\n    - imageRef: ghcr.io/a/b:1\n    - tarballPath: /x.tar\noutput:\n  kind: image\n  imageOptions: {diskSize: 1306525696, diskFormat: vhd, diskFormatOptions: subformat=fixed, bootloader: grub}\n  outFormat: .zst\n",
        ),
        (
            "iso",
            "baseProfileName: iso\narch: amd64\nversion: v1.14.0\noutput: {kind: iso, outFormat: raw, isoOptions: {bootloader: dual-boot}}\n",
        ),
    ] {
        put(out, "profile", n, y.as_bytes());
    }

    // overlay: `board\0options\0overlay.yaml`, the reference overlays' descriptions
    for (n, board, yaml) in [
        (
            "rpi",
            "rpi_generic",
            include_str!("../../overlays/rpi_generic/overlay.yaml"),
        ),
        (
            "rockchip",
            "rockpro64",
            include_str!("../../overlays/rockchip/overlay.yaml"),
        ),
        (
            "virt",
            "qemu-virt-arm64",
            include_str!("../../overlays/qemu-virt-arm64/overlay.yaml"),
        ),
    ] {
        let data = format!("{board}\0configTxtAppend: x\0{yaml}");
        put(out, "overlay", n, data.as_bytes());
    }

    // meta
    let mut a = adv::Adv::new();
    a.set(0x0a, b"hostname: node\n").expect("tag");
    a.set(0x0b, b"code").expect("tag");
    put(out, "meta", "partition", &a.to_partition());
    let env = adv::env::encode(&[(0x0a, "x".repeat(300)), (0x0c, "y".into())], true);
    put(out, "meta", "env", env.as_bytes());

    // manifest
    put(
        out,
        "manifest",
        "manifest",
        b"version: v1alpha1\nmetadata:\n  name: gvisor\n  version: 20240212.0\n  author: Sidero Labs\n  description: x\n  compatibility:\n    talos:\n      version: '>= v1.7.0, < v2.0.0'\n",
    );
    put(
        out,
        "manifest",
        "config",
        b"layers:\n  - image: 0.sqsh\n    metadata:\n      name: a\n      version: '1'\n",
    );

    // tar
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    b.append_data(&mut h, "rootfs/usr/lib", &[][..])
        .expect("tar");
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(5);
    b.append_data(&mut h, "rootfs/usr/lib/a.txt", &b"hello"[..])
        .expect("tar");
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "rootfs/usr/lib/l", "a.txt")
        .expect("tar");
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Link);
    h.set_size(0);
    b.append_link(&mut h, "rootfs/usr/lib/h", "rootfs/usr/lib/a.txt")
        .expect("tar");
    let mut h = tar::Header::new_gnu();
    h.set_size(0);
    b.append_data(&mut h, "rootfs/usr/.wh.gone", &[][..])
        .expect("tar");
    b.append_data(&mut h, "rootfs/.wh..wh..opq", &[][..])
        .expect("tar");
    put(out, "tar", "layer", &b.into_inner().expect("tar"));

    // oci_layout: index → manifest (@1) → config (@2), layer (@3)
    let index = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"@1","size":#1,"platform":{"architecture":"amd64","os":"linux"}}]}"#;
    let manifest = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"@2","size":#2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"@3","size":#3}]}"#;
    let config =
        r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layout = [index, manifest, config, "layer"].join("\0");
    put(out, "oci_layout", "image", layout.as_bytes());

    // cpio
    let mut w = cpio::Writer::new(Vec::new(), 0);
    w.dir("usr", 0o755).expect("cpio");
    w.file("usr/x", 0o644, 3, &mut &b"abc"[..]).expect("cpio");
    w.symlink("init", "usr/x").expect("cpio");
    put(out, "cpio", "archive", &w.finish().expect("cpio"));

    // squashfs: our writer's images, zstd and xz, small blocks
    for (name, compression) in [
        ("zstd", squashfs::Compression::Zstd { level: 1 }),
        ("xz", squashfs::Compression::Xz),
    ] {
        let mut b = squashfs::Builder::new(squashfs::Options {
            compression,
            block_size: 4096,
            mtime: 0,
            threads: 1,
        });
        b.dir("usr", 0o755, vec![]).expect("sqsh");
        b.dir(
            "usr/lib",
            0o755,
            vec![("security.selinux".into(), b"x".to_vec())],
        )
        .expect("sqsh");
        b.file(
            "usr/lib/a",
            0o644,
            vec![],
            squashfs::Source::Bytes(vec![7u8; 5000]),
        )
        .expect("sqsh");
        b.file(
            "usr/lib/b",
            0o644,
            vec![],
            squashfs::Source::Bytes(b"tail".to_vec()),
        )
        .expect("sqsh");
        b.symlink("usr/l", "lib/a", vec![]).expect("sqsh");
        b.hardlink("usr/h", "usr/lib/b").expect("sqsh");
        let mut img = std::io::Cursor::new(Vec::new());
        b.write(&mut img).expect("sqsh");
        put(out, "squashfs", name, &img.into_inner());
    }

    // gpt: an empty table on a 64 KiB disk, then one entry patched in (CRCs fixed)
    let l = gpt::plan(64 << 10, 512, 0, gpt::guid_from_label("d"), &[]).expect("gpt");
    let mut disk = std::io::Cursor::new(vec![0u8; 64 << 10]);
    l.write(&mut disk).expect("gpt");
    let mut disk = disk.into_inner();
    let e = 2 * 512;
    disk[e..e + 16].copy_from_slice(&[
        0xAF, 0x3D, 0xC6, 0x0F, 0x83, 0x84, 0x72, 0x47, 0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D,
        0xE4,
    ]);
    disk[e + 16] = 1;
    disk[e + 32..e + 40].copy_from_slice(&40u64.to_le_bytes());
    disk[e + 40..e + 48].copy_from_slice(&60u64.to_le_bytes());
    for (i, c) in "META".encode_utf16().enumerate() {
        disk[e + 56 + 2 * i..e + 58 + 2 * i].copy_from_slice(&c.to_le_bytes());
    }
    crate::fix_gpt_crcs(&mut disk, 512);
    disk[0] |= 1;
    put(out, "gpt", "table", &disk);

    // dhcp: xid, mac, then an ACK with the common options and option 121
    let mut p = vec![0x12, 0x34, 0x56, 0x78, 0x52, 0x54, 0, 0x12, 0x34, 0x56];
    let mut r = vec![0u8; 236];
    r[0] = 2;
    r[16..20].copy_from_slice(&[10, 0, 2, 15]);
    r.extend_from_slice(&[
        99, 130, 83, 99, 53, 1, 5, 1, 4, 255, 255, 255, 0, 3, 4, 10, 0, 2, 2,
    ]);
    r.extend_from_slice(&[
        51, 4, 0, 0, 14, 16, 58, 4, 0, 0, 7, 8, 121, 13, 0, 10, 0, 2, 1, 24, 10, 1, 1, 10, 0, 2, 5,
    ]);
    r.extend_from_slice(&[12, 4, b'n', b'o', b'd', b'e', 54, 4, 10, 0, 2, 2, 255]);
    p.extend_from_slice(&r);
    put(out, "dhcp", "ack", &p);

    // netconfig
    put(
        out,
        "netconfig",
        "example",
        include_bytes!("../../hack/examples/network.yaml"),
    );
    put(out, "netconfig", "cmdline", b"ip=10.0.0.2::10.0.0.1:255.255.255.0:node:eth0:off talos.hostname=x talos.network.interface.ignore=eth1");

    // machine_config: a whole configuration with every applied section, and documents
    let ca = cosign::SigningKey::from_seed(b"fuzz ca");
    let roots = format!(
        "apiVersion: v1alpha1\nkind: TrustedRootsConfig\nname: lab\ncertificates: |\n{}",
        include_str!("../fixtures/ca.pem")
            .lines()
            .map(|l| format!("  {l}\n"))
            .collect::<String>()
    );
    let full = format!(
        "version: v1alpha1\nmachine:\n  install:\n    disk: /dev/vda\n    image: \
         10.0.2.2:5000/installer:v1\n    extraKernelArgs: [a=1]\n    diskSelector:\n      \
         size: '>= 4GB'\n  network:\n    hostname: n\n    nameservers: [1.1.1.1]\n    \
         interfaces:\n      - deviceSelector:\n          hardwareAddr: '52:54:00:*'\n        \
         addresses: [10.0.0.2/24]\n        routes:\n          - network: 0.0.0.0/0\n            \
         gateway: 10.0.0.1\n        vlans:\n          - vlanId: 5\n            addresses: \
         [10.5.0.2/24]\n  env:\n    HTTP_PROXY: http://p:3128\n  registries:\n    mirrors:\n      \
         docker.io:\n        endpoints: [http://10.0.2.2:5000]\ncluster: {{}}\n---\n\
         apiVersion: v1alpha1\nkind: ImageVerificationConfig\nrules:\n  - image: '*'\n    \
         publicKey:\n      certificate: |\n{}---\napiVersion: v1alpha1\nkind: \
         WatchdogTimerConfig\ndevice: /dev/watchdog0\ntimeout: 30s\n---\n{roots}",
        ca.public_key()
            .to_pem()
            .lines()
            .map(|l| format!("        {l}\n"))
            .collect::<String>()
    );
    put(out, "machine_config", "full", full.as_bytes());
    put(out, "machine_config", "roots", roots.as_bytes());

    // cosign_bundle: a valid bundle for the target's key, and a payload
    let key = cosign::SigningKey::from_seed(b"fuzz");
    put(
        out,
        "cosign_bundle",
        "bundle",
        cosign::sign_blob_bundle(&key, &[0u8; 32]).as_bytes(),
    );
    put(
        out,
        "cosign_bundle",
        "payload",
        &cosign::payload::simple_signing_payload(
            "ghcr.io/a/b",
            &format!("sha256:{}", "0".repeat(64)),
        ),
    );

    // cosign_keyless: stand-in keyless bundles of every shape the verifier accepts
    let sigstore = cosign::testing::Sigstore::new(b"fuzz");
    let verifier = crate::keyless_verifier();
    for (name, signed, log, timestamp) in [
        (
            "blob-v1",
            Signed::File(crate::KEYLESS_FILE),
            Log::RekorV1,
            true,
        ),
        (
            "blob-v1-set-only",
            Signed::File(crate::KEYLESS_FILE),
            Log::RekorV1,
            false,
        ),
        (
            "blob-v2",
            Signed::File(crate::KEYLESS_FILE),
            Log::RekorV2,
            true,
        ),
        (
            "image-v1",
            Signed::Image(crate::KEYLESS_IMAGE),
            Log::RekorV1,
            true,
        ),
        (
            "image-v2",
            Signed::Image(crate::KEYLESS_IMAGE),
            Log::RekorV2,
            true,
        ),
    ] {
        let opts = BundleOptions {
            log,
            timestamp,
            ..Default::default()
        };
        let b = sigstore.keyless_bundle(
            signed,
            crate::KEYLESS_EMAIL,
            crate::KEYLESS_ISSUER,
            1_750_000_000,
            opts,
        );
        // a seed that does not verify would start the fuzzer off the deep paths
        let verified = match signed {
            Signed::File(_) => {
                cosign::verify_blob_bundle(&verifier, b.as_bytes(), &crate::KEYLESS_FILE_SHA256)
            }
            Signed::Image(d) => cosign::verify_image_bundle(&verifier, d, b.as_bytes()),
        };
        if let Err(e) = verified {
            panic!("cosign_keyless seed {name} does not verify: {e}");
        }
        put(out, "cosign_keyless", name, b.as_bytes());
    }

    // pe: a stub, the same with a symbol table, an assembled UKI-like image
    let stub = pe::testing::stub(0);
    put(out, "pe", "stub", &stub);
    put(out, "pe", "stub-symbols", &pe::testing::stub(54));
    let mut uki = Vec::new();
    pe::assemble(
        &stub,
        &[
            (".osrel", pe::Source::Bytes(b"ID=talos\n".to_vec())),
            (".cmdline", pe::Source::Bytes(b"console=ttyS0".to_vec())),
            (".profile", pe::Source::Bytes(b"ID=main".to_vec())),
        ],
        1_700_000_000,
        &mut uki,
    )
    .expect("assembling the pe seed");
    put(out, "pe", "uki", &uki);

    // modules_dep
    put(
        out,
        "modules_dep",
        "dep",
        b"kernel/a.ko: kernel/b.ko kernel/c.ko\nkernel/b.ko:\n",
    );
    put(
        out,
        "modules_dep",
        "alias",
        b"alias pci:v00008086d*sv*sd*bc*sc*i* e1000\nalias fs-xfs xfs\n",
    );
    let mut elf = Vec::new();
    elf.write_all(b"\x7fELF\x02\x01\x01").expect("elf");
    put(out, "modules_dep", "elf", &elf);
    seeds
}
