//! System extension formats (docs/formats/extensions.md), shared by the imager (which writes them)
//! and node-runtime (which reads `extensions.yaml` at boot).
//!
//! - [`Manifest`]: an extension's `manifest.yaml` (`version: v1alpha1` + [`Metadata`]).
//! - [`Config`]: the `extensions.yaml` of the initramfs, one [`Layer`] per squashfs image, in
//!   mount order. [`Config::to_yaml`] writes it deterministically in the block style of Go's
//!   `yaml.v3` (4-space indentation), [`Config::parse`] reads any YAML of that shape.
//! - [`constraint`]: Talos's compatibility check (`blang/semver` ranges, `v` before a digit
//!   stripped, compared with the core `major.minor.patch` of the Talos version).

pub mod constraint;

use serde::{Deserialize, Serialize};

/// The only manifest version there is.
pub const MANIFEST_VERSION: &str = "v1alpha1";

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum SysextError {
    /// The YAML does not parse or has the wrong shape.
    #[error("{what}: {msg}")]
    Yaml {
        /// Which document (`manifest.yaml`, `extensions.yaml`).
        what: &'static str,
        /// The parser's message.
        msg: String,
    },
    /// A field has a bad value.
    #[error("{field}: {msg}")]
    Field {
        /// The field path, e.g. `metadata.name`.
        field: &'static str,
        /// What is wrong.
        msg: String,
    },
    /// A version or constraint does not parse.
    #[error("{0}")]
    Constraint(String),
}

/// `manifest.yaml` of an extension.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Must be [`MANIFEST_VERSION`].
    #[serde(default)]
    pub version: String,
    /// Name, version, author, …
    #[serde(default)]
    pub metadata: Metadata,
}

/// Extension metadata (also carried by every layer of `extensions.yaml`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// Extension name.
    #[serde(default)]
    pub name: String,
    /// Extension version.
    #[serde(default)]
    pub version: String,
    /// Author.
    #[serde(default)]
    pub author: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Talos compatibility.
    #[serde(default)]
    pub compatibility: Compatibility,
    /// Free-form extra information.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub extra_info: String,
}

/// `compatibility:` of [`Metadata`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compatibility {
    /// The Talos constraint.
    #[serde(default)]
    pub talos: Constraint,
}

/// `compatibility.talos:`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraint {
    /// A `blang/semver` range such as `>= v1.9.0`.
    #[serde(default)]
    pub version: String,
}

impl Manifest {
    /// Parses and checks a `manifest.yaml`: version `v1alpha1`, non-empty name and version
    /// (Talos `Load`: a zero manifest is "missing").
    pub fn parse(text: &str) -> Result<Self, SysextError> {
        // an empty document (nothing, comments, a lone `---`) is the zero manifest, as Go's
        // YAML decoder makes it: refused below for its empty version, as Talos does
        let empty = text.lines().all(|l| {
            let l = l.trim();
            l.is_empty() || l.starts_with('#') || l == "---" || l == "..."
        });
        let m: Manifest = if empty {
            Manifest::default()
        } else {
            serde_saphyr::from_str(text).map_err(|e| SysextError::Yaml {
                what: "manifest.yaml",
                msg: e.to_string(),
            })?
        };
        if m.version != MANIFEST_VERSION {
            return Err(SysextError::Field {
                field: "version",
                msg: format!(
                    "unsupported manifest version: {:?} (want {MANIFEST_VERSION:?})",
                    m.version
                ),
            });
        }
        if m.metadata.name.is_empty() {
            return Err(SysextError::Field {
                field: "metadata.name",
                msg: "empty".into(),
            });
        }
        if m.metadata.version.is_empty() {
            return Err(SysextError::Field {
                field: "metadata.version",
                msg: "empty".into(),
            });
        }
        Ok(m)
    }

