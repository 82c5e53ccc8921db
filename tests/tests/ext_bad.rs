//! Crafted bad extension images: each one is refused with one error line naming the image
//! and the path at fault and the documented exit code; nothing is left in the output
//! directory and nothing is written outside the staging directory (the run happens in an
//! empty working directory with its own TMPDIR, and both stay empty). Positive controls show
//! that the same fixtures without the fault build.
#![allow(clippy::unwrap_used)]

use e2e::fixture::{Tar, gzip, layer_blobs, manifest, oci_layout};
use e2e::*;
use std::path::{Path, PathBuf};

/// The entries of a valid extension, after whatever `t` already holds.
fn valid_after(t: Tar) -> Tar {
    t.file(
        "manifest.yaml",
        0o644,
        manifest("bad", "1.0", ">= v1.9.0").as_bytes(),
    )
    .dir("rootfs", 0o755)
    .dir("rootfs/usr", 0o755)
    .dir("rootfs/usr/local", 0o755)
    .file("rootfs/usr/local/ok.txt", 0o644, b"ok\n")
}

fn base(extra: Tar) -> Vec<u8> {
    valid_after(extra).finish()
}

fn good_tar() -> Tar {
    valid_after(Tar::new())
}

/// Runs the imager on one extension input; returns (exit code, stderr).
fn run_imager(ext: &Path, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let t = tempfile::tempdir().unwrap();
    let (cwd, tmp, out) = (
        t.path().join("cwd"),
        t.path().join("tmp"),
        t.path().join("out"),
    );
    for d in [&cwd, &tmp, &out] {
        std::fs::create_dir_all(d).unwrap();
    }
    let mut cmd = imager();
    cmd.current_dir(&cwd)
        .env("TMPDIR", &tmp)
        .args([
            "metal",
            "--output-kind",
            "initramfs",
            "--system-extension-image",
        ])
        .arg(ext)
        .args(args)
        .arg("--output")
        .arg(&out);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = run(&mut cmd, None);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    if o.status.success() {
        assert_eq!(dir_entries(&out), ["initramfs-metal-amd64.xz.zst"], "{err}");
    } else {
        assert!(
            dir_entries(&out).is_empty(),
            "partial output left: {:?}\n{err}",
            dir_entries(&out)
        );
    }
    assert!(
        dir_entries(&cwd).is_empty(),
        "written into the working directory"
    );
    assert!(dir_entries(&tmp).is_empty(), "written into TMPDIR");
    // nothing next to the test's own directories either (traversal targets)
    assert_eq!(dir_entries(t.path()), ["cwd", "out", "tmp"]);
    (o.status.code(), err)
}

