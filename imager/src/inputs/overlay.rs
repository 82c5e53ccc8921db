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
use crate::profile::Profile;

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
#[derive(Debug, serde::Deserialize)]
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
#[derive(Debug, serde::Deserialize)]
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
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Blob {
    from: String,
    /// Byte offset from the start of the disk.
    offset: u64,
}

/// What a file in the ESP is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EspSource {
    /// A file of the overlay image (in staging).
    File(PathBuf),
    /// Generated text.
    Bytes(Vec<u8>),
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
    pub esp: BTreeMap<String, EspSource>,
    /// `(offset, file, size)` blobs.
    pub blobs: Vec<(u64, PathBuf, u64)>,
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

/// The profile's overlay image as an extraction source.
fn source_of(
    p: &Profile,
    fetcher: Option<&super::registry::Fetcher>,
    staging: &Path,
) -> Result<Source> {
    let Some(o) = &p.overlay else {
        return Err(Error::new(
            ExitCode::Unknown,
            anyhow::anyhow!("no overlay in the profile"),
        ));
    };
    let a = &o.image;
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
        f.pull_layout("overlay.image", a, p.arch.as_str(), &dir)?;
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

/// Loads the profile's overlay for board `overlay.name` (default `default`).
pub fn load(
    p: &Profile,
    fetcher: Option<&super::registry::Fetcher>,
    staging: &Path,
    opts: &extensions::Options,
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
    let src = source_of(p, fetcher, staging)?;
    let source = src.label.clone();
    let tree = extensions::extract(&src, p.arch.as_str(), &staging.join("overlay"), opts)?;
    let Some(node) = tree.get(OVERLAY_YAML) else {
        if tree.get(&format!("installers/{board_name}")).is_some() {
            return Err(Error::unsupported(format!(
                "{source}: the overlay has no {OVERLAY_YAML}, only an installer program \
                 (installers/{board_name}); running overlay installers is not implemented \
                 yet, declarative overlays are (docs/formats/overlays.md)"
            )));
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
    let value = crate::profile::parse_yaml(&text, OVERLAY_YAML).map_err(|e| bad(&source, e))?;
    let file: File = serde_path_to_error::deserialize(value).map_err(|e| {
        bad(
            &source,
            format!("{OVERLAY_YAML}: field {}: {}", e.path(), e.inner()),
        )
    })?;
    if file.version != "v1" {
        return Err(bad(
            &source,
            format!(
                "{OVERLAY_YAML}: version {:?} (this imager reads v1)",
                file.version
            ),
        ));
    }
    let Some(board) = file.boards.get(board_name) else {
        return Err(bad(
            &source,
            format!(
                "overlay.name {board_name:?} is not a board of this overlay (it has: {})",
                file.boards.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
    };
    let source = format!("{source} board {board_name}");
    if board.kernel_args.len() > MAX_ARGS || board.esp.len() + board.blobs.len() > MAX_ITEMS {
        return Err(bad(&source, "too many kernel arguments, files or blobs"));
    }
    for a in &board.kernel_args {
        if a.is_empty() || a.chars().any(|c| c.is_control() || c == ' ') {
            return Err(bad(&source, format!("kernel argument {a:?}")));
        }
    }
    // options: the board's defaults, overridden by the profile's (only known names)
    let mut values = board.options.clone();
    for (k, v) in &po.options {
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
                                esp.insert(target, EspSource::File(blob.clone()));
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
                    esp.insert(clean_path(&source, "esp.to", to)?, EspSource::File(blob));
                }
            }
            (None, Some(text)) => {
                let t = expand(&source, text, &values)?;
                esp.insert(
                    clean_path(&source, "esp.to", to)?,
                    EspSource::Bytes(t.into_bytes()),
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
