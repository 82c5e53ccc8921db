//! Differential test of `kmod::depmod` against kmod's `depmod` on the real Debian module tree
//! (installed by hack/deps.sh). The tree and the depmod binary are required: the test fails
//! when either is missing.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use kmod::depmod::{Output, generate};

/// The kernel cache of hack/deps.sh (`$KERNEL_CACHE`, default `~/.cache/talos-rs/kernel`).
fn modules_root() -> PathBuf {
    let cache = match std::env::var_os("KERNEL_CACHE") {
        Some(c) => PathBuf::from(c),
        None => {
            let home = std::env::var_os("HOME").expect("HOME is not set");
            Path::new(&home).join(".cache/talos-rs/kernel")
        }
    };
    cache.join("current/lib/modules")
}

/// The version of the kernel hack/deps.sh extracted: the one directory under
/// `lib/modules` (never a version named here: Debian moves it).
fn kver() -> String {
    let root = modules_root();
    let mut v: Vec<String> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}: run hack/deps.sh", root.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    assert_eq!(
        v.len(),
        1,
        "expected one kernel under {}: {v:?}",
        root.display()
    );
    v.remove(0)
}

fn source_tree() -> PathBuf {
    let dir = modules_root().join(kver());
    assert!(
        dir.join("modules.order").is_file(),
        "kernel module tree {} is missing: run hack/deps.sh",
        dir.display()
    );
    dir
}

fn depmod_bin() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin".into(), "/sbin".into()]);
    dirs.into_iter()
        .map(|d| d.join("depmod"))
        .find(|p| p.is_file())
        .expect("depmod (kmod) is not installed: run hack/deps.sh")
}

/// Symlinks every `*.ko` of `src/kernel` into `dst/kernel` (depmod follows symlinks and uses
/// the link's path) and copies modules.order and modules.builtin*.
fn mirror(src: &Path, dst: &Path) -> usize {
    fn rec(src: &Path, dst: &Path, n: &mut usize) {
        std::fs::create_dir_all(dst).unwrap();
        for e in std::fs::read_dir(src).unwrap() {
            let e = e.unwrap();
            let (s, d) = (e.path(), dst.join(e.file_name()));
            if e.file_type().unwrap().is_dir() {
                rec(&s, &d, n);
            } else {
                std::os::unix::fs::symlink(&s, &d).unwrap();
                *n += 1;
            }
        }
    }
    let mut n = 0;
    rec(&src.join("kernel"), &dst.join("kernel"), &mut n);
    for f in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    n
}

/// Runs `depmod -b base -C <empty dir> KVER` and returns the text files it wrote.
fn run_depmod(base: &Path) -> Output {
    let cfg = base.join("empty-depmod.d");
    std::fs::create_dir_all(&cfg).unwrap();
    let out = Command::new(depmod_bin())
        .arg("-b")
        .arg(base)
        .arg("-C")
        .arg(&cfg)
        .arg(kver())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "depmod failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = base.join("lib/modules").join(kver());
    let rd = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    Output {
        dep: rd("modules.dep"),
        alias: rd("modules.alias"),
        softdep: rd("modules.softdep"),
        symbols: rd("modules.symbols"),
        devname: rd("modules.devname"),
    }
}

fn assert_same(name: &str, want: &str, got: &str) {
    if want == got {
        return;
    }
    let (w, g): (Vec<_>, Vec<_>) = (want.lines().collect(), got.lines().collect());
    let i = w
        .iter()
        .zip(&g)
        .position(|(a, b)| a != b)
        .unwrap_or(w.len().min(g.len()));
    panic!(
        "{name} differs at line {} (depmod {} lines, ours {} lines)\n depmod: {:?}\n ours:   {:?}",
        i + 1,
        w.len(),
        g.len(),
        w.get(i),
        g.get(i)
    );
}

/// modules.symbols: depmod writes it in hash-table order; compare header + sorted lines.
fn sorted_symbols(text: &str) -> (Option<&str>, Vec<&str>) {
    let mut lines = text.lines();
    let header = lines.next();
    let mut rest: Vec<&str> = lines.collect();
    rest.sort_unstable();
    (header, rest)
}

