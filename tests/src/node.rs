//! Plumbing for the tests that provision nodes (docs/formats/install.md, upgrade.md): the
//! installer images they publish, `nodectl` against a forwarded API port, waiting for console
//! lines.

use crate::registry::Registry;
use crate::{assets, bin, bin_arm64, imager, ok, run};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// An installer image for [`publish_installer`].
#[derive(Default)]
pub struct Installer<'a> {
    /// The repository in the registry.
    pub repo: &'a str,
    /// The tag.
    pub tag: &'a str,
    /// The version its system reports (`v1.14.0`).
    pub version: &'a str,
    /// The cosign key that signs it.
    pub key: Option<&'a Path>,
    /// Kernel arguments its systems boot with (`node_runtime.test_poweroff[=N]`, …).
    pub args: &'a [&'a str],
    /// System extension tarballs.
    pub extensions: &'a [&'a Path],
    /// `amd64` (when empty) or `arm64`: the installer-base is published from the base assets
    /// and the `installer` binary of that architecture.
    pub arch: &'a str,
}

/// Builds the installer image `i` and pushes it as `<registry>/<repo>:<tag>`; the reference.
pub fn publish_installer(reg: &Registry, dir: &Path, i: &Installer) -> String {
    let arch = if i.arch.is_empty() { "amd64" } else { i.arch };
    let (base, installer) = match arch {
        "amd64" => (dir.join("base"), bin("installer")),
        _ => (dir.join(format!("base-{arch}")), bin_arm64("installer")),
    };
    if !base.exists() {
        ok(Command::new(bin("base-assets"))
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["publish", "--arch", arch, "--assets"])
            .arg(assets())
            .arg("--installer")
            .arg(installer)
            .arg("--oci-layout")
            .arg(&base));
    }
    let mut profile = format!(
        "baseProfileName: installer\narch: {arch}\nversion: {}\ninput:\n  baseInstaller:\n    \
         ociPath: {}\n",
        i.version,
        base.display()
    );
    if !i.extensions.is_empty() {
        profile.push_str("  systemExtensions:\n");
        for e in i.extensions {
            profile.push_str(&format!("    - tarballPath: {}\n", e.display()));
        }
    }
    profile.push_str(match arch {
        "amd64" => "customization:\n  extraKernelArgs:\n    - console=ttyS0\n",
        _ => "customization:\n  extraKernelArgs:\n    - console=ttyAMA0\n",
    });
    for a in i.args {
        profile.push_str(&format!("    - {a}\n"));
    }
    let target = format!("{}/{}:{}", reg.host(), i.repo, i.tag);
    let mut c = imager();
    c.args(["-", "--insecure", "--push", &target, "--output"])
        .arg(dir.join(format!("out-{}-{}", i.repo.replace('/', "-"), i.tag)));
    if let Some(k) = i.key {
        c.arg("--sign-key").arg(k);
    }
    let o = run(&mut c, Some(profile.as_bytes()));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    target
}

/// The standard output of a command that succeeded (else a panic with both outputs).
pub fn out(o: &Output) -> String {
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `nodectl --nodes 127.0.0.1 --port PORT ARGS…`.
pub fn nodectl(port: u16, args: &[&str]) -> Output {
    run(
        Command::new(bin("nodectl"))
            .args(["--nodes", "127.0.0.1", "--port", &port.to_string()])
            .args(args),
        None,
    )
}

/// `nodectl --talosconfig <dir>/talosconfig ARGS…` (mutual TLS).
pub fn authed(port: u16, dir: &Path, args: &[&str]) -> Output {
    let tc = dir.join("talosconfig");
    let mut a = vec!["--talosconfig", tc.to_str().unwrap()];
    a.extend(args);
    nodectl(port, &a)
}

/// `nodectl --insecure apply-config --file F` against the forwarded API port.
pub fn apply_config(port: u16, file: &Path) -> Output {
    nodectl(
        port,
        &[
            "--insecure",
            "apply-config",
            "--file",
            file.to_str().unwrap(),
        ],
    )
}

/// `nodectl gen config lab https://10.0.2.2:6443 --output-dir <dir>/<name>`; the directory.
pub fn gen_config(dir: &Path, name: &str) -> std::path::PathBuf {
    let d = dir.join(name);
    let o = run(
        Command::new(bin("nodectl"))
            .args([
                "gen",
                "config",
                "lab",
                "https://10.0.2.2:6443",
                "--output-dir",
            ])
            .arg(&d),
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    d
}

/// The `  ca:` block (crt and key) of a configuration `gen config` wrote into `dir`.
pub fn ca_block(dir: &Path) -> String {
    let generated = std::fs::read_to_string(dir.join("controlplane.yaml")).unwrap();
    let block: String = generated
        .lines()
        .skip_while(|l| *l != "  ca:")
        .take(3)
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        block.contains("    crt: ") && block.contains("    key: "),
        "{generated}"
    );
    block
}

/// Waits up to `secs` for the console line containing `needle` while an install runs: an
/// `install error` line (or a default failure) ends the wait with a panic. `E2E_ECHO` echoes
/// the console.
pub fn wait_installing(run: &mut qemu_harness::Run, needle: &str, secs: u64) -> String {
    let mut failures = vec!["node-runtime: install error"];
    failures.extend(qemu_harness::DEFAULT_FAILURES);
    run.wait_for(
        needle,
        &failures,
        Duration::from_secs(secs),
        std::env::var_os("E2E_ECHO").is_some(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The console line of this run containing `needle`, at once if it is there already, else
/// after waiting up to `secs` for it (the default failures end the wait).
pub fn wait(run: &mut qemu_harness::Run, needle: &str, secs: u64) -> String {
    if let Some(l) = run.console().iter().find(|l| l.contains(needle)) {
        return l.clone();
    }
    run.wait_for(
        needle,
        qemu_harness::DEFAULT_FAILURES,
        Duration::from_secs(secs),
        std::env::var_os("E2E_ECHO").is_some(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Waits for the maintenance API of a node that booted without an installation.
pub fn in_maintenance(run: &mut qemu_harness::Run) {
    wait(run, "node-runtime: maintenance api listening", 300);
    assert!(
        run.console()
            .iter()
            .any(|l| l.contains("node-runtime: ready meta=") && l.ends_with("installed=false")),
        "{}",
        run.console().join("\n")
    );
}
