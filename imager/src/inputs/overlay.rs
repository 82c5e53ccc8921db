//! Board overlays (docs/formats/overlays.md): the overlay image is extracted like an extension
//! (every path checked, sizes bounded), and its declarative `overlay.yaml` describes what the
//! board needs — kernel arguments, room before the first partition, files for the ESP, and
//! bootloader blobs at byte offsets of the disk — as data the imager applies itself, with no
//! code of the overlay run.
//!
//! In: `overlay` of the profile and the extracted image. Out: an [`Overlay`] whose files stay in
//! the build's staging directory. Offsets are checked against the disk layout when the image
//! is planned (`installer::plan`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::extensions::{self, Archive, Source};
use super::tree::{Kind, Tree};
use crate::error::{Error, ExitCode, Result};
use crate::profile::{ContainerAsset, Profile};

/// The declarative description's file name at the overlay image's root.
pub const OVERLAY_YAML: &str = "overlay.yaml";

/// Bound on `overlay.yaml`.
const MAX_YAML: u64 = 1 << 20;
/// Bounds on what one board may ask for.
const MAX_ITEMS: usize = 4096;
const MAX_ARGS: usize = 64;

/// `overlay.yaml`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct File {
    /// `v1`.
    version: String,
    /// Boards by name (the profile's `overlay.name`).
    boards: BTreeMap<String, Board>,
}

/// One board.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Board {
    #[serde(default)]
    kernel_args: Vec<String>,
    /// LBAs left free between the GPT header and its entry array (Talos's
    /// `partitionOptions.offset`).
    #[serde(default)]
    partition_offset: u64,
    /// Options the board accepts, with their defaults.
    #[serde(default)]
    options: BTreeMap<String, String>,
    #[serde(default)]
    esp: Vec<EspItem>,
    #[serde(default)]
    blobs: Vec<Blob>,
}

/// A file (or a directory, copied whole) for the ESP, or a text with `${option}`s.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EspItem {
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    text: Option<String>,
    /// Path in the ESP (`""` or `/` is the root, for a directory).
    to: String,
}

/// Bytes written at a disk offset.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Blob {
    from: String,
    /// Byte offset from the start of the disk.
    offset: u64,
}

/// A board overlay, resolved.
#[derive(Debug)]
pub struct Overlay {
    /// The board.
    pub name: String,
    /// What the user gave (for messages).
    pub source: String,
    /// Kernel arguments (set before the defaults).
    pub kernel_args: Vec<String>,
    /// LBAs between the GPT header and the entry array.
    pub partition_offset: u64,
    /// ESP files by path.
    pub esp: BTreeMap<String, fat::Source>,
    /// `(offset, file, size)` blobs.
    pub blobs: Vec<(u64, PathBuf, u64)>,
    /// For installer images: the overlay's files as Talos bakes them under `overlay/`
    /// (`(path, file, mode)`), and their directories.
    pub layer: Vec<(String, PathBuf, u32)>,
    /// Directories of [`Overlay::layer`].
    pub layer_dirs: Vec<String>,
    /// Holds the extracted image (the files above live in its staging directory).
    _tree: Tree,
}

fn bad(source: &str, msg: impl std::fmt::Display) -> Error {
    Error::invalid(format!("{source}: {msg}"))
}

/// A relative path without `..`, empty or `.` components, control characters or a leading
/// `/` (after trimming one for `to`).
fn clean_path(source: &str, what: &str, p: &str) -> Result<String> {
    let t = p.trim_start_matches('/');
    let ok = !t.is_empty()
        && !t.chars().any(char::is_control)
        && !t.contains('\\')
        && t.split('/').all(|c| !c.is_empty() && c != "." && c != "..");
    if !ok {
        return Err(bad(
            source,
            format!("{what} {p:?} is not a plain relative path inside the overlay"),
        ));
    }
    Ok(t.to_string())
}

