//! The imager container image (docs/formats/imager-image.md): `imager self-image` twice with
//! the same digest, read by skopeo, loaded and run by Debian's podman as users run Talos's
//! imager (a non-root user, a read-only root, no network, no /dev, no privileges), writing
//! exactly what the host binary writes; the ISO made in the container boots.
#![allow(clippy::unwrap_used)]

use e2e::*;
use qemu_harness::{DiskKind, Firmware, Machine};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const TAG: &str = "localhost/imager-e2e:latest";

fn self_image(out: &Path) -> String {
    let o = ok(imager()
        .args(["self-image", "--json", "--tag", TAG, "--output"])
        .arg(out));
    assert!(o.contains("imager-image.tar"), "{o}");
    let index = std::fs::read(out.join("imager-image/index.json")).unwrap();
    sha256(&index)
}

struct Image {
    dir: tempfile::TempDir,
    digest: String,
}

fn image() -> &'static Image {
    static I: OnceLock<Image> = OnceLock::new();
    I.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let digest = self_image(dir.path());
        Image { dir, digest }
    })
}

#[test]
fn built_twice_with_the_same_digest_and_read_by_skopeo() {
    let a = image();
    let b = tempfile::tempdir().unwrap();
    assert_eq!(
        self_image(b.path()),
        a.digest,
        "index digest differs between builds"
    );
    assert_eq!(
        sha256_file(&a.dir.path().join("imager-image.tar")),
        sha256_file(&b.path().join("imager-image.tar"))
    );
    // index.json is the image index (one manifest per platform); skopeo resolves it to the
    // platform's manifest
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(a.dir.path().join("imager-image/index.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(index["manifests"][0]["platform"]["architecture"], "amd64");
    assert_eq!(index["manifests"][0]["platform"]["os"], "linux");
    let layout = format!("oci:{}", a.dir.path().join("imager-image").display());
    let raw = ok(Command::new("skopeo").args(["inspect", "--raw", &layout]));
    let manifest: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        format!("sha256:{}", sha256(raw.as_bytes())),
        index["manifests"][0]["digest"].as_str().unwrap()
    );
    let inspect = ok(Command::new("skopeo").args(["inspect", &layout]));
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v["Architecture"], "amd64");
    assert_eq!(v["Os"], "linux");
    assert_eq!(v["Layers"].as_array().unwrap().len(), 2);
    let config = ok(Command::new("skopeo").args(["inspect", "--config", &layout]));
    let c: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(c["config"]["Entrypoint"][0], "/usr/bin/imager");
    assert_eq!(c["created"], "2023-11-14T22:13:20Z");
    // the archive is a docker archive too
    let list = ok(Command::new("tar")
        .arg("-tf")
        .arg(a.dir.path().join("imager-image.tar")));
    assert!(list.lines().any(|l| l == "manifest.json"), "{list}");
    assert!(list.lines().any(|l| l == "index.json"), "{list}");
}

#[test]
fn a_dynamically_linked_binary_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let o = run(
        imager()
            .args(["self-image", "--binary", "/bin/ls", "--output"])
            .arg(t.path()),
        None,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("dynamically linked"), "{err}");
    assert!(!t.path().join("imager-image.tar").exists());
}

/// podman with storage of its own, as this machine kind needs it.
fn podman(store: &Path) -> Command {
    let mut c = Command::new("podman");
    c.arg("--root")
        .arg(store.join("root"))
        .arg("--runroot")
        .arg(store.join("run"))
        .args([
            "--storage-driver",
            "vfs",
            "--runtime",
            "runc",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
        ])
        .env("TMPDIR", store);
    c
}

/// `podman run` as users run the imager: a non-root user, read-only root, no network.
fn run_args(c: &mut Command) -> &mut Command {
    c.args([
        "run",
        "--rm",
        "--user",
        "1000:1000",
        "--read-only",
        "--network",
        "none",
        "--ulimit",
        "nofile=4096:4096",
        "--ulimit",
        "nproc=4096:4096",
        "-e",
        "SOURCE_DATE_EPOCH=1700000000",
    ])
}

fn writable_dir(p: &Path) -> PathBuf {
    std::fs::create_dir_all(p).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
    p.to_path_buf()
}

const ISO_ARGS: [&str; 5] = [
    "iso",
    "--extra-kernel-arg",
    "console=ttyS0",
    "--extra-kernel-arg",
    "node_runtime.test_poweroff",
];

