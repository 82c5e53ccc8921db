//! Kernel command line generation (docs/formats/cmdline.md).
//!
//! In: a resolved profile. Out: the cmdline string. The model is go-procfs's `Cmdline`: an
//! ordered list of keys, each with one or more values. `set` replaces a key's values in place
//! (or appends the key), `append` adds a value to an existing key (or appends the key), and a
//! value of `""` renders as a bare `key`.

use crate::error::{Error, Result};
use crate::profile::quirks::Quirk;
use crate::profile::{Arch, OutputKind, Profile, closed::shown};

/// At most this many extra kernel arguments (the merge is linear per argument).
pub const MAX_EXTRA_ARGS: usize = 512;

/// The longest kernel command line the target's boot protocol takes, without the NUL:
/// `COMMAND_LINE_SIZE` is 2048 on x86-64 (the bzImage `cmdline_size` Debian's and Talos's
/// kernels advertise is 2047) and on arm64.
pub fn max_len(arch: Arch) -> usize {
    match arch {
        Arch::Amd64 | Arch::Arm64 | Arch::Unset => 2047,
    }
}

/// Checks the user's kernel arguments where they enter (`customization.extraKernelArgs`, from
/// flags or a profile): no control characters (a newline would start a new line in a loader
/// entry or grub.cfg), balanced double quotes, no empty argument, bounded count and length.
pub fn check_extra_args(args: &[String], arch: Arch) -> Result<()> {
    let field = "customization.extraKernelArgs";
    if args.len() > MAX_EXTRA_ARGS {
        return Err(Error::invalid(format!(
            "field {field}: {} arguments, more than {MAX_EXTRA_ARGS}",
            args.len()
        )));
    }
    let total: usize = args.iter().map(|a| a.len() + 1).sum();
    if total > max_len(arch) {
        return Err(Error::invalid(format!(
            "field {field}: {total} bytes, more than the {} the {arch} kernel command line holds",
            max_len(arch)
        )));
    }
    for (i, a) in args.iter().enumerate() {
        let bad = |why: &str| Error::invalid(format!("field {field}[{i}]: {:?}: {why}", shown(a)));
        if a.is_empty() || a.trim().is_empty() {
            return Err(bad("empty argument"));
        }
        if a.chars().any(|c| c.is_control()) {
            return Err(bad("control characters are not allowed"));
        }
        if a.chars().any(char::is_whitespace) && !a.contains('"') {
            return Err(bad("white space outside double quotes splits the argument"));
        }
        if a.matches('"').count() % 2 != 0 {
            return Err(bad("unbalanced double quote"));
        }
    }
    Ok(())
}

/// Checks the finished command line against the boot protocol's limit; when META rides on it
/// (`INSTALLER_META_BASE64`), the message names META as the cause.
pub fn check_len(cmdline: &str, arch: Arch, meta_env: Option<&str>) -> Result<()> {
    let max = max_len(arch);
    if cmdline.len() <= max {
        return Ok(());
    }
    let why = match meta_env {
        Some(m) => format!(
            "; {} of them are META (customization.metaContents, carried as \
             talos.environment=INSTALLER_META_BASE64): a disk image keeps META in its \
             partition instead",
            m.len()
        ),
        None => String::new(),
    };
    Err(Error::invalid(format!(
        "the kernel command line is {} bytes, more than the {max} the {arch} boot protocol \
         takes{why}",
        cmdline.len()
    )))
}

/// An ordered kernel command line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Cmdline {
    params: Vec<(String, Vec<String>)>,
}

fn split(arg: &str) -> (&str, &str) {
    arg.split_once('=').unwrap_or((arg, ""))
}