/// An overlay image as an extraction source (pulled for `arch` when it is a reference).
fn source_of(
    a: &ContainerAsset,
    arch: &str,
    fetcher: Option<&super::registry::Fetcher>,
    staging: &Path,
) -> Result<Source> {
    Ok(if !a.tarball_path.is_empty() {
        Source {
            label: format!("overlay.image (tarballPath {})", a.tarball_path),
            archive: Archive::Tarball(PathBuf::from(&a.tarball_path)),
        }
    } else if !a.oci_path.is_empty() {
        Source {
            label: format!("overlay.image (ociPath {})", a.oci_path),
            archive: Archive::Layout(PathBuf::from(&a.oci_path)),
        }
    } else if !a.image_ref.is_empty() {
        let f = super::registry::required(fetcher)?;
        let dir = staging.join("overlay-pulled");
        f.pull_layout("overlay.image", a, arch, &dir)?;
        Source {
            label: format!("overlay.image (imageRef {})", a.image_ref),
            archive: Archive::Layout(dir),
        }
    } else {
        return Err(Error::invalid(
            "overlay.image: no imageRef, ociPath or tarballPath",
        ));
    })
}

/// Bound on the number of profiles one overlay image carries.
const MAX_PROFILES: usize = 256;

/// Top-level profile fields an overlay's profile may not set: `input` names host files and
/// images, which are the user's to choose, not the overlay's (docs/formats/overlays.md).
const PROFILE_REFUSED: &[&str] = &["input"];

/// The profiles the overlay image `image` carries as `profiles/<name>.yaml`, by name, typed
/// and checked (docs/formats/overlays.md): they are looked up as `baseProfileName` before the
/// built-in ones. The image is read for `arch`; `staging` holds the extraction and is the
/// caller's to remove.
pub fn profiles(
    image: &ContainerAsset,
    arch: &str,
    fetcher: Option<&super::registry::Fetcher>,
    staging: &Path,
    opts: &extensions::Options,
) -> Result<BTreeMap<String, serde_json::Value>> {
    let src = source_of(image, arch, fetcher, staging)?;
    let tree = extensions::extract(&src, arch, &staging.join("overlay"), opts)?;
    let mut out = BTreeMap::new();
    for (rel, n) in tree.under("profiles") {
        let Some(name) = rel.strip_suffix(".yaml") else {
            continue;
        };
        if name.is_empty() || name.contains('/') {
            continue;
        }
        let what = format!("{}: profiles/{rel}", src.label);
        let Kind::File { blob, .. } = &n.kind else {
            return Err(bad(&what, "not a regular file"));
        };
        if out.len() == MAX_PROFILES {
            return Err(bad(
                &src.label,
                format!("more than {MAX_PROFILES} profiles"),
            ));
        }
        let bytes = crate::io::read_bytes(blob, crate::io::limits::PROFILE, &what, ExitCode::Io)?;
        let text = String::from_utf8(bytes).map_err(|_| bad(&what, "not UTF-8 text"))?;
        let v = crate::profile::parse_yaml(&text, &what)?;
        if let Some(k) = PROFILE_REFUSED.iter().find(|k| v.get(**k).is_some()) {
            return Err(bad(
                &what,
                format!(
                    "an overlay's profile may not set {k} (host files and images are the user's choice)"
                ),
            ));
        }
        if v.pointer("/overlay/image").is_some() {
            return Err(bad(&what, "an overlay's profile may not set overlay.image"));
        }
        // typed now, so that an error names the overlay's file rather than the merged profile
        crate::profile::from_value(v.clone(), &what)?;
        out.insert(name.to_string(), v);
    }
    Ok(out)
}

/// A board's kernel arguments, from `overlay.yaml` or a program's `get-options`: at most
/// [`MAX_ARGS`], each non-empty, without spaces or control characters.
fn check_kernel_args(source: &str, args: &[String]) -> Result<()> {
    if args.len() > MAX_ARGS {
        return Err(bad(source, "too many kernel arguments"));
    }
    match args
        .iter()
        .find(|a| a.is_empty() || a.chars().any(|c| c.is_control() || c == ' '))
    {
        Some(a) => Err(bad(source, format!("kernel argument {a:?}"))),
        None => Ok(()),
    }
}