fn compare(base: &Path, label: &str) {
    let moddir = base.join("lib/modules").join(kver());
    let t = Instant::now();
    let ours = generate(&moddir).unwrap();
    let took = t.elapsed();
    let theirs = run_depmod(base);
    println!(
        "[{label}] generate() took {took:?} for {} modules",
        ours.dep.lines().count()
    );
    assert_same("modules.dep", &theirs.dep, &ours.dep);
    assert_same("modules.alias", &theirs.alias, &ours.alias);
    assert_same("modules.softdep", &theirs.softdep, &ours.softdep);
    assert_same("modules.devname", &theirs.devname, &ours.devname);
    let (wh, w) = sorted_symbols(&theirs.symbols);
    let (gh, g) = sorted_symbols(&ours.symbols);
    assert_eq!(wh, gh, "modules.symbols header");
    assert_same("modules.symbols (sorted)", &w.join("\n"), &g.join("\n"));
    let mut sorted = w.join("\n");
    sorted.insert(0, '\n');
    sorted.insert_str(0, wh.unwrap_or(""));
    sorted.push('\n');
    assert_eq!(ours.symbols, sorted, "modules.symbols is written sorted");

    // write_to() produces the same files
    let out = base.join("ours");
    std::fs::create_dir_all(&out).unwrap();
    ours.write_to(&out).unwrap();
    assert_eq!(
        std::fs::read_to_string(out.join("modules.dep")).unwrap(),
        theirs.dep
    );
}

#[test]
fn plain_tree_matches_depmod() {
    let src = source_tree();
    let t = tempfile::tempdir().unwrap();
    let moddir = t.path().join("lib/modules").join(kver());
    let n = mirror(&src, &moddir);
    assert!(n > 4000, "only {n} modules in {}", src.display());
    compare(t.path(), "plain");
}

/// The imager's case: extension modules merged into the base tree under a directory that
/// modules.order does not list (compressed, depending on base modules and on each other), plus
/// an `updates/` module overriding a base module of the same name.
#[test]
fn tree_with_extensions_matches_depmod() {
    let src = source_tree();
    let t = tempfile::tempdir().unwrap();
    let moddir = t.path().join("lib/modules").join(kver());
    mirror(&src, &moddir);
    // wireguard needs libchacha20poly1305, which needs base crypto modules
    let moves = [
        (
            "kernel/drivers/net/wireguard/wireguard.ko",
            "extras/wireguard/wireguard.ko.xz",
        ),
        (
            "kernel/lib/crypto/libchacha20poly1305.ko",
            "extras/crypto/libchacha20poly1305.ko.zst",
        ),
    ];
    for (from, to) in moves {
        let bytes = std::fs::read(src.join(from)).unwrap();
        std::fs::remove_file(moddir.join(from)).unwrap();
        let dst = moddir.join(to);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        let packed = if to.ends_with(".xz") {
            use std::io::Write;
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
            e.write_all(&bytes).unwrap();
            e.finish().unwrap()
        } else {
            zstd::encode_all(&bytes[..], 3).unwrap()
        };
        std::fs::write(dst, packed).unwrap();
    }
    let dummy = moddir.join("updates/dummy.ko");
    std::fs::create_dir_all(dummy.parent().unwrap()).unwrap();
    std::fs::copy(src.join("kernel/drivers/net/dummy.ko"), &dummy).unwrap();

    compare(t.path(), "extensions");
    let dep = generate(&moddir).unwrap().dep;
    let wg = dep
        .lines()
        .find(|l| l.starts_with("extras/wireguard/wireguard.ko.xz:"))
        .expect("wireguard in modules.dep");
    assert!(
        wg.contains(" extras/crypto/libchacha20poly1305.ko.zst"),
        "{wg}"
    );
    assert!(wg.contains(" kernel/lib/crypto/libchacha.ko"), "{wg}");
    assert!(dep.contains("\nupdates/dummy.ko:\n"));
    assert!(!dep.contains("kernel/drivers/net/dummy.ko"));
}

/// Without modules.order depmod keeps the order of its module-name hash table everywhere.
#[test]
fn tree_without_order_matches_depmod() {
    let src = source_tree();
    let t = tempfile::tempdir().unwrap();
    let moddir = t.path().join("lib/modules").join(kver());
    mirror(&src, &moddir);
    std::fs::remove_file(moddir.join("modules.order")).unwrap();
    compare(t.path(), "no modules.order");
}

/// A modules.order whose last line lacks its newline is "corrupted" for depmod: it then keeps
/// the hash order (does not sort at all).
#[test]
fn order_without_final_newline_matches_depmod() {
    let src = source_tree();
    let t = tempfile::tempdir().unwrap();
    let moddir = t.path().join("lib/modules").join(kver());
    mirror(&src, &moddir);
    let order = std::fs::read_to_string(moddir.join("modules.order")).unwrap();
    std::fs::write(moddir.join("modules.order"), order.trim_end_matches('\n')).unwrap();
    compare(t.path(), "modules.order without final newline");
}
