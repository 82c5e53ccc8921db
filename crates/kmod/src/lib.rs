//! Linux kernel module metadata, shared by the base-assets build (which picks the modules an
//! initramfs carries) and node-runtime (which loads them).
//!
//! In: the text of `modules.dep` (`path: dep1 dep2 …`, nearest dependency first) and
//! `modules-load.d`-style lists. Out: module names as the kernel knows them and load orders
//! with every dependency before its users, each module once.
//!
//! With the `depmod` feature, `kmod::depmod` regenerates the text metadata of a module tree
//! (`modules.dep`, `modules.alias`, …) exactly like kmod's `depmod`, for the imager.

use std::collections::{BTreeMap, BTreeSet};

pub mod alias;
#[cfg(feature = "depmod")]
pub mod depmod;

/// Errors of this crate.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KmodError {
    /// A module (or a dependency) is missing from modules.dep.
    #[error("module {0} is not in modules.dep")]
    Unknown(String),
}

/// Module name of a path or name: file stem without `.ko[.xz|.zst|.gz]`, `-` folded to `_`.
pub fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = base.split(".ko").next().unwrap_or(base);
    stem.replace('-', "_")
}

/// Parses a `modules-load.d` list: one name per line, `#` and `;` start comments.
pub fn parse_list(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split(['#', ';']).next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// A parsed `modules.dep`.
#[derive(Debug, Default, Clone)]
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

    /// Path (relative to `/lib/modules/<kver>`) of a module.
    pub fn path(&self, name: &str) -> Option<&str> {
        self.map.get(&module_name(name)).map(|(p, _)| p.as_str())
    }

    /// Direct dependencies (paths) of a module, as modules.dep lists them.
    pub fn deps(&self, name: &str) -> Option<&[String]> {
        self.map.get(&module_name(name)).map(|(_, d)| d.as_slice())
    }

    /// Paths to load for `names`: every dependency before its users, each module once.
    pub fn load_order(&self, names: &[String]) -> Result<Vec<String>, KmodError> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for n in names {
            self.visit(&module_name(n), &mut seen, &mut out)?;
        }
        Ok(out)
    }

    fn visit(
        &self,
        name: &str,
        seen: &mut BTreeSet<String>,
        out: &mut Vec<String>,
    ) -> Result<(), KmodError> {
        if !seen.insert(name.to_string()) {
            return Ok(());
        }
        let (path, deps) = self
            .map
            .get(name)
            .ok_or_else(|| KmodError::Unknown(name.to_string()))?;
        // modules.dep lists the nearest dependency first: load the farthest first
        for d in deps.iter().rev() {
            self.visit(&module_name(d), seen, out)?;
        }
        out.push(path.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "kernel/a/virtio_pci.ko: kernel/a/virtio-pci-legacy.ko kernel/a/virtio.ko\n\
        kernel/a/virtio.ko:\n\
        kernel/a/virtio-pci-legacy.ko: kernel/a/virtio.ko\n\
        kernel/b/loop.ko.xz:\n";

    #[test]
    fn dependencies_first_each_once() {
        let d = ModDep::parse(DEP);
        assert_eq!(
            d.load_order(&["virtio_pci".into(), "loop".into(), "virtio".into()])
                .unwrap(),
            vec![
                "kernel/a/virtio.ko",
                "kernel/a/virtio-pci-legacy.ko",
                "kernel/a/virtio_pci.ko",
                "kernel/b/loop.ko.xz"
            ]
        );
        assert_eq!(
            d.load_order(&["nope".into()]),
            Err(KmodError::Unknown("nope".into()))
        );
        assert_eq!(
            d.path("virtio-pci-legacy"),
            Some("kernel/a/virtio-pci-legacy.ko")
        );
        assert_eq!(d.deps("virtio_pci").unwrap().len(), 2);
    }

    #[test]
    fn names_and_lists() {
        assert_eq!(module_name("kernel/x/nls-cp437.ko.zst"), "nls_cp437");
        assert_eq!(
            parse_list("# c\nloop\n squashfs ; x\n\n"),
            vec!["loop", "squashfs"]
        );
    }
}