fn refused(name: &str, ext: &Path, args: &[&str], env: &[(&str, &str)], code: i32, says: &[&str]) {
    let (c, err) = run_imager(ext, args, env);
    assert_eq!(c, Some(code), "{name}: exit code; stderr:\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(lines.len(), 1, "{name}: one error line expected:\n{err}");
    assert!(
        err.contains(&ext.display().to_string()),
        "{name}: the error does not name the image:\n{err}"
    );
    for s in says {
        assert!(err.contains(s), "{name}: message lacks {s:?}:\n{err}");
    }
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

#[test]
fn hostile_tarballs_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        (
            "traversal",
            base(Tar::new().file("rootfs/../../evil", 0o644, b"x")),
            vec!["rootfs/../../evil", "path traversal"],
        ),
        (
            "absolute path",
            base(Tar::new().file("/tmp/evil", 0o644, b"x")),
            vec!["/tmp/evil", "absolute path"],
        ),
        (
            "symlink escape",
            good_tar()
                .symlink("rootfs/usr/local/esc", "../../../../etc")
                .finish(),
            vec!["rootfs/usr/local/esc", "escapes the tree"],
        ),
        (
            "absolute symlink escape",
            good_tar()
                .symlink("rootfs/esc", "/../../etc/shadow")
                .finish(),
            vec!["rootfs/esc", "escapes the tree"],
        ),
        (
            "write through a symlink",
            good_tar()
                .symlink("rootfs/usr/local/lnk", "/tmp")
                .file("rootfs/usr/local/lnk/evil", 0o644, b"x")
                .finish(),
            vec!["rootfs/usr/local/lnk/evil", "through the symlink"],
        ),
        (
            "hard link escape",
            good_tar()
                .hardlink("rootfs/usr/local/h", "../../etc/passwd")
                .finish(),
            vec!["rootfs/usr/local/h", "escapes the tree"],
        ),
        (
            "hard link to a missing file",
            good_tar()
                .hardlink("rootfs/usr/local/h", "rootfs/nope")
                .finish(),
            vec!["rootfs/usr/local/h", "not a regular file in the image"],
        ),
        (
            "device node",
            good_tar().chardev("rootfs/usr/local/mem").finish(),
            vec!["rootfs/usr/local/mem", "device nodes are not allowed"],
        ),
        (
            "fifo",
            good_tar().fifo("rootfs/usr/local/pipe").finish(),
            vec!["rootfs/usr/local/pipe", "FIFOs are not allowed"],
        ),
        (
            "setuid",
            good_tar()
                .file("rootfs/usr/local/su", 0o4755, b"x")
                .finish(),
            vec!["rootfs/usr/local/su", "setuid"],
        ),
        (
            "missing manifest",
            Tar::new()
                .dir("rootfs", 0o755)
                .file("rootfs/a", 0o644, b"a")
                .finish(),
            vec!["manifest is missing"],
        ),
        (
            "missing rootfs",
            Tar::new()
                .file(
                    "manifest.yaml",
                    0o644,
                    manifest("x", "1", ">= 1.0.0").as_bytes(),
                )
                .finish(),
            vec!["rootfs is missing"],
        ),
        (
            "wrong manifest version",
            Tar::new()
                .file(
                    "manifest.yaml",
                    0o644,
                    manifest("x", "1", ">= 1.0.0")
                        .replace("v1alpha1", "v1alpha2")
                        .as_bytes(),
                )
                .dir("rootfs", 0o755)
                .finish(),
            vec!["manifest.yaml", "v1alpha2"],
        ),
        (
            "bad constraint",
            Tar::new()
                .file(
                    "manifest.yaml",
                    0o644,
                    manifest("x", "1", ">= banana").as_bytes(),
                )
                .dir("rootfs", 0o755)
                .finish(),
            vec!["error parsing Talos version constraint", "banana"],
        ),
        (
            "unsatisfied constraint",
            Tar::new()
                .file(
                    "manifest.yaml",
                    0o644,
                    manifest("x", "1", ">= v99.0.0").as_bytes(),
                )
                .dir("rootfs", 0o755)
                .finish(),
            vec!["can't be satisfied with Talos version v1.14.0"],
        ),
        (
            "extra top-level entry",
            good_tar()
                .dir("etc", 0o755)
                .file("etc/passwd", 0o644, b"x")
                .finish(),
            vec!["unexpected file \"etc\""],
        ),
    ];
    for (name, tar, says) in &cases {
        let p = write(d, &format!("{}.tar", name.replace(' ', "-")), tar);
        refused(name, &p, &[], &[], 2, says);
    }
    assert!(cases.len() >= 16);

    // a gzip-compressed tarball works like a plain one
    let p = write(d, "good.tar.gz", &gzip(&good_tar().finish()));
    let (c, err) = run_imager(&p, &[], &[]);
    assert_eq!(c, Some(0), "{err}");

    // setuid is allowed when the extension is named
    let p = write(
        d,
        "suid-allowed.tar",
        &good_tar()
            .file("rootfs/usr/local/su", 0o4755, b"x")
            .finish(),
    );
    let (c, err) = run_imager(&p, &["--extension-allow-setuid", "bad"], &[]);
    assert_eq!(c, Some(0), "{err}");

    // content validation is off unless asked for (Talos: ExtensionValidateContents=false)
    let p = write(
        d,
        "etc.tar",
        &good_tar()
            .dir("rootfs/etc", 0o755)
            .file("rootfs/etc/evil.conf", 0o644, b"x")
            .finish(),
    );
    let (c, err) = run_imager(&p, &[], &[]);
    assert_eq!(c, Some(0), "{err}");
    refused(
        "content validation",
        &p,
        &["--extension-validate-contents"],
        &[],
        2,
        &["path \"/etc/evil.conf\" is not allowed in extensions"],
    );
    let p = write(
        d,
        "ww.tar",
        &good_tar().file("rootfs/usr/local/ww", 0o666, b"x").finish(),
    );
    refused(
        "world-writable",
        &p,
        &["--extension-validate-contents"],
        &[],
        2,
        &["world-writeable files are not allowed: \"/usr/local/ww\""],
    );

    // decompression is bounded
    let p = write(
        d,
        "big.tar.gz",
        &gzip(
            &good_tar()
                .file("rootfs/usr/local/big", 0o644, &vec![0u8; 1 << 20])
                .finish(),
        ),
    );
    refused(
        "size bound",
        &p,
        &[],
        &[("IMAGER_MAX_EXTENSION_BYTES", "100000")],
        2,
        &["beyond the limit of 100000 bytes"],
    );
}

