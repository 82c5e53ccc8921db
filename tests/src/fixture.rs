//! Crafting extension images for tests: a raw tar writer (it writes exactly what it is told,
//! including the hostile names and link targets that well-behaved tar libraries refuse) and
//! an OCI image layout writer.

use sha2::{Digest, Sha256};
use std::path::Path;

/// A tar archive under construction.
#[derive(Default)]
pub struct Tar {
    buf: Vec<u8>,
}

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{:0w$o}", v, w = field.len() - 1);
    field[..s.len()].copy_from_slice(s.as_bytes());
    field[s.len()] = 0;
}

impl Tar {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    fn header(&mut self, name: &str, mode: u32, typ: u8, size: u64, link: &str) {
        let mut h = [0u8; 512];
        if name.len() > 100 || link.len() > 100 {
            // long names go through a PAX header
            let mut recs = String::new();
            if name.len() > 100 {
                recs.push_str(&pax_record("path", name.as_bytes()));
            }
            if link.len() > 100 {
                recs.push_str(&pax_record("linkpath", link.as_bytes()));
            }
            self.pax(recs.as_bytes());
        }
        let n = name.as_bytes();
        h[..n.len().min(100)].copy_from_slice(&n[..n.len().min(100)]);
        octal(&mut h[100..108], u64::from(mode));
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], size);
        octal(&mut h[136..148], 1_700_000_000);
        h[148..156].copy_from_slice(b"        ");
        h[156] = typ;
        let l = link.as_bytes();
        h[157..157 + l.len().min(100)].copy_from_slice(&l[..l.len().min(100)]);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        self.buf.extend_from_slice(&h);
    }

    fn data(&mut self, d: &[u8]) {
        self.buf.extend_from_slice(d);
        let pad = (512 - d.len() % 512) % 512;
        self.buf.extend(std::iter::repeat_n(0u8, pad));
    }

    fn pax(&mut self, recs: &[u8]) {
        let mut h = [0u8; 512];
        h[..11].copy_from_slice(b"PaxHeaders0");
        octal(&mut h[100..108], 0o644);
        octal(&mut h[124..136], recs.len() as u64);
        h[148..156].copy_from_slice(b"        ");
        h[156] = b'x';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        self.buf.extend_from_slice(&h);
        self.data(recs);
    }

    /// A directory.
    pub fn dir(mut self, name: &str, mode: u32) -> Self {
        self.header(name, mode, b'5', 0, "");
        self
    }

    /// A regular file.
    pub fn file(mut self, name: &str, mode: u32, data: &[u8]) -> Self {
        self.header(name, mode, b'0', data.len() as u64, "");
        self.data(data);
        self
    }

    /// A regular file with an SELinux label in a PAX header.
    pub fn labelled_file(mut self, name: &str, mode: u32, data: &[u8], label: &str) -> Self {
        let rec = pax_record("SCHILY.xattr.security.selinux", label.as_bytes());
        self.pax(rec.as_bytes());
        self.header(name, mode, b'0', data.len() as u64, "");
        self.data(data);
        self
    }

    /// A symbolic link.
    pub fn symlink(mut self, name: &str, target: &str) -> Self {
        self.header(name, 0o777, b'2', 0, target);
        self
    }

    /// A hard link.
    pub fn hardlink(mut self, name: &str, target: &str) -> Self {
        self.header(name, 0o644, b'1', 0, target);
        self
    }

    /// A character device.
    pub fn chardev(mut self, name: &str) -> Self {
        self.header(name, 0o600, b'3', 0, "");
        self
    }

    /// A FIFO.
    pub fn fifo(mut self, name: &str) -> Self {
        self.header(name, 0o600, b'6', 0, "");
        self
    }

    /// The archive bytes (with the two zero end blocks).
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend(std::iter::repeat_n(0u8, 1024));
        self.buf
    }
}

fn pax_record(key: &str, value: &[u8]) -> String {
    let body = format!(" {key}={}\n", String::from_utf8_lossy(value));
    let mut len = body.len() + 1;
    loop {
        let total = len.to_string().len() + body.len();
        if total == len {
            break;
        }
        len = total;
    }
    format!("{len}{body}")
}

/// A gzip of `data`.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A system extension `<name>.tar` in `dir` whose one service, `service_yaml` (written as
/// `/usr/local/etc/containers/<name>.yaml`), runs the `test-service` binary as `./svc`.
pub fn service_extension(dir: &Path, name: &str, service_yaml: &str) -> std::path::PathBuf {
    let svc = std::fs::read(crate::bin("test-service")).unwrap();
    let lib = format!("rootfs/usr/local/lib/containers/{name}");
    let tar = Tar::new()
        .file(
            "manifest.yaml",
            0o644,
            manifest(name, "0.1.0", ">= v1.9.0").as_bytes(),
        )
        .dir("rootfs", 0o755)
        .dir("rootfs/usr", 0o755)
        .dir("rootfs/usr/local", 0o755)
        .dir("rootfs/usr/local/etc", 0o755)
        .dir("rootfs/usr/local/etc/containers", 0o755)
        .file(
            &format!("rootfs/usr/local/etc/containers/{name}.yaml"),
            0o644,
            service_yaml.as_bytes(),
        )
        .dir("rootfs/usr/local/lib", 0o755)
        .dir("rootfs/usr/local/lib/containers", 0o755)
        .dir(&lib, 0o755)
        .file(&format!("{lib}/svc"), 0o755, &svc);
    let p = dir.join(format!("{name}.tar"));
    std::fs::write(&p, tar.finish()).unwrap();
    p
}

