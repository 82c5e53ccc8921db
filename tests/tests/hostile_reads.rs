//! Reads of user-supplied data are bounded and never block: special files (FIFOs, devices)
//! are refused before they are read, whole-file inputs have a size bound that fits their use,
//! and archive metadata is bounded in entries. Every case must end with exit 2, one `error:`
//! line naming the input, and nothing in the output directory, within a time bound (a hang is
//! a failure, not a stuck CI run).
#![allow(clippy::unwrap_used)]

use e2e::fixture::{Tar, manifest, oci_layout};
use e2e::*;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BOUND: Duration = Duration::from_secs(120);

/// Runs the imager with `stdin` (written from a thread that ignores a closed pipe), killing it
/// after [`BOUND`]. Returns (exit code, stderr).
fn run_bounded(args: &[&str], stdin: Option<Vec<u8>>, out: &Path) -> (Option<i32>, String) {
    let mut c = imager();
    c.args(args)
        .arg("--output")
        .arg(out)
        .env("IMAGER_CACHE_DIR", out.parent().unwrap().join("cache"))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    if let Some(data) = stdin {
        let mut w = child.stdin.take().unwrap();
        std::thread::spawn(move || {
            let _ = w.write_all(&data);
        });
    }
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return (st.code(), reader.join().unwrap());
        }
        if start.elapsed() > BOUND {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "imager {args:?} still running after {BOUND:?}:\n{}",
                reader.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn refused(name: &str, args: &[&str], stdin: Option<Vec<u8>>, says: &[&str]) {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let (code, err) = run_bounded(args, stdin, &out);
    assert_eq!(code, Some(2), "{name}: exit code; stderr:\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(lines.len(), 1, "{name}: one error line:\n{err}");
    for s in says {
        assert!(err.contains(s), "{name}: message lacks {s:?}:\n{err}");
    }
    assert!(
        err.len() < 4096,
        "{name}: the message echoes too much:\n{err}"
    );
    assert!(
        dir_entries(&out).is_empty(),
        "{name}: output left behind: {:?}",
        dir_entries(&out)
    );
}

fn mkfifo(p: &Path) {
    ok(Command::new("mkfifo").arg(p));
}

fn stdin_profile(extension: &str) -> Vec<u8> {
    format!(
        "baseProfileName: metal\narch: amd64\noutput:\n  kind: initramfs\ninput:\n  systemExtensions:\n    - {extension}\n"
    )
    .into_bytes()
}

#[test]
fn special_files_are_refused_before_they_are_read() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    refused(
        "META value from /dev/zero",
        &["metal", "--meta", "0xa=@/dev/zero"],
        None,
        &["--meta 0xa=@", "/dev/zero", "not a regular file"],
    );
    refused(
        "embedded config from /dev/zero",
        &["metal", "--embedded-config-path", "/dev/zero"],
        None,
        &["--embedded-config-path", "not a regular file"],
    );
    let fifo = w.join("ext.fifo");
    mkfifo(&fifo);
    refused(
        "FIFO as a tarball extension",
        &["-"],
        Some(stdin_profile(&format!("tarballPath: {}", fifo.display()))),
        &["input.systemExtensions[0]", "not a regular file"],
    );
    // a FIFO where a layer blob should be
    let layout = w.join("layout");
    let l = Tar::new()
        .file(
            "manifest.yaml",
            0o644,
            manifest("x", "1", ">= v1.0.0").as_bytes(),
        )
        .dir("rootfs", 0o755)
        .finish();
    oci_layout(&layout, &[("amd64", vec![l])]);
    let blob = e2e::fixture::layer_blobs(&layout).remove(0);
    std::fs::remove_file(&blob).unwrap();
    mkfifo(&blob);
    refused(
        "FIFO as an OCI blob",
        &["-"],
        Some(stdin_profile(&format!("ociPath: {}", layout.display()))),
        &["input.systemExtensions[0]", "not a regular file"],
    );
}

#[test]
fn whole_inputs_are_bounded() {
    // a profile on stdin: 4 MiB at most, however much is sent
    let mut big = b"platform: metal\n".to_vec();
    big.extend(std::iter::repeat_n(b'#', 6 << 20));
    refused(
        "oversize stdin profile",
        &["-"],
        Some(big),
        &["profile (stdin)", "larger than the limit of 4194304 bytes"],
    );
    // a META value file is read up to 1 MiB (more than one META copy holds, so the META check
    // still names the key of a value that merely does not fit)
    let work = tempfile::tempdir().unwrap();
    let f = work.path().join("huge.yaml");
    std::fs::write(&f, vec![b'x'; (1 << 20) + 1]).unwrap();
    refused(
        "oversize META value file",
        &["metal", "--meta", &format!("0xa=@{}", f.display())],
        None,
        &["--meta 0xa=@", "larger than the limit of 1048576 bytes"],
    );
}

#[test]
fn archive_entry_count_is_bounded() {
    // 300 000 empty files in a plain tar (headers only): refused at the bound, not after
    // building a tree of them
    let work = tempfile::tempdir().unwrap();
    let p = work.path().join("many.tar");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&p).unwrap());
    for i in 0..300_000u32 {
        let mut h = [0u8; 512];
        let name = format!("rootfs/f{i}");
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(b"00000000000\0");
        h[136..148].copy_from_slice(b"00000000000\0");
        h[148..156].copy_from_slice(b"        ");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        f.write_all(&h).unwrap();
    }
    f.write_all(&[0u8; 1024]).unwrap();
    f.flush().unwrap();
    drop(f);
    refused(
        "300 000 entries",
        &["-"],
        Some(stdin_profile(&format!("tarballPath: {}", p.display()))),
        &["input.systemExtensions[0]", "more than 262144 entries"],
    );
}

