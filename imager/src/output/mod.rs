//! Stage 4 of the pipeline: the artifacts (docs/formats/outputs.md), written by one atomic
//! writer, then signed.
//!
//! In: the validated profile, the resolved [`Inputs`] and the [`Assembly`]. Out: files (and
//! the installer's OCI layout directory) in the output directory. Every artifact is written
//! under a temporary name in the build's private directory (see [`workdir`]), synced, given
//! mode 0644, and renamed into place only when complete, so a failed or killed build leaves
//! no artifact behind, and the next build removes what a killed one left. Post-processing
//! (`outFormat`) streams the primary artifact through the compressor into a second temp file.

pub mod disk;
pub mod efi;
pub mod imager_image;
pub mod installer_image;
pub mod iso;
pub mod pxe;
pub mod sign;
pub mod splash;
pub mod tar;
pub mod uki;
pub mod workdir;

use crate::assemble::Assembly;
use crate::error::{Error, ExitCode, Result, WithCode};
use crate::inputs::Inputs;
use crate::profile::{OutFormat, OutputKind, Profile};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

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

/// The one way artifacts reach the output directory.
#[derive(Debug, Clone)]
pub struct Writer {
    /// Output directory.
    pub dir: PathBuf,
    /// The build's private directory (inside `dir`) for temporary files.
    pub tmp: PathBuf,
    /// SOURCE_DATE_EPOCH (compressor and archive timestamps).
    pub epoch: i64,
    /// Compute the sha256 of each artifact.
    pub digests: bool,
}

/// A temporary file in `dir` (the build's private directory), mode 0644 whatever the umask.
pub(crate) fn temp_in(dir: &Path, name: &str) -> Result<tempfile::NamedTempFile> {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".partial")
        .tempfile_in(dir)
        .code(ExitCode::Io, || {
            format!("creating a temporary file in {}", dir.display())
        })?;
    // fchmod is not subject to the umask
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

/// Post-processes `src` into `dst` (docs/formats/outputs.md): Talos's levels (xz -0, gzip -6,
/// zstd -18, `.tar.gz` of a sparse `disk.raw`), on every core, with output independent of the
/// core count.
pub fn compress(fmt: OutFormat, src: &Path, dst: &mut File, epoch: i64) -> Result<()> {
    let f = match fmt {
        OutFormat::Raw => return Ok(()),
        OutFormat::Xz => postfmt::Format::Xz,
        OutFormat::Gz => postfmt::Format::Gz,
        OutFormat::Zst => postfmt::Format::Zst,
        OutFormat::TarGz => postfmt::Format::TarGz,
    };
    let opts = postfmt::Options {
        epoch: u64::try_from(epoch).unwrap_or(0),
        ..Default::default()
    };
    let mut w = BufWriter::with_capacity(1 << 20, dst);
    postfmt::compress(f, src, &mut w, &opts)
        .code(ExitCode::Io, || format!("{} compression", fmt.suffix()))?;
    w.flush()
        .code(ExitCode::Io, || format!("{} compression", fmt.suffix()))?;
    Ok(())
}

impl Writer {
    /// Writes one artifact: `fill` writes the content into a temp file in the output
    /// directory, which is post-processed with `fmt` and renamed to `<name><suffix>` when
    /// complete.
    pub fn file(
        &self,
        kind: &'static str,
        name: &str,
        fmt: OutFormat,
        fill: impl FnOnce(&mut File) -> Result<()>,
    ) -> Result<Artifact> {
        let mut tmp = temp_in(&self.tmp, name)?;
        let step = crate::progress::Step::file(&format!("write {name}"), tmp.path().into());
        fill(tmp.as_file_mut())?;
        step.finish();
        let final_name = format!("{name}{}", fmt.suffix());
        let path = self.dir.join(&final_name);
        if fmt == OutFormat::Raw {
            commit(tmp, &path)?;
        } else {
            let mut z = temp_in(&self.tmp, &final_name)?;
            let step =
                crate::progress::Step::file(&format!("compress {final_name}"), z.path().into());
            compress(fmt, tmp.path(), z.as_file_mut(), self.epoch)
                .map_err(|e| e.context(format!("post-processing {name}")))?;
            step.finish();
            commit(z, &path)?;
        }
        self.artifact(kind, path)
    }