/// The `manifest.yaml` of a test extension.
pub fn manifest(name: &str, version: &str, constraint: &str) -> String {
    format!(
        "version: v1alpha1\nmetadata:\n  name: {name}\n  version: {version}\n  author: Test\n  description: |\n    Test extension {name}.\n  compatibility:\n    talos:\n      version: \"{constraint}\"\n"
    )
}

fn put_blob(dir: &Path, data: &[u8]) -> (String, u64) {
    let hex = hex::encode(Sha256::digest(data));
    let p = dir.join("blobs/sha256").join(&hex);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, data).unwrap();
    (format!("sha256:{hex}"), data.len() as u64)
}

/// Writes an OCI image layout at `dir` holding one image per `(arch, layers)` (layers already
/// compressed as the caller wants; gzip media type if they start with the gzip magic),
/// listed in an index with platforms.
pub fn oci_layout(dir: &Path, images: &[(&str, Vec<Vec<u8>>)]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut manifests = Vec::new();
    for (arch, layers) in images {
        let config = format!(
            r#"{{"architecture":"{arch}","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"config":{{}}}}"#
        );
        let (cd, cs) = put_blob(dir, config.as_bytes());
        let ls: Vec<String> = layers
            .iter()
            .map(|l| {
                let (d, s) = put_blob(dir, l);
                let mt = if l.starts_with(&[0x1f, 0x8b]) {
                    "application/vnd.oci.image.layer.v1.tar+gzip"
                } else {
                    "application/vnd.oci.image.layer.v1.tar"
                };
                format!(r#"{{"mediaType":"{mt}","digest":"{d}","size":{s}}}"#)
            })
            .collect();
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{cs}}},"layers":[{}]}}"#,
            ls.join(",")
        );
        let (md, ms) = put_blob(dir, m.as_bytes());
        manifests.push(format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{md}","size":{ms},"platform":{{"architecture":"{arch}","os":"linux"}}}}"#
        ));
    }
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#,
        manifests.join(",")
    );
    std::fs::write(dir.join("index.json"), index).unwrap();
}

/// Paths of the layer blobs of the first image of a layout written by [`oci_layout`], in
/// layer order.
pub fn layer_blobs(dir: &Path) -> Vec<std::path::PathBuf> {
    let index = std::fs::read_to_string(dir.join("index.json")).unwrap();
    let md = index.split("\"digest\":\"sha256:").nth(1).unwrap()[..64].to_string();
    let m = std::fs::read_to_string(dir.join("blobs/sha256").join(md)).unwrap();
    let layers = m.split("\"layers\":").nth(1).unwrap();
    layers
        .split("\"digest\":\"sha256:")
        .skip(1)
        .map(|s| dir.join("blobs/sha256").join(&s[..64]))
        .collect()
}

/// Replaces the empty `diff_ids` of the layout's config and re-links the manifest and index.
pub fn rewrite_config(dir: &Path, diff_ids: &str) {
    let blobs = dir.join("blobs/sha256");
    let index = std::fs::read_to_string(dir.join("index.json")).unwrap();
    let md = index.split("\"digest\":\"sha256:").nth(1).unwrap()[..64].to_string();
    let m = std::fs::read_to_string(blobs.join(&md)).unwrap();
    let cd = m.split("\"digest\":\"sha256:").nth(1).unwrap()[..64].to_string();
    let c = std::fs::read_to_string(blobs.join(&cd)).unwrap();
    let c2 = c.replace(r#""diff_ids":[]"#, diff_ids);
    let cd2 = crate::sha256(c2.as_bytes());
    std::fs::write(blobs.join(&cd2), &c2).unwrap();
    std::fs::remove_file(blobs.join(&cd)).unwrap();
    let m2 = m.replace(&cd, &cd2).replace(
        &format!("\"size\":{}}}", c.len()),
        &format!("\"size\":{}}}", c2.len()),
    );
    let md2 = crate::sha256(m2.as_bytes());
    std::fs::write(blobs.join(&md2), &m2).unwrap();
    std::fs::remove_file(blobs.join(&md)).unwrap();
    let index2 = index.replace(&md, &md2).replace(
        &format!("\"size\":{},", m.len()),
        &format!("\"size\":{},", m2.len()),
    );
    std::fs::write(dir.join("index.json"), index2).unwrap();
}
