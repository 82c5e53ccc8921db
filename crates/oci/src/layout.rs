//! OCI image layouts (image-spec `image-layout.md`) and docker-archive tarballs, written
//! reproducibly, plus a gzip tar layer builder.
//!
//! In: a manifest (raw bytes) and the files of its blobs. Out: a layout directory
//! (`oci-layout`, `index.json`, `blobs/sha256/<hex>`; blobs hard-linked when possible, else
//! copied), or one tar that is at once an OCI layout archive (`oci-archive:`) and a
//! `docker save` archive (`manifest.json` with `Config`, `RepoTags`, `Layers`), as Docker ≥ 25
//! writes it. Tar headers: sorted names, uid/gid 0, mode 0644/0755, mtime = SOURCE_DATE_EPOCH.

use crate::Error;
use crate::digest::{Digest, HashingWriter};
use crate::types::{Descriptor, Document, OCI_INDEX, parse_document};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// The `oci-layout` file.
pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// An image to write: its manifest descriptor (annotations become index annotations, e.g.
/// `org.opencontainers.image.ref.name`), the manifest bytes and every blob file.
#[derive(Debug, Clone)]
pub struct ImageFiles {
    /// Manifest descriptor as listed in `index.json`.
    pub descriptor: Descriptor,
    /// Manifest bytes.
    pub manifest: Vec<u8>,
    /// Config and layer blobs.
    pub blobs: BTreeMap<Digest, PathBuf>,
}

impl ImageFiles {
    /// Config digest and layer digests of the manifest.
    fn parts(&self) -> Result<(Digest, Vec<Digest>), Error> {
        match parse_document(
            &self.manifest,
            &self.descriptor.media_type,
            "image manifest",
        )? {
            Document::Manifest(m) => Ok((
                m.config.digest,
                m.layers.into_iter().map(|l| l.digest).collect(),
            )),
            Document::Index(_) => Err(Error::Manifest {
                what: "image".into(),
                why: "expected a manifest, got an index".into(),
            }),
        }
    }
}

/// An OCI image index listing `descs` (the bytes of `index.json`; also what is pushed for a
/// multi-platform image).
pub fn index_json(descs: &[Descriptor]) -> Result<Vec<u8>, Error> {
    let v = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": descs,
    });
    serde_json::to_vec(&v).map_err(|e| Error::Config(format!("index.json: {e}")))
}

fn link_or_copy(src: &Path, dst: &Path) -> Result<(), Error> {
    if dst.exists() {
        return Ok(());
    }
    if fs::hard_link(src, dst).is_ok() {
        return Ok(());
    }
    fs::copy(src, dst).map_err(io_err(format!(
        "copying {} to {}",
        src.display(),
        dst.display()
    )))?;
    Ok(())
}

/// Writes `images` as an OCI layout at `dir` (created; existing blobs are kept).
pub fn write_layout(dir: &Path, images: &[ImageFiles]) -> Result<(), Error> {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(io_err(format!("creating {}", blobs.display())))?;
    let mut descs = Vec::new();
    for img in images {
        let (config, layers) = img.parts()?;
        for d in std::iter::once(&config).chain(layers.iter()) {
            let src = img.blobs.get(d).ok_or_else(|| Error::Manifest {
                what: "image".into(),
                why: format!("blob {d} missing"),
            })?;
            link_or_copy(src, &blobs.join(d.hex()))?;
        }
        let mp = blobs.join(img.descriptor.digest.hex());
        fs::write(&mp, &img.manifest).map_err(io_err(format!("writing {}", mp.display())))?;
        descs.push(img.descriptor.clone());
    }
    let p = dir.join("oci-layout");
    fs::write(&p, OCI_LAYOUT).map_err(io_err(format!("writing {}", p.display())))?;
    let p = dir.join("index.json");
    fs::write(&p, index_json(&descs)?).map_err(io_err(format!("writing {}", p.display())))?;
    Ok(())
}

fn header(size: u64, mode: u32, epoch: u64, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(epoch);
    let _ = h.set_username("");
    let _ = h.set_groupname("");
    h
}