#[test]
fn podman_runs_it_rootless_and_writes_what_the_host_writes() {
    let img = image();
    let t = tempfile::tempdir().unwrap();
    let store = writable_dir(&t.path().join("store"));
    let loaded = ok(podman(&store)
        .arg("load")
        .arg("-i")
        .arg(img.dir.path().join("imager-image.tar")));
    assert!(loaded.contains(TAG), "{loaded}");

    // metal and the ISO, into a volume
    let host = t.path().join("host");
    ok(imager().args(["metal", "--output"]).arg(&host));
    ok(imager().args(ISO_ARGS).arg("--output").arg(&host));
    let inside = writable_dir(&t.path().join("inside"));
    for args in [&["metal"][..], &ISO_ARGS[..]] {
        ok(run_args(&mut podman(&store))
            .arg("-v")
            .arg(format!("{}:/out", inside.display()))
            .arg(TAG)
            .args(args));
    }
    for f in ["metal-amd64.raw.zst", "metal-amd64.iso"] {
        assert_eq!(
            sha256_file(&inside.join(f)),
            sha256_file(&host.join(f)),
            "{f}: the container's output differs from the host's"
        );
    }
    let left: Vec<String> = dir_entries(&inside);
    assert_eq!(left, ["metal-amd64.iso", "metal-amd64.raw.zst"], "{left:?}");

    // the seeds' pattern: a profile on stdin, the result on stdout, no volume at all,
    // a read-only root with only a tmpfs for scratch space
    let profile = "arch: amd64\nplatform: metal\noutput:\n  kind: kernel\n  outFormat: raw\n";
    let from_host = run(
        imager().args(["-", "--tar-to-stdout"]),
        Some(profile.as_bytes()),
    );
    assert!(from_host.status.success());
    let from_podman = run(
        run_args(&mut podman(&store))
            .args(["-i", "--tmpfs", "/tmp"])
            .arg(TAG)
            .args(["-", "--tar-to-stdout"]),
        Some(profile.as_bytes()),
    );
    assert!(
        from_podman.status.success(),
        "{}",
        String::from_utf8_lossy(&from_podman.stderr)
    );
    assert!(
        from_podman.stdout.len() > 1 << 20,
        "a kernel is in the tarball"
    );
    assert_eq!(
        sha256(&from_podman.stdout),
        sha256(&from_host.stdout),
        "--tar-to-stdout differs between the container and the host"
    );

    // the ISO made in the container boots to the ready line
    let booted = boot_to_ready(&Machine {
        firmware: Firmware::Uefi,
        disks: vec![(inside.join("metal-amd64.iso"), DiskKind::Cdrom)],
        ..Default::default()
    });
    assert!(
        booted.line.contains("node-runtime: ready"),
        "{}",
        booted.line
    );
}

/// Unpacks every layer of the (first) image of an OCI layout into `dest`.
fn unpack(layout: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    let blob = |d: &str| layout.join("blobs/sha256").join(&d[7..]);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let m = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(m)).unwrap()).unwrap();
    for l in manifest["layers"].as_array().unwrap() {
        ok(Command::new("tar")
            .arg("-xf")
            .arg(blob(l["digest"].as_str().unwrap()))
            .arg("-C")
            .arg(dest));
    }
}

/// `(path, permission bits, sha256)` of every regular file under `root/usr`.
fn files(root: &Path) -> Vec<(String, u32, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.join("usr")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.push((rel, m.permissions().mode() & 0o7777, sha256_file(&p)));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_dockerfile_builds_the_same_files_with_buildah() {
    let img = image();
    let t = tempfile::tempdir().unwrap();
    // the build context the Dockerfile expects: the binary and the assets at their paths
    let ctx = t.path().join("ctx");
    let bin_dir = ctx.join("target/x86_64-unknown-linux-gnu/release");
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::fs::copy(bin("imager"), bin_dir.join("imager")).unwrap();
    std::fs::create_dir_all(ctx.join("_out/assets")).unwrap();
    ok(Command::new("cp")
        .arg("-a")
        .arg(assets().join("amd64"))
        .arg(ctx.join("_out/assets/")));
    std::fs::copy(root().join("Dockerfile"), ctx.join("Dockerfile")).unwrap();
    let store = t.path().join("store");
    let buildah = || {
        let mut c = Command::new("buildah");
        c.arg("--root")
            .arg(store.join("root"))
            .arg("--runroot")
            .arg(store.join("run"))
            .args(["--storage-driver", "vfs"]);
        c
    };
    ok(buildah()
        .args([
            "bud",
            "--isolation",
            "chroot",
            "-t",
            "localhost/imager-df:test",
        ])
        .arg(&ctx));
    let df = t.path().join("df");
    ok(buildah()
        .args(["push", "localhost/imager-df:test"])
        .arg(format!("oci:{}", df.display())));
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    unpack(&img.dir.path().join("imager-image"), &a);
    unpack(&df, &b);
    let ours = files(&a);
    assert!(ours.iter().any(|f| f.0 == "usr/bin/imager" && f.1 == 0o755));
    assert!(ours.iter().any(|f| f.0 == "usr/install/amd64/vmlinuz"));
    assert_eq!(
        ours,
        files(&b),
        "self-image and the Dockerfile differ under /usr"
    );
}