impl Cmdline {
    /// Replaces `key`'s values with `value`, keeping its position.
    pub fn set(&mut self, key: &str, value: &str) {
        match self.params.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = vec![value.to_string()],
            None => self.params.push((key.to_string(), vec![value.to_string()])),
        }
    }

    /// Adds a value to `key` (or appends the key).
    pub fn append(&mut self, key: &str, value: &str) {
        match self.params.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => v.push(value.to_string()),
            None => self.params.push((key.to_string(), vec![value.to_string()])),
        }
    }

    /// `set` for each `key=value` argument; several values of one key all stay.
    pub fn set_all(&mut self, args: &[&str]) {
        let mut seen: Vec<&str> = Vec::new();
        for a in args {
            let (k, v) = split(a);
            if seen.contains(&k) {
                self.append(k, v);
            } else {
                self.set(k, v);
                seen.push(k);
            }
        }
    }

    /// `append` for each argument.
    pub fn append_all(&mut self, args: &[&str]) {
        for a in args {
            let (k, v) = split(a);
            self.append(k, v);
        }
    }

    /// User arguments: `-key` deletes the key, `-key=value` deletes one value; keys in
    /// `overwrite` are cleared on their first occurrence, then appended to.
    pub fn append_user(&mut self, args: &[String], overwrite: &[&str]) {
        let mut cleared: Vec<String> = Vec::new();
        for a in args {
            if let Some(neg) = a.strip_prefix('-') {
                let (k, v) = split(neg);
                if neg.contains('=') {
                    if let Some((_, vals)) = self.params.iter_mut().find(|(pk, _)| pk == k) {
                        vals.retain(|x| x != v);
                    }
                    self.params.retain(|(_, vals)| !vals.is_empty());
                } else {
                    self.params.retain(|(pk, _)| pk != k);
                }
                continue;
            }
            let (k, v) = split(a);
            if overwrite.contains(&k) && !cleared.iter().any(|c| c == k) {
                cleared.push(k.to_string());
                self.set(k, v);
            } else {
                self.append(k, v);
            }
        }
    }

    /// Values of `key`.
    pub fn get(&self, key: &str) -> Option<&[String]> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }
}

impl std::fmt::Display for Cmdline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for (k, vals) in &self.params {
            for v in vals {
                if !first {
                    f.write_str(" ")?;
                }
                first = false;
                if v.is_empty() {
                    f.write_str(k)?;
                } else {
                    write!(f, "{k}={v}")?;
                }
            }
        }
        Ok(())
    }
}

/// Platform kernel arguments (docs/formats/cmdline.md table).
pub fn platform_args(
    platform: &str,
    arch: &str,
    q: &crate::profile::quirks::Quirks,
) -> Vec<&'static str> {
    let arm = arch == "arm64";
    match platform {
        "metal" if arm => vec!["console=ttyAMA0", "console=tty0"],
        "metal" if q.has(Quirk::MetalNoSerialConsole) => vec!["console=tty0"],
        "metal" => vec!["console=ttyS0", "console=tty0"],
        "aws" if q.has(Quirk::Drop114Defaults) => vec![
            "console=tty1",
            "console=ttyS0",
            "net.ifnames=0",
            "nvme_core.io_timeout=4294967295",
        ],
        "aws" => vec!["console=tty1", "console=ttyS0", "net.ifnames=0"],
        "azure" => vec![
            "console=ttyS0,115200n8",
            "earlyprintk=ttyS0,115200",
            "rootdelay=300",
            "net.ifnames=0",
            "talos.dashboard.disabled=1",
            "sysctl.kernel.kexec_load_disabled=1",
        ],
        "gcp" => vec![
            "console=ttyS0",
            "net.ifnames=0",
            "talos.dashboard.disabled=1",
            "sysctl.kernel.kexec_load_disabled=1",
        ],
        "akamai" | "digital-ocean" => {
            vec![
                "console=ttyS0",
                "console=tty0",
                "console=tty1",
                "net.ifnames=0",
            ]
        }
        "alibabacloud" | "cloudstack" | "exoscale" | "hcloud" | "nocloud" | "opennebula"
        | "openstack" => vec!["console=tty1", "console=ttyS0", "net.ifnames=0"],
        "oracle" | "scaleway" => vec![
            "console=tty1",
            "console=ttyS0",
            "net.ifnames=0",
            "talos.dashboard.disabled=1",
        ],
        "upcloud" | "vultr" => vec!["net.ifnames=0"],
        "vmware" if arm => vec![
            "talos.config=guestinfo",
            "console=tty0",
            "console=ttyAMA0",
            "net.ifnames=0",
        ],
        "vmware" => vec![
            "talos.config=guestinfo",
            "console=tty0",
            "console=ttyS0",
            "earlyprintk=ttyS0,115200",
            "net.ifnames=0",
        ],
        "equinixMetal" if arm => vec!["console=ttyAMA0,115200"],
        "equinixMetal" => vec!["console=ttyS1,115200n8"],
        _ => vec![],
    }
}

/// `DefaultArgs` for a version (docs/formats/cmdline.md).
pub fn default_args(q: &crate::profile::quirks::Quirks) -> Vec<&'static str> {
    let mut a = Vec::new();
    if !q.has(Quirk::Drop114Defaults) {
        a.push("init_on_alloc=1");
    }
    a.extend(["slab_nomerge", "pti=on", "consoleblank=0"]);
    if !q.has(Quirk::Drop114Defaults) {
        a.push("nvme_core.io_timeout=4294967295");
    }
    a.push("printk.devkmsg=on");
    if !q.has(Quirk::NoImaArgs) {
        a.extend(["ima_template=ima-ng", "ima_appraise=fix", "ima_hash=sha512"]);
    }
    if q.has(Quirk::Selinux) {
        a.push("selinux=1");
    }
    if q.has(Quirk::ModuleSigEnforce) {
        a.push("module.sig_enforce=1");
    }
    if q.has(Quirk::ProcMemOverride) {
        a.push("proc_mem.force_override=never");
    }
    a
}