    /// Talos `validateConstraints`: an empty constraint always holds; otherwise it must parse
    /// and hold for the core version of `talos_version`.
    pub fn check_compatibility(&self, talos_version: &str) -> Result<(), SysextError> {
        let c = &self.metadata.compatibility.talos.version;
        if c.is_empty() {
            return Ok(());
        }
        let v = constraint::Version::parse_tolerant(talos_version).map_err(|e| {
            SysextError::Constraint(format!("Talos version {talos_version:?}: {e}"))
        })?;
        let r = constraint::Range::parse(c).map_err(|e| {
            SysextError::Constraint(format!(
                "compatibility.talos.version {c:?}: error parsing Talos version constraint: {e}"
            ))
        })?;
        if !r.matches(&v.core()) {
            return Err(SysextError::Constraint(format!(
                "compatibility.talos.version: version constraint {c} can't be satisfied with Talos version {talos_version}"
            )));
        }
        Ok(())
    }
}

/// `extensions.yaml`: the squashfs layers in mount order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Layers.
    #[serde(default)]
    pub layers: Vec<Layer>,
}

/// One squashfs layer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// File name of the squashfs image next to `extensions.yaml` (`0.sqsh`, …).
    pub image: String,
    /// The extension's metadata.
    #[serde(default)]
    pub metadata: Metadata,
}

impl Config {
    /// Parses `extensions.yaml`. Image names must be plain file names.
    pub fn parse(text: &str) -> Result<Self, SysextError> {
        let c: Config = serde_saphyr::from_str(text).map_err(|e| SysextError::Yaml {
            what: "extensions.yaml",
            msg: e.to_string(),
        })?;
        for l in &c.layers {
            if l.image.is_empty()
                || l.image.contains('/')
                || l.image == "."
                || l.image == ".."
                || l.image.contains('\0')
            {
                return Err(SysextError::Field {
                    field: "layers[].image",
                    msg: format!("{:?} is not a plain file name", l.image),
                });
            }
        }
        Ok(c)
    }

    /// The deterministic YAML text (Go `yaml.v3` block style, 4-space indentation).
    pub fn to_yaml(&self) -> String {
        let mut o = String::from("layers:\n");
        for l in &self.layers {
            o.push_str(&format!("    - image: {}\n", scalar(&l.image, 8)));
            o.push_str("      metadata:\n");
            let m = &l.metadata;
            let ind = 10;
            let pad = " ".repeat(ind);
            for (k, v) in [
                ("name", &m.name),
                ("version", &m.version),
                ("author", &m.author),
                ("description", &m.description),
            ] {
                o.push_str(&format!("{pad}{k}: {}\n", scalar(v, ind + 4)));
            }
            o.push_str(&format!("{pad}compatibility:\n"));
            o.push_str(&format!("{pad}    talos:\n"));
            o.push_str(&format!(
                "{pad}        version: {}\n",
                scalar(&m.compatibility.talos.version, ind + 12)
            ));
            if !m.extra_info.is_empty() {
                o.push_str(&format!(
                    "{pad}extraInfo: {}\n",
                    scalar(&m.extra_info, ind + 4)
                ));
            }
        }
        o
    }
}

/// A YAML scalar for `s`: plain when unambiguous, a literal block for multi-line text,
/// single-quoted otherwise (double-quoted with escapes if it has control characters).
/// `indent` is the column of block-scalar content lines.
fn scalar(s: &str, indent: usize) -> String {
    if s.is_empty() {
        return "\"\"".into();
    }
    if s.contains('\n') && !s.chars().any(|c| c.is_control() && c != '\n') {
        let pad = " ".repeat(indent);
        let (body, chomp) = match s.strip_suffix('\n') {
            Some(b) if !b.ends_with('\n') => (b, "|"),
            _ => (s, "|-"),
        };
        if !body.starts_with(' ') && !body.ends_with('\n') {
            let mut o = String::from(chomp);
            for line in body.split('\n') {
                o.push('\n');
                if !line.is_empty() {
                    o.push_str(&pad);
                    o.push_str(line);
                }
            }
            return o;
        }
    }
    if s.chars().any(|c| c.is_control()) {
        let mut o = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => o.push_str("\\\""),
                '\\' => o.push_str("\\\\"),
                '\n' => o.push_str("\\n"),
                '\t' => o.push_str("\\t"),
                c if c.is_control() => o.push_str(&format!("\\u{:04x}", c as u32)),
                c => o.push(c),
            }
        }
        o.push('"');
        return o;
    }
    if needs_quotes(s) {
        return format!("'{}'", s.replace('\'', "''"));
    }
    s.to_string()
}