    /// Writes bytes as an artifact (uncompressed).
    pub fn bytes(&self, kind: &'static str, name: &str, data: &[u8]) -> Result<Artifact> {
        self.file(kind, name, OutFormat::Raw, |f| {
            f.write_all(data).code(ExitCode::Io, || "writing".into())
        })
    }

    /// Writes a directory artifact: `fill` populates a hidden temporary directory, which is
    /// renamed to `name` (replacing an older one) when complete.
    pub fn dir(&self, name: &str, fill: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
        let final_dir = self.dir.join(name);
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .tempdir_in(&self.tmp)
            .code(ExitCode::Io, || format!("creating {}", final_dir.display()))?;
        fill(tmp.path())?;
        if final_dir.exists() {
            std::fs::remove_dir_all(&final_dir).code(ExitCode::Io, || {
                format!("replacing {}", final_dir.display())
            })?;
        }
        let tmp_path = tmp.keep();
        std::fs::rename(&tmp_path, &final_dir).code(ExitCode::Io, || {
            format!("renaming into {}", final_dir.display())
        })?;
        Ok(final_dir)
    }

    fn artifact(&self, kind: &'static str, path: PathBuf) -> Result<Artifact> {
        let size = std::fs::metadata(&path)
            .code(ExitCode::Io, || format!("stat {}", path.display()))?
            .len();
        let sha256 = if self.digests {
            Some(crate::io::sha256_hex(&path)?)
        } else {
            None
        };
        Ok(Artifact {
            kind,
            path,
            size,
            sha256,
        })
    }
}

/// Copies `src` into the artifact file.
fn copy_from(src: &Path) -> impl FnOnce(&mut File) -> Result<()> + '_ {
    move |f| {
        let mut r = File::open(src).code(ExitCode::Io, || format!("reading {}", src.display()))?;
        std::io::copy(&mut r, f).code(ExitCode::Io, || format!("copying {}", src.display()))?;
        Ok(())
    }
}

fn required<'a>(what: &str, v: &'a Option<PathBuf>) -> Result<&'a Path> {
    v.as_deref().ok_or_else(|| {
        Error::new(
            ExitCode::Unknown,
            anyhow::anyhow!("{what} was not resolved for this output kind"),
        )
    })
}

/// What an otherwise valid profile builds only in part, to tell the user.
pub fn limitations(p: &Profile) -> Vec<String> {
    let mut v = Vec::new();
    if p.output.kind == OutputKind::Pxe && p.output.out_format != OutFormat::Raw {
        v.push(format!(
            "pxe: files stay uncompressed for network boot (outFormat {} not applied)",
            p.output.out_format.suffix()
        ));
    }
    v
}