/// A layout whose index.json → I_n → … → I_1 → the `arch` image, each index listing its
/// child 40 times: a DAG of 40^n paths.
fn dag_layout(layout: &Path, arch: &str, depth: usize) {
    use sha2::Digest;
    let l = Tar::new()
        .file(
            "manifest.yaml",
            0o644,
            manifest("dag", "1", ">= v1.0.0").as_bytes(),
        )
        .dir("rootfs", 0o755)
        .dir("rootfs/usr", 0o755)
        .dir("rootfs/usr/local", 0o755)
        .file("rootfs/usr/local/x", 0o644, b"x")
        .finish();
    oci_layout(layout, &[(arch, vec![l])]);
    let index = std::fs::read_to_string(layout.join("index.json")).unwrap();
    let mut child = index.split("\"manifests\":[").nth(1).unwrap();
    child = child.strip_suffix("]}").unwrap();
    let mut entry = child.to_string();
    for _ in 0..depth {
        let doc = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#,
            vec![entry.as_str(); 40].join(",")
        );
        let hex = hex::encode(sha2::Sha256::digest(doc.as_bytes()));
        std::fs::write(layout.join("blobs/sha256").join(&hex), &doc).unwrap();
        entry = format!(
            r#"{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:{hex}","size":{}}}"#,
            doc.len()
        );
    }
    std::fs::write(
        layout.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#,
            vec![entry.as_str(); 40].join(",")
        ),
    )
    .unwrap();
}

#[test]
fn a_crafted_index_graph_costs_nothing() {
    // the walk follows one path, once per digest: 40^6 paths to the image cost six reads
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("dag");
    dag_layout(&layout, "amd64", 6);
    let out = work.path().join("out");
    let start = Instant::now();
    let (code, err) = run_bounded(
        &["-"],
        Some(stdin_profile(&format!("ociPath: {}", layout.display()))),
        &out,
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("imager: extension dag 1"), "{err}");
    assert!(start.elapsed().as_secs() < 30, "took {:?}", start.elapsed());
}

#[test]
fn a_crafted_index_graph_without_a_match_fails_fast() {
    // 40^4 paths all ending in an arm64 image: refused at once, not after visiting them all
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("dag");
    dag_layout(&layout, "arm64", 4);
    let start = Instant::now();
    refused(
        "DAG without a linux/amd64 image",
        &["-"],
        Some(stdin_profile(&format!("ociPath: {}", layout.display()))),
        &["input.systemExtensions[0]", "no image for linux/amd64"],
    );
    assert!(start.elapsed().as_secs() < 30, "took {:?}", start.elapsed());
}