fn needs_quotes(s: &str) -> bool {
    let first = s.chars().next().unwrap_or(' ');
    let lower = s.to_ascii_lowercase();
    matches!(
        lower.as_str(),
        "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "null" | "~"
    ) || "-?:,[]{}#&*!|>'\"%@`".contains(first)
        || s.starts_with(' ')
        || s.ends_with(' ')
        || s.contains(": ")
        || s.contains(" #")
        || s.ends_with(':')
        || looks_numeric(s)
}

fn looks_numeric(s: &str) -> bool {
    let t = s.strip_prefix(['+', '-']).unwrap_or(s);
    !t.is_empty()
        && (t
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == '_')
            && t.chars().filter(|&c| c == '.').count() <= 1
            || t.starts_with("0x")
            || t.starts_with("0o")
            || matches!(t, ".inf" | ".Inf" | ".nan" | ".NaN"))
}

#[cfg(test)]
mod empty_manifest_tests {
    use super::*;

    #[test]
    fn an_empty_manifest_is_an_unsupported_version_as_in_talos() {
        for text in ["", "---\n", "# nothing\n---\n...\n"] {
            let e = Manifest::parse(text).unwrap_err().to_string();
            assert!(
                e.contains("unsupported manifest version: \"\""),
                "{text:?}: {e}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, desc: &str, c: &str) -> Metadata {
        Metadata {
            name: name.into(),
            version: "v1.0.0".into(),
            author: "Sidero Labs".into(),
            description: desc.into(),
            compatibility: Compatibility {
                talos: Constraint { version: c.into() },
            },
            extra_info: String::new(),
        }
    }

    #[test]
    fn config_round_trips_and_is_stable() {
        let c = Config {
            layers: vec![
                Layer {
                    image: "0.sqsh".into(),
                    metadata: meta("gvisor", "Runs gVisor.\nSecond line.\n", ">= v1.0.0"),
                },
                Layer {
                    image: "1.sqsh".into(),
                    metadata: Metadata {
                        extra_info: "x: y".into(),
                        ..meta("true", "a 'quoted' #thing", "")
                    },
                },
            ],
        };
        let y = c.to_yaml();
        assert!(
            y.starts_with(
                "layers:\n    - image: 0.sqsh\n      metadata:\n          name: gvisor\n"
            ),
            "{y}"
        );
        assert!(y.contains("version: '>= v1.0.0'\n"), "{y}");
        assert!(
            y.contains("description: |\n              Runs gVisor.\n              Second line.\n"),
            "{y}"
        );
        assert!(y.contains("name: 'true'\n"), "{y}");
        assert_eq!(Config::parse(&y).unwrap(), c);
    }

    #[test]
    fn manifest_rules() {
        let ok = "version: v1alpha1\nmetadata:\n  name: x\n  version: 1.0\n  compatibility:\n    talos:\n      version: \">= v1.9.0\"\n";
        let m = Manifest::parse(ok).unwrap();
        assert_eq!(m.metadata.version, "1.0");
        m.check_compatibility("v1.14.0").unwrap();
        assert!(m.check_compatibility("v1.8.3").is_err());
        assert!(Manifest::parse("version: v1alpha2\nmetadata: {name: x, version: y}\n").is_err());
        assert!(Manifest::parse("").is_err());
        assert!(Manifest::parse("version: v1alpha1\nmetadata: {version: y}\n").is_err());
        assert!(Manifest::parse("- a\n").is_err());
        let bad = ok.replace(">= v1.9.0", ">= banana");
        assert!(
            Manifest::parse(&bad)
                .unwrap()
                .check_compatibility("v1.14.0")
                .is_err()
        );
    }

    #[test]
    fn config_rejects_path_names() {
        assert!(Config::parse("layers:\n  - image: ../x.sqsh\n").is_err());
        assert!(Config::parse("layers:\n  - image: a/b\n").is_err());
        assert!(Config::parse("layers: []\n").unwrap().layers.is_empty());
    }
}
