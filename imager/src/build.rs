//! Writing the artifacts of a resolved profile (spec §2).
//!
//! In: a validated [`Profile`] and [`BuildOptions`]. Out: files in the output directory, each
//! written under a temporary name (`.<name>.*.partial`) and renamed into place only when
//! complete, so a failed build leaves nothing behind. Post-processing (`outFormat`) streams
//! the primary artifact through the compressor into a second temp file.

use crate::error::{Error, ExitCode, Result, WithCode};
use crate::profile::{OutFormat, OutputKind, Profile};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Build-wide options.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Output directory (created if missing).
    pub output_dir: PathBuf,
    /// SOURCE_DATE_EPOCH.
    pub epoch: i64,
    /// Compute sha256 of each artifact.
    pub digests: bool,
}

/// A finished artifact.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Artifact {
    /// Output kind.
    pub kind: &'static str,
    /// Path.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// sha256 (when requested).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

fn check_input(field: &str, path: &str) -> Result<PathBuf> {
    let p = PathBuf::from(path);
    let meta = std::fs::metadata(&p).code(ExitCode::Io, || format!("{field}: {path}"))?;
    if !meta.is_file() {
        return Err(Error::new(
            ExitCode::Io,
            anyhow::anyhow!("{field}: {path}: not a regular file"),
        ));
    }
    Ok(p)
}

/// META values of the profile (later duplicates overwrite earlier ones).
pub fn meta_values(p: &Profile) -> Result<adv::Adv> {
    let mut a = adv::Adv::new();
    for (i, m) in p.customization.meta_contents.iter().enumerate() {
        a.set(m.key, m.value.as_bytes())
            .map_err(|e| Error::invalid(format!("field customization.metaContents[{i}]: {e}")))?;
    }
    Ok(a)
}

fn temp_in(dir: &Path, name: &str) -> Result<tempfile::NamedTempFile> {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".partial")
        .tempfile_in(dir)
        .code(ExitCode::Io, || {
            format!("creating a temporary file in {}", dir.display())
        })?;
    // artifacts are 0644 whatever the umask (fchmod is not subject to it)
    t.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .code(ExitCode::Io, || format!("chmod {}", t.path().display()))?;
    Ok(t)
}

/// Syncs a finished temp file and renames it to its final name.
fn commit(t: tempfile::NamedTempFile, path: &Path) -> Result<()> {
    t.as_file()
        .sync_all()
        .code(ExitCode::Io, || format!("syncing {}", path.display()))?;
    t.persist(path)
        .code(ExitCode::Io, || format!("renaming into {}", path.display()))?;
    Ok(())
}

fn threads() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// Streams `src` through the `fmt` compressor into `dst`.
pub fn compress(fmt: OutFormat, src: &mut File, dst: &mut File) -> Result<()> {
    use std::io::{Seek, SeekFrom};
    src.seek(SeekFrom::Start(0))
        .code(ExitCode::Io, || "rewinding".into())?;
    let mut r = BufReader::with_capacity(1 << 20, src);
    let w = BufWriter::with_capacity(1 << 20, dst);
    let io = |what: &'static str| move || format!("{what} compression");
    match fmt {
        OutFormat::Raw => {
            let mut w = w;
            std::io::copy(&mut r, &mut w).code(ExitCode::Io, io("copy"))?;
            w.flush().code(ExitCode::Io, io("copy"))?;
        }
        OutFormat::Zst => {
            let mut e = zstd::stream::Encoder::new(w, 18).code(ExitCode::Io, io("zstd"))?;
            // multithreaded mode: its output does not depend on the number of workers
            e.multithread(threads()).code(ExitCode::Io, io("zstd"))?;
            e.include_checksum(true).code(ExitCode::Io, io("zstd"))?;
            std::io::copy(&mut r, &mut e).code(ExitCode::Io, io("zstd"))?;
            e.finish()
                .and_then(|mut w| w.flush())
                .code(ExitCode::Io, io("zstd"))?;
        }
        OutFormat::Xz => {
            let stream = liblzma::stream::MtStreamBuilder::new()
                .preset(0)
                .threads(threads())
                .check(liblzma::stream::Check::Crc64)
                .encoder()
                .code(ExitCode::Io, io("xz"))?;
            let mut e = liblzma::write::XzEncoder::new_stream(w, stream);
            std::io::copy(&mut r, &mut e).code(ExitCode::Io, io("xz"))?;
            e.finish()
                .and_then(|mut w| w.flush())
                .code(ExitCode::Io, io("xz"))?;
        }
        OutFormat::Gz => {
            let mut e = flate2::GzBuilder::new()
                .mtime(0)
                .write(w, flate2::Compression::new(6));
            std::io::copy(&mut r, &mut e).code(ExitCode::Io, io("gzip"))?;
            e.finish()
                .and_then(|mut w| w.flush())
                .code(ExitCode::Io, io("gzip"))?;
        }
        OutFormat::TarGz => {
            return Err(Error::unsupported(
                "output format .tar.gz is not implemented yet",
            ));
        }
    }
    Ok(())
}