/// Writes one image as a tar that is both an OCI layout archive and a docker-archive, tagged
/// `repo_tags`. Reproducible for the same inputs and `epoch`.
pub fn write_archive(
    out: impl Write,
    img: &ImageFiles,
    repo_tags: &[String],
    epoch: u64,
) -> Result<(), Error> {
    let (config, layers) = img.parts()?;
    let manifest_json = serde_json::to_vec(&serde_json::json!([{
        "Config": format!("blobs/sha256/{}", config.hex()),
        "RepoTags": repo_tags,
        "Layers": layers.iter().map(|l| format!("blobs/sha256/{}", l.hex())).collect::<Vec<_>>(),
    }]))
    .map_err(|e| Error::Config(format!("manifest.json: {e}")))?;
    let index = index_json(std::slice::from_ref(&img.descriptor))?;
    // every blob, by digest (sorted), with the manifest among them
    let mut blobs: BTreeMap<&str, Source> = BTreeMap::new();
    for d in std::iter::once(&config).chain(layers.iter()) {
        let p = img.blobs.get(d).ok_or_else(|| Error::Manifest {
            what: "image".into(),
            why: format!("blob {d} missing"),
        })?;
        blobs.insert(d.hex(), Source::File(p));
    }
    blobs.insert(img.descriptor.digest.hex(), Source::Bytes(&img.manifest));
    let mut t = tar::Builder::new(BufWriter::with_capacity(1 << 16, out));
    let dir = |t: &mut tar::Builder<_>, name: &str| -> Result<(), Error> {
        let mut h = header(0, 0o755, epoch, tar::EntryType::Directory);
        t.append_data(&mut h, name, io::empty())
            .map_err(io_err(format!("writing {name} into the archive")))
    };
    dir(&mut t, "blobs/")?;
    dir(&mut t, "blobs/sha256/")?;
    for (hex, src) in &blobs {
        let name = format!("blobs/sha256/{hex}");
        match src {
            Source::File(p) => {
                let f = File::open(p).map_err(io_err(format!("opening {}", p.display())))?;
                let len = f
                    .metadata()
                    .map_err(io_err(format!("stat {}", p.display())))?
                    .len();
                let mut h = header(len, 0o644, epoch, tar::EntryType::Regular);
                t.append_data(
                    &mut h,
                    &name,
                    io::BufReader::with_capacity(1 << 16, f).take(len),
                )
                .map_err(io_err(format!("writing {name} into the archive")))?;
            }
            Source::Bytes(b) => {
                let mut h = header(b.len() as u64, 0o644, epoch, tar::EntryType::Regular);
                t.append_data(&mut h, &name, *b)
                    .map_err(io_err(format!("writing {name} into the archive")))?;
            }
        }
    }
    for (name, data) in [
        ("index.json", index.as_slice()),
        ("manifest.json", manifest_json.as_slice()),
        ("oci-layout", OCI_LAYOUT),
    ] {
        let mut h = header(data.len() as u64, 0o644, epoch, tar::EntryType::Regular);
        t.append_data(&mut h, name, data)
            .map_err(io_err(format!("writing {name} into the archive")))?;
    }
    let w = t.into_inner().map_err(io_err("finishing the archive"))?;
    w.into_inner()
        .map_err(|e| io_err("finishing the archive")(e.into_error()))?
        .flush()
        .map_err(io_err("finishing the archive"))?;
    Ok(())
}

enum Source<'a> {
    File(&'a Path),
    Bytes(&'a [u8]),
}

/// A file for a layer.
#[derive(Debug, Clone)]
pub struct LayerFile {
    /// Path inside the layer (no leading `/`).
    pub path: String,
    /// Mode bits written into the header.
    pub mode: u32,
    /// Content.
    pub source: PathBuf,
}

/// A built layer.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Descriptor (gzip media type, digest and size of the compressed blob).
    pub descriptor: Descriptor,
    /// sha256 of the uncompressed tar (the config's `diff_id`).
    pub diff_id: Digest,
}

/// Writes a gzip-compressed tar layer of `files` (sorted by path; parent directories are not
/// added; uid/gid 0 and mtime `mtime`) into `out`.
pub fn write_layer(
    out: &mut File,
    files: &[LayerFile],
    mtime: u64,
    level: u32,
) -> Result<Layer, Error> {
    write_layer_with_dirs(out, &[], files, mtime, level)
}

