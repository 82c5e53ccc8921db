//! Kernel module loading.
//!
//! In: a module name list (`modules-load.d` format) and `modules.dep` from
//! `/lib/modules/<uname -r>/`. Out: the modules loaded with `finit_module`, dependencies first,
//! each once; modules already present (built in or loaded) are not an error.

use anyhow::{Context, Result};
use kmod::{ModDep, module_name};
use std::fs::File;
use std::path::{Path, PathBuf};

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