fn suffix(fmt: OutFormat) -> &'static str {
    match fmt {
        OutFormat::Raw => "",
        OutFormat::Zst => ".zst",
        OutFormat::Xz => ".xz",
        OutFormat::Gz => ".gz",
        OutFormat::TarGz => ".tar.gz",
    }
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).code(ExitCode::Io, || format!("reading {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .code(ExitCode::Io, || format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Builds every artifact of `p`.
pub fn build(p: &Profile, o: &BuildOptions) -> Result<Vec<Artifact>> {
    let meta = meta_values(p)?;
    let files = match p.output.kind {
        OutputKind::Image => vec![
            check_input("input.kernel.path", &p.input.kernel.path)?,
            check_input("input.initramfs.path", &p.input.initramfs.path)?,
            check_input("input.sdBoot.path", &p.input.sd_boot.path)?,
        ],
        OutputKind::Kernel => vec![check_input("input.kernel.path", &p.input.kernel.path)?],
        OutputKind::Initramfs => {
            vec![check_input(
                "input.initramfs.path",
                &p.input.initramfs.path,
            )?]
        }
        _ => vec![],
    };
    let meta_env = (p.output.kind != OutputKind::Image && !meta.is_empty()).then(|| {
        let pairs: Vec<(u8, String)> = p
            .customization
            .meta_contents
            .iter()
            .map(|m| (m.key, m.value.clone()))
            .collect();
        crate::meta_env::encode(&pairs, p.quirks().supports_compressed_encoded_meta())
    });
    let cmdline = crate::cmdline::build(p, meta_env.as_deref()).to_string();

    std::fs::create_dir_all(&o.output_dir).code(ExitCode::Io, || {
        format!("creating output directory {}", o.output_dir.display())
    })?;
    let name = p.output_name();
    let mut tmp = temp_in(&o.output_dir, &name)?;
    match p.output.kind {
        OutputKind::Image => {
            let io = p.output.image_options.clone().unwrap_or_default();
            let spec = installer::ImageSpec {
                arch: p.arch.clone(),
                disk_size: io.disk_size,
                sector_size: if io.disk_sector_size == 0 {
                    512
                } else {
                    u64::from(io.disk_sector_size)
                },
                bootloader: installer::Bootloader::parse(&io.bootloader).ok_or_else(|| {
                    Error::invalid(format!(
                        "field output.imageOptions.bootloader: {:?}",
                        io.bootloader
                    ))
                })?,
                boot_size_mib: p.quirks().boot_size_mib(),
                os_name: if p.name.is_empty() {
                    "Talos".into()
                } else {
                    p.name.clone()
                },
                version: p.version.clone(),
                cmdline,
                files: installer::BootFiles {
                    kernel: files[0].clone(),
                    initramfs: files[1].clone(),
                    sd_boot: files[2].clone(),
                },
                meta,
                epoch: o.epoch,
            };
            installer::write_image(tmp.as_file_mut(), &spec).map_err(|e| {
                let code = match e {
                    installer::InstallError::Unsupported(_) => ExitCode::Unsupported,
                    installer::InstallError::Io { .. } => ExitCode::Io,
                    _ => ExitCode::Assembly,
                };
                Error::new(code, e).context(format!("writing disk image {name}"))
            })?;
        }
        OutputKind::Kernel | OutputKind::Initramfs => {
            let mut src = File::open(&files[0])
                .code(ExitCode::Io, || format!("reading {}", files[0].display()))?;
            std::io::copy(&mut src, tmp.as_file_mut())
                .code(ExitCode::Io, || format!("writing {name}"))?;
        }
        OutputKind::Cmdline => {
            tmp.as_file_mut()
                .write_all(cmdline.as_bytes())
                .code(ExitCode::Io, || format!("writing {name}"))?;
        }
        other => {
            return Err(Error::unsupported(format!(
                "output kind {} is not implemented yet",
                other.as_str()
            )));
        }
    }
    let fmt = p.output.out_format;
    let final_name = format!("{name}{}", suffix(fmt));
    let final_path = o.output_dir.join(&final_name);
    if fmt == OutFormat::Raw {
        commit(tmp, &final_path)?;
    } else {
        let mut z = temp_in(&o.output_dir, &final_name)?;
        compress(fmt, tmp.as_file_mut(), z.as_file_mut())
            .map_err(|e| e.context(format!("post-processing {name}")))?;
        commit(z, &final_path)?;
    }
    let size = std::fs::metadata(&final_path)
        .code(ExitCode::Io, || format!("stat {}", final_path.display()))?
        .len();
    let sha256 = if o.digests {
        Some(sha256_file(&final_path)?)
    } else {
        None
    };
    Ok(vec![Artifact {
        kind: p.output.kind.as_str(),
        path: final_path,
        size,
        sha256,
    }])
}