/// [`write_layer`] with directory entries `(path, mode)` too; directories and files are
/// written in one path order, so a directory precedes what it holds.
pub fn write_layer_with_dirs(
    out: &mut File,
    dirs: &[(String, u32)],
    files: &[LayerFile],
    mtime: u64,
    level: u32,
) -> Result<Layer, Error> {
    enum Entry<'a> {
        Dir(&'a str, u32),
        File(&'a LayerFile),
    }
    let mut entries: Vec<(&str, Entry)> = files
        .iter()
        .map(|f| (f.path.as_str(), Entry::File(f)))
        .chain(dirs.iter().map(|(p, m)| (p.as_str(), Entry::Dir(p, *m))))
        .collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let compressed = HashingWriter::new(BufWriter::with_capacity(1 << 16, &mut *out));
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(compressed, flate2::Compression::new(level));
    let mut t = tar::Builder::new(HashingWriter::new(gz));
    for (_, e) in entries {
        let f = match e {
            Entry::Dir(path, mode) => {
                let mut h = header(0, mode, mtime, tar::EntryType::Directory);
                t.append_data(&mut h, format!("{path}/"), io::empty())
                    .map_err(io_err(format!("adding {path}/ to a layer")))?;
                continue;
            }
            Entry::File(f) => f,
        };
        let file =
            File::open(&f.source).map_err(io_err(format!("opening {}", f.source.display())))?;
        let len = file
            .metadata()
            .map_err(io_err(format!("stat {}", f.source.display())))?
            .len();
        let mut h = header(len, f.mode, mtime, tar::EntryType::Regular);
        t.append_data(
            &mut h,
            &f.path,
            io::BufReader::with_capacity(1 << 16, file).take(len),
        )
        .map_err(io_err(format!("adding {} to a layer", f.path)))?;
    }
    let raw = t.into_inner().map_err(io_err("finishing a layer"))?;
    let (diff_id, _, gz) = raw.finish();
    let compressed = gz.finish().map_err(io_err("finishing a layer"))?;
    let (digest, size, buf) = compressed.finish();
    buf.into_inner()
        .map_err(|e| io_err("finishing a layer")(e.into_error()))?
        .flush()
        .map_err(io_err("finishing a layer"))?;
    Ok(Layer {
        descriptor: Descriptor {
            media_type: crate::types::OCI_LAYER_GZIP.into(),
            digest,
            size,
            platform: None,
            annotations: BTreeMap::new(),
        },
        diff_id,
    })
}

/// An image read from an OCI layout directory: the `linux/<arch>` manifest (nested indexes
/// followed), with every blob's size and digest checked.
pub fn read_layout(dir: &Path, arch: &str) -> Result<ImageFiles, Error> {
    let what = dir.display().to_string();
    check_layout_marker(dir, &what)?;
    let blob = |d: &Descriptor| -> Result<PathBuf, Error> {
        let p = dir.join("blobs/sha256").join(d.digest.hex());
        let f = open_regular(&p, &format!("{what}: blob {}", d.digest))?;
        let mut w = HashingWriter::new(io::sink());
        io::copy(&mut f.take(d.size + 1), &mut w)
            .map_err(io_err(format!("{what}: reading {}", d.digest)))?;
        let (got, n, _) = w.finish();
        if n != d.size {
            return Err(Error::Size {
                digest: d.digest.clone(),
                expected: d.size,
                got: n,
            });
        }
        if got != d.digest {
            return Err(Error::Mismatch {
                expected: d.digest.clone(),
                got,
            });
        }
        Ok(p)
    };
    let read_small = |d: &Descriptor| -> Result<Vec<u8>, Error> {
        if d.size > crate::types::MAX_MANIFEST {
            return Err(Error::TooLarge {
                what: format!("{what}: {}", d.digest),
                max: crate::types::MAX_MANIFEST,
            });
        }
        let p = blob(d)?;
        fs::read(&p).map_err(io_err(format!("{what}: reading {}", d.digest)))
    };
    let ip = dir.join("index.json");
    let mut f = open_regular(&ip, &format!("{what}: index.json"))?;
    let mut bytes = Vec::new();
    (&mut f)
        .take(crate::types::MAX_MANIFEST + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err(format!("{what}: index.json")))?;
    let mut doc = parse_document(&bytes, OCI_INDEX, &format!("{what}/index.json"))?;
    let mut desc: Option<Descriptor> = None;
    for _ in 0..8 {
        match doc {
            Document::Manifest(m) => {
                let d = desc.ok_or_else(|| Error::Manifest {
                    what: what.clone(),
                    why: "index.json is not an index".into(),
                })?;
                crate::types::check_config_platform(&read_small(&m.config)?, arch, &what)?;
                let mut blobs = BTreeMap::new();
                for l in std::iter::once(&m.config).chain(m.layers.iter()) {
                    blobs.insert(l.digest.clone(), blob(l)?);
                }
                return Ok(ImageFiles {
                    descriptor: d,
                    manifest: bytes,
                    blobs,
                });
            }
            Document::Index(ix) => {
                // a platform-tagged linux/<arch> manifest, else an entry without a platform
                // (a nested index, or a manifest whose config is checked above)
                let d = crate::types::select_platform(&ix, arch, &what)
                    .cloned()
                    .or_else(|e| {
                        ix.manifests
                            .iter()
                            .find(|d| d.platform.is_none())
                            .cloned()
                            .ok_or(e)
                    })?;
                bytes = read_small(&d)?;
                doc = parse_document(&bytes, &d.media_type, &what)?;
                desc = Some(d);
            }
        }
    }
    Err(Error::Manifest {
        what,
        why: "indexes nested too deeply".into(),
    })
}

/// Opens a file of a layout, refusing anything but a regular file before opening it (a FIFO
/// would block the open, a device never end).
fn open_regular(p: &Path, what: &str) -> Result<File, Error> {
    let meta = fs::metadata(p).map_err(io_err(what.to_string()))?;
    if !meta.is_file() {
        return Err(Error::Manifest {
            what: what.to_string(),
            why: "not a regular file".into(),
        });
    }
    File::open(p).map_err(io_err(what.to_string()))
}

/// Checks `oci-layout` (`{"imageLayoutVersion":"1.0.0"}`), read with a bound.
fn check_layout_marker(dir: &Path, what: &str) -> Result<(), Error> {
    #[derive(serde::Deserialize)]
    struct Marker {
        #[serde(rename = "imageLayoutVersion")]
        version: String,
    }
    let not_layout = |why: String| Error::Manifest {
        what: what.to_string(),
        why: format!("not an OCI image layout ({why})"),
    };
    let f =
        File::open(dir.join("oci-layout")).map_err(|e| not_layout(format!("oci-layout: {e}")))?;
    let mut bytes = Vec::new();
    f.take(4096)
        .read_to_end(&mut bytes)
        .map_err(|e| not_layout(format!("oci-layout: {e}")))?;
    let m: Marker =
        serde_json::from_slice(&bytes).map_err(|e| not_layout(format!("oci-layout: {e}")))?;
    if m.version != "1.0.0" {
        return Err(not_layout(format!(
            "unsupported imageLayoutVersion {:?}",
            m.version
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(dir: &Path, data: &[u8]) -> Descriptor {
        let d = Digest::of(data);
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("blobs/sha256").join(d.hex()), data).unwrap();
        Descriptor {
            media_type: crate::types::OCI_MANIFEST.into(),
            digest: d,
            size: data.len() as u64,
            platform: None,
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn untagged_manifest_must_match_the_arch() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        let mut config = put(
            dir,
            br#"{"architecture":"arm64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
        );
        config.media_type = crate::types::OCI_CONFIG.into();
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{},"layers":[]}}"#,
            crate::types::OCI_MANIFEST,
            serde_json::to_string(&config).unwrap()
        );
        let md = put(dir, m.as_bytes());
        fs::write(dir.join("oci-layout"), OCI_LAYOUT).unwrap();
        fs::write(dir.join("index.json"), index_json(&[md]).unwrap()).unwrap();
        let e = read_layout(dir, "amd64").unwrap_err();
        assert!(matches!(e, Error::Platform { .. }), "{e}");
        assert!(e.to_string().contains("linux/arm64"), "{e}");
        let img = read_layout(dir, "arm64").unwrap();
        assert_eq!(img.blobs.len(), 1);
    }
}