fn layout(dir: &Path, arch: &str) -> PathBuf {
    let l1 = gzip(&good_tar().finish());
    let l2 = Tar::new()
        .file("rootfs/usr/local/two.txt", 0o644, b"2")
        .finish();
    oci_layout(dir, &[(arch, vec![l1, l2])]);
    dir.to_path_buf()
}

#[test]
fn bad_oci_layouts_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();

    let ok = layout(&d.join("ok"), "amd64");
    let (c, err) = run_imager(&ok, &[], &[]);
    assert_eq!(c, Some(0), "positive control: {err}");

    let p = layout(&d.join("arm64-only"), "arm64");
    refused(
        "wrong arch",
        &p,
        &[],
        &[],
        2,
        &["no image for linux/amd64", "linux/arm64"],
    );

    let p = layout(&d.join("corrupt"), "amd64");
    let blob = &layer_blobs(&p)[1];
    let mut b = std::fs::read(blob).unwrap();
    b[600] ^= 0xff;
    std::fs::write(blob, b).unwrap();
    refused("corrupt layer", &p, &[], &[], 2, &["digest mismatch"]);

    let p = layout(&d.join("truncated"), "amd64");
    let blob = &layer_blobs(&p)[0];
    let b = std::fs::read(blob).unwrap();
    std::fs::write(blob, &b[..b.len() / 2]).unwrap();
    refused(
        "truncated layer",
        &p,
        &[],
        &[],
        2,
        &["size mismatch", "truncated"],
    );

    // a truncated gzip stream whose descriptor matches it: the decompressor fails
    let p = d.join("bad-gzip");
    let full = gzip(
        &good_tar()
            .file("rootfs/usr/local/r", 0o644, &[7u8; 300000])
            .finish(),
    );
    oci_layout(&p, &[("amd64", vec![full[..full.len() - 40].to_vec()])]);
    refused("truncated gzip stream", &p, &[], &[], 6, &["layer sha256:"]);

    // a digest that tries to name a path outside blobs/
    let p = layout(&d.join("evil-digest"), "amd64");
    let idx = std::fs::read_to_string(p.join("index.json")).unwrap();
    let evil = idx.replacen(
        "\"digest\":\"sha256:",
        "\"digest\":\"sha256:../../../../etc/passwd",
        1,
    );
    std::fs::write(p.join("index.json"), evil).unwrap();
    refused("evil digest", &p, &[], &[], 2, &["malformed digest"]);

    let p = d.join("not-a-layout");
    std::fs::create_dir_all(&p).unwrap();
    refused(
        "not a layout",
        &p,
        &[],
        &[],
        2,
        &["not an OCI image layout"],
    );

    // whiteouts: layer 2 deletes a file of layer 1 and replaces a directory's contents
    let p = d.join("whiteouts");
    let l1 = good_tar()
        .file("rootfs/usr/local/gone.txt", 0o644, b"x")
        .dir("rootfs/usr/local/opq", 0o755)
        .file("rootfs/usr/local/opq/old", 0o644, b"x")
        .finish();
    let l2 = Tar::new()
        .file("rootfs/usr/local/.wh.gone.txt", 0o644, b"")
        .file("rootfs/usr/local/opq/.wh..wh..opq", 0o644, b"")
        .file("rootfs/usr/local/opq/new", 0o644, b"y")
        .finish();
    oci_layout(&p, &[("amd64", vec![l1, l2])]);
    let (c, err) = run_imager(&p, &[], &[]);
    assert_eq!(c, Some(0), "whiteouts: {err}");
}

#[test]
fn bad_and_unreachable_registry_references() {
    let cache = tempfile::tempdir().unwrap();
    let c = cache.path().to_str().unwrap();
    // a malformed reference is invalid input naming the field
    let (code, err) = run_imager(
        Path::new("Ghcr.io/UPPER/x:v1"),
        &[],
        &[("IMAGER_CACHE_DIR", c)],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("input.systemExtensions[0]") && err.contains("Ghcr.io/UPPER/x:v1"),
        "{err}"
    );
    // nothing listens on port 1: a dependency failure after the retries, naming the endpoint
    let (code, err) = run_imager(
        Path::new("127.0.0.1:1/ext/x:v1"),
        &["--insecure"],
        &[("IMAGER_CACHE_DIR", c), ("IMAGER_REGISTRY_ATTEMPTS", "2")],
    );
    assert_eq!(code, Some(5), "{err}");
    assert!(
        err.contains("http://127.0.0.1:1") && err.contains("giving up after 2 attempt"),
        "{err}"
    );
}