/// Writes every artifact of `p`. `push` is `--push REF` with its plain-HTTP flag (installer
/// output); `sign` signs the pushed image.
pub fn write(
    p: &Profile,
    inputs: &Inputs,
    a: &Assembly,
    w: &Writer,
    push: Option<&(oci::Reference, bool)>,
    sign: Option<&cosign::SigningKey>,
) -> Result<Vec<Artifact>> {
    let kind = p.output.kind.as_str();
    let name = p.output_name();
    let fmt = p.output.out_format;
    // the disk image's spec holds every input it reads: checked before anything is created
    let spec = match p.output.kind {
        OutputKind::Image => Some(disk::image_spec(p, inputs, a)?),
        _ => None,
    };
    std::fs::create_dir_all(&w.dir).code(ExitCode::Io, || {
        format!("creating output directory {}", w.dir.display())
    })?;
    match p.output.kind {
        OutputKind::Image => {
            let spec = spec.ok_or_else(|| {
                Error::new(ExitCode::Unknown, anyhow::anyhow!("no disk image spec"))
            })?;
            Ok(vec![disk::write(p, &spec, inputs.sd_stub.as_deref(), w)?])
        }
        OutputKind::Kernel => {
            let k = required("input.kernel", &inputs.kernel)?;
            Ok(vec![w.file(kind, &name, fmt, copy_from(k))?])
        }
        OutputKind::Initramfs => {
            let i = required("input.initramfs", &a.initramfs)?;
            Ok(vec![w.file(kind, &name, fmt, copy_from(i))?])
        }
        OutputKind::Cmdline => Ok(vec![w.file(kind, &name, fmt, |f| {
            f.write_all(a.cmdline.as_bytes())
                .code(ExitCode::Io, || "writing".into())
        })?]),
        OutputKind::Iso => {
            let kernel = required("input.kernel", &inputs.kernel)?;
            let initramfs = required("input.initramfs", &a.initramfs)?;
            let set = efi::prepare(
                p,
                &a.cmdline,
                &efi::EfiInputs {
                    kernel,
                    initramfs,
                    sd_boot: required("input.sdBoot", &inputs.sd_boot)?,
                    sd_stub: inputs.sd_stub.as_deref(),
                },
                &w.tmp,
                w.epoch,
            )?;
            let files = iso::IsoInputs {
                kernel,
                initramfs,
                efi: &set,
                grub: &inputs.grub,
            };
            Ok(vec![w.file(kind, &name, fmt, |f| {
                iso::write_iso(p, &a.cmdline, &files, w.epoch, f)
            })?])
        }
        OutputKind::Pxe => pxe::write(
            p,
            required("input.kernel", &inputs.kernel)?,
            required("input.initramfs", &a.initramfs)?,
            &a.cmdline,
            w,
        ),
        OutputKind::Installer => {
            let base = inputs.base.as_ref().ok_or_else(|| {
                Error::new(
                    ExitCode::Unknown,
                    anyhow::anyhow!("the base installer was not loaded"),
                )
            })?;
            let boot = efi::EfiInputs {
                kernel: required("input.kernel", &inputs.kernel)?,
                initramfs: required("input.initramfs", &a.initramfs)?,
                sd_boot: required("input.sdBoot", &inputs.sd_boot)?,
                sd_stub: inputs.sd_stub.as_deref(),
            };
            let img =
                installer_image::assemble(p, w, base, &boot, &a.cmdline, inputs.overlay.as_ref())?;
            let mut arts = installer_image::write(p, w, base, &img)?;
            if let Some((target, insecure)) = push {
                let f = crate::inputs::registry::required(inputs.fetcher.as_ref())?;
                let d = f.push(target, *insecure, &img.files)?;
                if let Some(k) = sign {
                    f.push_signature(target, *insecure, &d, k)?;
                }
                arts.push(Artifact {
                    kind: "pushed",
                    path: PathBuf::from(format!("{}@{d}", target.name())),
                    size: img.files.descriptor.size,
                    sha256: Some(d.hex().to_string()),
                });
            }
            Ok(arts)
        }
        OutputKind::Uki => {
            let files = uki::UkiInputs {
                kernel: required("input.kernel", &inputs.kernel)?,
                initramfs: required("input.initramfs", &a.initramfs)?,
                stub: required("input.sdStub", &inputs.sd_stub)?,
            };
            let keys = p
                .is_secureboot()
                .then(|| uki::secureboot_keys(p))
                .transpose()?;
            Ok(vec![w.file(kind, &name, fmt, |f| {
                let mut bw = BufWriter::with_capacity(1 << 16, f);
                for note in uki::write(p, &a.cmdline, &files, w.epoch, keys.as_ref(), &mut bw)? {
                    eprintln!("imager: {note}");
                }
                bw.flush().code(ExitCode::Io, || "writing the UKI".into())
            })?])
        }
        other @ OutputKind::Unknown => Err(Error::unsupported(format!(
            "output kind {} is not implemented yet",
            other.as_str()
        ))),
    }
}
