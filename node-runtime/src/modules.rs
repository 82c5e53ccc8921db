//! Kernel module loading.
//!
//! In: a module name list (`modules-load.d` format) and `modules.dep` from
//! `/lib/modules/<uname -r>/`. Out: the modules loaded with `finit_module`, dependencies first,
//! each once; modules already present (built in or loaded) are not an error.

use anyhow::{Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};

/// Module name as the kernel knows it: file stem with `-` folded to `_`.
pub fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = base.split(".ko").next().unwrap_or(base);
    stem.replace('-', "_")
}

/// Parsed `modules.dep`.
#[derive(Debug, Default)]
pub struct ModDep {
    map: BTreeMap<String, (String, Vec<String>)>,
}

impl ModDep {
    /// Parses the text of a modules.dep file.
    pub fn parse(text: &str) -> Self {
        let map = text
            .lines()
            .filter_map(|l| {
                let (m, deps) = l.split_once(':')?;
                let deps = deps.split_whitespace().map(str::to_string).collect();
                Some((module_name(m), (m.trim().to_string(), deps)))
            })
            .collect();
        Self { map }
    }

    /// Paths to load for `name`, dependencies first. Unknown names are reported by name.
    pub fn load_order(&self, names: &[String]) -> Result<Vec<String>> {
        fn visit(
            d: &ModDep,
            name: &str,
            seen: &mut BTreeSet<String>,
            out: &mut Vec<String>,
        ) -> Result<()> {
            if !seen.insert(name.to_string()) {
                return Ok(());
            }
            let (path, deps) = d
                .map
                .get(name)
                .with_context(|| format!("module {name} not in modules.dep"))?;
            for dep in deps.iter().rev() {
                visit(d, &module_name(dep), seen, out)?;
            }
            out.push(path.clone());
            Ok(())
        }
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for n in names {
            visit(self, &n.replace('-', "_"), &mut seen, &mut out)?;
        }
        Ok(out)
    }
}

/// Parses a `modules-load.d` style list: one name per line, `#` and `;` comments.
pub fn parse_list(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split(['#', ';']).next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Outcome of loading a list.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Modules inserted now.
    pub loaded: Vec<String>,
    /// Modules that were already present.
    pub present: Vec<String>,
    /// Failures (module, error).
    pub failed: Vec<(String, String)>,
}

/// Loads `names` and their dependencies from `dir` (`/lib/modules/<kver>`).
pub fn load(dir: &Path, names: &[String]) -> Result<LoadReport> {
    let dep_path = dir.join("modules.dep");
    let text = std::fs::read_to_string(&dep_path)
        .with_context(|| format!("reading {}", dep_path.display()))?;
    let order = ModDep::parse(&text).load_order(names)?;
    let mut rep = LoadReport::default();
    for rel in order {
        let name = module_name(&rel);
        let path: PathBuf = dir.join(&rel);
        let res = File::open(&path)
            .map_err(anyhow::Error::from)
            .and_then(|f| {
                nix::kmod::finit_module(&f, c"", nix::kmod::ModuleInitFlags::empty())
                    .map_err(anyhow::Error::from)
            });
        match res {
            Ok(()) => rep.loaded.push(name),
            Err(e) if e.downcast_ref::<nix::Error>() == Some(&nix::Error::EEXIST) => {
                rep.present.push(name)
            }
            Err(e) => rep.failed.push((name, format!("{e:#}"))),
        }
    }
    Ok(rep)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn order_and_names() {
        let d = ModDep::parse(
            "kernel/v/virtio_blk.ko: kernel/v/virtio_ring.ko kernel/v/virtio.ko\nkernel/v/virtio.ko:\nkernel/v/virtio_ring.ko: kernel/v/virtio.ko\nkernel/f/nls-cp437.ko:\n",
        );
        assert_eq!(
            d.load_order(&["virtio_blk".into(), "nls-cp437".into(), "virtio".into()])
                .unwrap(),
            vec![
                "kernel/v/virtio.ko",
                "kernel/v/virtio_ring.ko",
                "kernel/v/virtio_blk.ko",
                "kernel/f/nls-cp437.ko"
            ]
        );
        assert!(d.load_order(&["nope".into()]).is_err());
        assert_eq!(
            parse_list("# c\nloop\n squashfs ; x\n\n"),
            vec!["loop", "squashfs"]
        );
    }
}