/// Substitutes `${name}` with the option values; an unknown name is an error.
fn expand(source: &str, text: &str, opts: &BTreeMap<String, String>) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(j) = after.find('}') else {
            return Err(bad(source, "an unterminated ${ in an ESP text"));
        };
        let name = &after[..j];
        let v = opts.get(name).ok_or_else(|| {
            bad(
                source,
                format!("the ESP text names an unknown option {name:?}"),
            )
        })?;
        out.push_str(v);
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Reads `overlay.yaml` (`text`) for board `board_name` with the profile's `options`: the
/// board's description and the option values, every field checked that needs no image
/// (kernel arguments, option names and values, texts, target paths). `source` names the
/// overlay in errors.
fn describe(
    text: &str,
    board_name: &str,
    options: &BTreeMap<String, serde_json::Value>,
    source: &str,
) -> Result<(Board, BTreeMap<String, String>)> {
    let value = crate::profile::parse_yaml(text, OVERLAY_YAML).map_err(|e| bad(source, e))?;
    let file: File = serde_path_to_error::deserialize(value).map_err(|e| {
        bad(
            source,
            format!("{OVERLAY_YAML}: field {}: {}", e.path(), e.inner()),
        )
    })?;
    if file.version != "v1" {
        return Err(bad(
            source,
            format!(
                "{OVERLAY_YAML}: version {:?} (this imager reads v1)",
                file.version
            ),
        ));
    }
    let Some(board) = file.boards.get(board_name) else {
        return Err(bad(
            source,
            format!(
                "overlay.name {board_name:?} is not a board of this overlay (it has: {})",
                file.boards.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
    };
    let board_source = format!("{source} board {board_name}");
    let source = board_source.as_str();
    if board.esp.len() + board.blobs.len() > MAX_ITEMS {
        return Err(bad(source, "too many files or blobs"));
    }
    check_kernel_args(source, &board.kernel_args)?;
    // options: the board's defaults, overridden by the profile's (only known names)
    let mut values = board.options.clone();
    for (k, v) in options {
        if !board.options.contains_key(k) {
            return Err(Error::invalid(format!(
                "overlay.options.{k}: board {board_name} knows the options: {}",
                board.options.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        let v = match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Bool(_) | serde_json::Value::Number(_) => v.to_string(),
            _ => {
                return Err(Error::invalid(format!(
                    "overlay.options.{k}: a string, number or boolean"
                )));
            }
        };
        if v.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            return Err(Error::invalid(format!(
                "overlay.options.{k}: control characters other than newline and tab"
            )));
        }
        values.insert(k.clone(), v);
    }
    for item in &board.esp {
        let to = item.to.trim_matches('/');
        if item.text.is_some() || !to.is_empty() {
            clean_path(source, "esp.to", to)?;
        }
        if let Some(t) = &item.text {
            expand(source, t, &values)?;
        }
        if let Some(f) = &item.from {
            clean_path(source, "esp.from", f)?;
        }
    }
    for b in &board.blobs {
        clean_path(source, "blobs.from", &b.from)?;
    }
    Ok((board.clone(), values))
}

/// [`describe`] for fuzzing: any text, board and options (YAML) must give a result or one
/// error, never a panic.
pub fn fuzz_describe(text: &str, board: &str, options_yaml: &str) {
    let options = crate::profile::parse_yaml(options_yaml, "options")
        .ok()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let _ = describe(text, board, &options, "fuzz");
}

/// Loads the profile's overlay for board `overlay.name` (default `default`).
pub fn load(
    p: &Profile,
    fetcher: Option<&super::registry::Fetcher>,
    staging: &Path,
    opts: &extensions::Options,
    timeout: std::time::Duration,
) -> Result<Overlay> {
    let Some(po) = &p.overlay else {
        return Err(Error::new(
            ExitCode::Unknown,
            anyhow::anyhow!("no overlay in the profile"),
        ));
    };
    let board_name = if po.name.is_empty() {
        "default"
    } else {
        po.name.as_str()
    };
    let src = source_of(&po.image, p.arch.as_str(), fetcher, staging)?;
    let source = src.label.clone();
    let mut tree = extensions::extract(&src, p.arch.as_str(), &staging.join("overlay"), opts)?;
    if p.output.kind == crate::profile::OutputKind::Installer {
        return bake(board_name, &source, tree);
    }
    let Some(node) = tree.get(OVERLAY_YAML) else {
        let program_path = format!("installers/{board_name}");
        // Talos's overlays are programs, run on this host: an image index is read for the
        // host's architecture then (its artifacts are those of every target)
        let host = if cfg!(target_arch = "aarch64") {
            "arm64"
        } else {
            "amd64"
        };
        if tree.get(&program_path).is_some()
            && host != p.arch.as_str()
            && matches!(src.archive, Archive::Layout(_))
        {
            tree = extensions::extract(&src, host, &staging.join("overlay-host"), opts)?;
        }
        if let Some(Kind::File { blob, .. }) = tree.get(&program_path).map(|n| &n.kind) {
            let program = blob.clone();
            return run_program(p, board_name, &source, tree, &program, staging, timeout);
        }
        return Err(bad(
            &source,
            format!("neither {OVERLAY_YAML} nor installers/{board_name} in the overlay image"),
        ));
    };
    let Kind::File { blob, .. } = &node.kind else {
        return Err(bad(
            &source,
            format!("{OVERLAY_YAML} is not a regular file"),
        ));
    };
    let text = crate::io::read_bytes(blob, MAX_YAML, OVERLAY_YAML, ExitCode::Io)?;
    let text = String::from_utf8(text)
        .map_err(|_| bad(&source, format!("{OVERLAY_YAML} is not UTF-8")))?;
    let (board, values) = describe(&text, board_name, &po.options, &source)?;
    let board = &board;
    let source = format!("{source} board {board_name}");
    let file_of = |what: &str, from: &str| -> Result<(PathBuf, u64)> {
        let path = clean_path(&source, what, from)?;
        match tree.get(&path).map(|n| &n.kind) {
            Some(Kind::File { blob, size }) => Ok((blob.clone(), *size)),
            Some(_) => Err(bad(
                &source,
                format!("{what} {from:?} is not a regular file"),
            )),
            None => Err(bad(
                &source,
                format!("{what} {from:?} is not in the overlay image"),
            )),
        }
    };
    let mut esp = BTreeMap::new();
    for item in &board.esp {
        let to = item.to.trim_matches('/');
        match (&item.from, &item.text) {
            (Some(from), None) => {
                let from_clean = clean_path(&source, "esp.from", from)?;
                if let Some(Kind::Dir) = tree.get(&from_clean).map(|n| &n.kind) {
                    for (rel, n) in tree.under(&from_clean) {
                        match &n.kind {
                            Kind::File { blob, .. } => {
                                let target = if to.is_empty() {
                                    rel.to_string()
                                } else {
                                    format!("{to}/{rel}")
                                };
                                let target = clean_path(&source, "esp.to", &target)?;
                                esp.insert(target, fat::Source::Path(blob.clone()));
                            }
                            Kind::Dir => {}
                            Kind::Symlink(_) => {
                                return Err(bad(
                                    &source,
                                    format!("{from_clean}/{rel}: a symlink cannot go to a FAT ESP"),
                                ));
                            }
                        }
                    }
                } else {
                    let (blob, _) = file_of("esp.from", from)?;
                    esp.insert(clean_path(&source, "esp.to", to)?, fat::Source::Path(blob));
                }
            }
            (None, Some(text)) => {
                let t = expand(&source, text, &values)?;
                esp.insert(
                    clean_path(&source, "esp.to", to)?,
                    fat::Source::Bytes(t.into_bytes()),
                );
            }
            _ => {
                return Err(bad(
                    &source,
                    format!("esp item for {:?}: exactly one of from and text", item.to),
                ));
            }
        }
        if esp.len() > MAX_ITEMS {
            return Err(bad(&source, "too many ESP files"));
        }
    }
    let mut blobs = Vec::new();
    for b in &board.blobs {
        let (blob, size) = file_of("blobs.from", &b.from)?;
        blobs.push((b.offset, blob, size));
    }
    Ok(Overlay {
        name: board_name.to_string(),
        source,
        kernel_args: board.kernel_args.clone(),
        partition_offset: board.partition_offset,
        esp,
        blobs,
        layer: Vec::new(),
        layer_dirs: Vec::new(),
        _tree: tree,
    })
}

/// The overlay for an installer image: nothing is run or applied; its files are carried as
/// Talos's installer images carry them — `artifacts/**`, the board's program renamed
/// `installers/default`, and `overlay.yaml` of a declarative overlay — for the install on the
/// node.
fn bake(board: &str, source: &str, tree: Tree) -> Result<Overlay> {
    let program = format!("installers/{board}");
    let declarative = tree.get(OVERLAY_YAML).is_some();
    if !declarative && tree.get(&program).is_none() {
        return Err(bad(
            source,
            format!("neither {OVERLAY_YAML} nor {program} in the overlay image"),
        ));
    }
    let mut layer = Vec::new();
    let mut dirs = Vec::new();
    for (path, n) in tree.entries() {
        let target =
            if path == OVERLAY_YAML || path.starts_with("artifacts/") || path == "artifacts" {
                path.clone()
            } else if *path == program {
                "installers/default".to_string()
            } else {
                continue;
            };
        match &n.kind {
            Kind::Dir => dirs.push(target),
            Kind::File { blob, .. } => layer.push((target, blob.clone(), n.mode & 0o755)),
            Kind::Symlink(_) => {
                return Err(bad(source, format!("{path}: symlinks are not carried")));
            }
        }
    }
    if !declarative {
        dirs.push("installers".into());
    }
    Ok(Overlay {
        name: board.to_string(),
        source: source.to_string(),
        kernel_args: Vec::new(),
        partition_offset: 0,
        esp: BTreeMap::new(),
        blobs: Vec::new(),
        layer,
        layer_dirs: dirs,
        _tree: tree,
    })
}

/// What an installer program's `get-options` prints (Talos's `overlay.Options`).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProgramOptions {
    #[serde(default)]
    kernel_args: Vec<String>,
    #[serde(default)]
    partition_options: PartitionOptions,
}

#[derive(Debug, Default, serde::Deserialize)]
struct PartitionOptions {
    #[serde(default)]
    offset: u64,
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::new(ExitCode::Io, anyhow::anyhow!("{what}: {e}"))
}

/// Copies `artifacts/` of the image into a real directory for the program.
fn materialize(source: &str, tree: &Tree, dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest).map_err(io_err(format!("creating {}", dest.display())))?;
    for (rel, n) in tree.under("artifacts") {
        let to = dest.join(rel);
        match &n.kind {
            Kind::Dir => std::fs::create_dir_all(&to)
                .map_err(io_err(format!("creating {}", to.display())))?,
            Kind::File { blob, .. } => {
                std::fs::copy(blob, &to).map_err(io_err(format!("copying {rel}")))?;
            }
            Kind::Symlink(_) => {
                return Err(bad(
                    source,
                    format!("artifacts/{rel}: symlinks are not passed on"),
                ));
            }
        }
    }
    Ok(())
}

/// Bound on what an installer program may leave: files for the ESP and bytes on the disk.
const MAX_EFFECT_BYTES: u64 = 256 << 20;

/// Files the program left under `<target>/boot/EFI/`, for the ESP root.
fn collect_esp(
    source: &str,
    dir: &Path,
    rel: &str,
    out: &mut BTreeMap<String, fat::Source>,
    bytes: &mut u64,
) -> Result<()> {
    let mut entries: Vec<_> = match std::fs::read_dir(dir) {
        Ok(r) => r.filter_map(|e| e.ok()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(format!("reading {}", dir.display()))(e)),
    };
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().to_string();
        let path = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let path = clean_path(source, "a file the installer wrote", &path)?;
        let meta = std::fs::symlink_metadata(e.path())
            .map_err(io_err(format!("reading {}", e.path().display())))?;
        if meta.is_dir() {
            collect_esp(source, &e.path(), &path, out, bytes)?;
        } else if meta.is_file() {
            *bytes += meta.len();
            if out.len() >= MAX_ITEMS || *bytes > MAX_EFFECT_BYTES {
                return Err(bad(
                    source,
                    "the installer left too many or too large files",
                ));
            }
            out.insert(path, fat::Source::Path(e.path()));
        } else {
            return Err(bad(
                source,
                format!("the installer left {path}, which is not a regular file or directory"),
            ));
        }
    }
    Ok(())
}

/// The runs of non-zero sectors the program wrote on the scratch disk, as blob files.
fn collect_blobs(
    source: &str,
    disk: &Path,
    size: u64,
    sector: u64,
    dir: &Path,
) -> Result<Vec<(u64, PathBuf, u64)>> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut f = std::fs::File::open(disk).map_err(io_err(format!("opening {}", disk.display())))?;
    let mut blobs: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut total = 0u64;
    let mut pos = 0;
    let mut buf = vec![0u8; sector as usize];
    while let Some((start, end)) =
        sparse::next_data(&f, pos, size).map_err(io_err(format!("reading {}", disk.display())))?
    {
        let mut at = start / sector * sector;
        f.seek(SeekFrom::Start(at))
            .map_err(io_err(format!("reading {}", disk.display())))?;
        while at < end {
            f.read_exact(&mut buf)
                .map_err(io_err(format!("reading {}", disk.display())))?;
            if !sparse::is_zero(&buf) {
                total += sector;
                if total > MAX_EFFECT_BYTES {
                    return Err(bad(
                        source,
                        "the installer wrote more than 256 MiB on the disk",
                    ));
                }
                match blobs.last_mut() {
                    Some((off, data)) if *off + data.len() as u64 == at => {
                        data.extend_from_slice(&buf)
                    }
                    _ => blobs.push((at, buf.clone())),
                }
            }
            at += sector;
        }
        pos = at.max(end);
    }
    let mut out = Vec::new();
    for (i, (off, data)) in blobs.into_iter().enumerate() {
        let path = dir.join(format!("blob-{i}"));
        std::fs::write(&path, &data).map_err(io_err(format!("writing {}", path.display())))?;
        out.push((off, path, data.len() as u64));
    }
    Ok(out)
}

/// Talos's protocol: runs `installers/<board>` in the sandbox — `get-options` for the kernel
/// arguments and the partition offset, and for disk images `install` against a scratch disk
/// of the image's size and an empty staging directory — and turns what it did into the same
/// effects a declarative overlay describes (ESP files from `<mountPrefix>/boot/EFI/`, blobs
/// from the non-zero sectors of the scratch disk), checked the same way.
fn run_program(
    p: &Profile,
    board: &str,
    source: &str,
    tree: Tree,
    program: &Path,
    staging: &Path,
    timeout: std::time::Duration,
) -> Result<Overlay> {
    use super::sandbox::{Bind, run};
    let po = p.overlay.clone().unwrap_or_default();
    let what = format!("{source}: installers/{board}");
    let dir = staging.join("overlay-run");
    std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
    let prog = dir.join("installer");
    std::fs::copy(program, &prog).map_err(io_err(format!("copying installers/{board}")))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o555))
            .map_err(io_err(format!("chmod {}", prog.display())))?;
    }
    // the sandbox holds the program and nothing to interpret or load it with: a static ELF
    // executable for this host, as Talos's overlays ship them
    let host_machine = if cfg!(target_arch = "aarch64") {
        183
    } else {
        62
    };
    crate::output::imager_image::check_static_as(&prog, &what, Some(host_machine))?;
    let artifacts = dir.join("artifacts");
    materialize(source, &tree, &artifacts)?;
    let options = serde_json::to_vec(&po.options)
        .map_err(|e| Error::new(ExitCode::Unknown, anyhow::anyhow!("overlay.options: {e}")))?;
    let ro = |host: &Path, inside: &'static str| Bind {
        host: host.to_path_buf(),
        inside,
        writable: false,
    };
    let out = run(
        &what,
        &prog,
        "get-options",
        &options,
        &[ro(&artifacts, "/artifacts")],
        &dir.join("root-options"),
        timeout,
    )?;
    let text = String::from_utf8(out).map_err(|_| bad(&what, "get-options printed no UTF-8"))?;
    let value = crate::profile::parse_yaml(&text, "get-options").map_err(|e| bad(&what, e))?;
    let opts: ProgramOptions = serde_path_to_error::deserialize(value).map_err(|e| {
        bad(
            &what,
            format!("get-options: field {}: {}", e.path(), e.inner()),
        )
    })?;
    check_kernel_args(&what, &opts.kernel_args)?;
    let mut esp = BTreeMap::new();
    let mut blobs = Vec::new();
    if p.output.kind == crate::profile::OutputKind::Image {
        let io = p.output.image_options.clone().unwrap_or_default();
        let sector = if io.disk_sector_size == 0 {
            512
        } else {
            u64::from(io.disk_sector_size)
        };
        let disk = dir.join("disk");
        std::fs::File::create(&disk)
            .and_then(|f| f.set_len(io.disk_size))
            .map_err(io_err(format!("creating {}", disk.display())))?;
        let target = dir.join("target");
        std::fs::create_dir_all(&target)
            .map_err(io_err(format!("creating {}", target.display())))?;
        let install = serde_json::json!({
            "installDisk": "/disk",
            "mountPrefix": "/target",
            "artifactsPath": "/artifacts",
            "extraOptions": po.options,
        });
        let input = serde_json::to_vec(&install)
            .map_err(|e| Error::new(ExitCode::Unknown, anyhow::anyhow!("install options: {e}")))?;
        run(
            &what,
            &prog,
            "install",
            &input,
            &[
                ro(&artifacts, "/artifacts"),
                Bind {
                    host: disk.clone(),
                    inside: "/disk",
                    writable: true,
                },
                Bind {
                    host: target.clone(),
                    inside: "/target",
                    writable: true,
                },
            ],
            &dir.join("root-install"),
            timeout,
        )?;
        let mut bytes = 0;
        collect_esp(&what, &target.join("boot/EFI"), "", &mut esp, &mut bytes)?;
        blobs = collect_blobs(&what, &disk, io.disk_size, sector, &dir)?;
        let _ = std::fs::remove_file(&disk);
    }
    Ok(Overlay {
        name: board.to_string(),
        source: what,
        kernel_args: opts.kernel_args,
        partition_offset: opts.partition_options.offset,
        esp,
        blobs,
        layer: Vec::new(),
        layer_dirs: Vec::new(),
        _tree: tree,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside() {
        assert_eq!(clean_path("s", "to", "/a/b").unwrap(), "a/b");
        for bad in ["", "../x", "a/../b", "a//b", "a/./b", "a\\b", "a\nb"] {
            assert!(clean_path("s", "to", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn options_expand() {
        let mut o = BTreeMap::new();
        o.insert("extra".to_string(), "dtparam=x".to_string());
        assert_eq!(expand("s", "a\n${extra}\n", &o).unwrap(), "a\ndtparam=x\n");
        assert!(expand("s", "${nope}", &o).is_err());
        assert!(expand("s", "${extra", &o).is_err());
    }
}