/// Builds the cmdline of a resolved profile. `meta_env` is the encoded
/// `INSTALLER_META_BASE64` value for non-image outputs that carry META; `overlay_args` are the
/// board overlay's kernel arguments (step 4, set semantics).
pub fn build(p: &Profile, meta_env: Option<&str>, overlay_args: &[String]) -> Cmdline {
    let q = p.quirks();
    let mut c = Cmdline::default();
    c.set("talos.platform", p.platform.as_str());
    c.set_all(&platform_args(p.platform.as_str(), p.arch.as_str(), &q));
    if p.output.kind == OutputKind::Iso && q.has(Quirk::HaltIfInstalled) {
        c.set("talos.halt_if_installed", "1");
    }
    let overlay: Vec<&str> = overlay_args.iter().map(String::as_str).collect();
    c.set_all(&overlay);
    c.append_all(&default_args(&q));
    if p.is_secureboot() && !q.has(Quirk::Drop114Defaults) {
        c.append_all(&["lockdown=confidentiality"]);
    }
    if let Some(env) = meta_env {
        c.append("talos.environment", &format!("INSTALLER_META_BASE64={env}"));
    }
    c.append_user(
        &p.customization.extra_kernel_args,
        &["console", "talos.platform"],
    );
    c
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn prof(platform: &str, version: &str, extra: &[&str]) -> Profile {
        let mut p = Profile {
            platform: crate::profile::Platform::parse(platform).unwrap(),
            arch: crate::profile::Arch::Amd64,
            version: version.into(),
            ..Default::default()
        };
        p.output.kind = OutputKind::Image;
        p.customization.extra_kernel_args = extra.iter().map(|s| s.to_string()).collect();
        p
    }

    /// SecureBoot adds `lockdown=confidentiality` after the defaults before Talos 1.14, and
    /// nothing from 1.14 on; a board overlay's arguments are set at step 4, before them.
    #[test]
    fn secureboot_and_overlay_arguments() {
        let mut p = prof("metal", "v1.13.0", &[]);
        p.secureboot = Some(true);
        let c = build(&p, None, &[]).to_string();
        assert!(c.ends_with(" lockdown=confidentiality"), "{c}");
        p.version = "v1.14.0".into();
        let c = build(&p, None, &[]).to_string();
        assert!(!c.contains("lockdown"), "{c}");
        let c = build(
            &prof("metal", "v1.14.0", &[]),
            None,
            &["console=ttyS2,1500000n8".to_string(), "cma=64M".to_string()],
        )
        .to_string();
        assert!(
            c.starts_with("talos.platform=metal console=ttyS2,1500000n8 cma=64M slab_nomerge "),
            "{c}"
        );
    }

    #[test]
    fn spec_goldens() {
        assert_eq!(
            build(&prof("metal", "v1.14.0", &[]), None, &[]).to_string(),
            "talos.platform=metal console=tty0 slab_nomerge pti=on consoleblank=0 printk.devkmsg=on selinux=1 module.sig_enforce=1 proc_mem.force_override=never"
        );
        assert_eq!(
            build(&prof("aws", "v1.13.0", &[]), None, &[]).to_string(),
            "talos.platform=aws console=tty1 console=ttyS0 net.ifnames=0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1 module.sig_enforce=1 proc_mem.force_override=never"
        );
    }

    #[test]
    fn user_args_replace_console_and_delete() {
        let c = build(
            &prof(
                "metal",
                "v1.14.0",
                &[
                    "console=ttyS0",
                    "console=tty1",
                    "-pti",
                    "-selinux=1",
                    "quiet",
                ],
            ),
            None,
            &[],
        );
        assert_eq!(
            c.to_string(),
            "talos.platform=metal console=ttyS0 console=tty1 slab_nomerge consoleblank=0 printk.devkmsg=on module.sig_enforce=1 proc_mem.force_override=never quiet"
        );
        let c = build(
            &prof("metal", "v1.14.0", &["talos.platform=nocloud"]),
            None,
            &[],
        );
        assert_eq!(c.get("talos.platform").unwrap(), ["nocloud"]);
    }
}
