//! `base-assets`: the stand-in for the upstream release build.
//!
//! In: an extracted Debian kernel package (`vmlinuz`, `lib/modules/<kver>` with `modules.dep`),
//! the static node-runtime binary, the module floor list (`kernel-config/modules-<arch>.txt`)
//! and systemd-boot / systemd-stub from Debian's systemd-boot-efi (the stub's COFF symbol
//! table stripped, as a release build would ship it).
//! Out: `<out>/{vmlinuz, initramfs.xz, systemd-boot.efi, systemd-stub.efi}`, the file names
//! Talos uses under `/usr/install/<arch>/`.
//!
//! The initramfs is a cpio newc archive (written in Rust, xz with CRC32 so the kernel can decode
//! it) holding `/init` (node-runtime), `/rootfs.sqsh` (a squashfs with the node-runtime
//! userspace and, as in Talos, the kernel modules under `/usr/lib/modules/<kver>` with
//! `modules.order`, `modules.builtin*` and the text indexes our own depmod writes — the tree
//! the imager merges extension modules into), `/dev/console`, the floor modules and their dependencies (resolved from
//! modules.dep), a `modules.dep` restricted to them and `/etc/modules-load.d/floor.conf`.
//! Every timestamp is SOURCE_DATE_EPOCH, every owner root, every walk sorted.

use anyhow::{Context, Result, bail};
use clap::Parser;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Cursor, Write};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(about = "Build base boot assets from an extracted Debian kernel and node-runtime")]
struct Args {
    /// Root of the extracted kernel package (contains boot/ and lib/modules/).
    #[arg(long)]
    kernel_root: PathBuf,
    /// The statically linked node-runtime binary.
    #[arg(long)]
    node_runtime: PathBuf,
    /// Module floor list (one module name per line, # comments).
    #[arg(long)]
    modules: PathBuf,
    /// systemd-boot EFI binary.
    #[arg(long, default_value = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi")]
    sd_boot: PathBuf,
    /// systemd-stub EFI stub.
    #[arg(long, default_value = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub")]
    sd_stub: PathBuf,
    /// Output directory, e.g. _out/assets/amd64.
    #[arg(long)]
    out: PathBuf,
    /// GRUB platform directories (Debian's grub-pc-bin and grub-efi-amd64-bin; for arm64 the
    /// `usr/lib/grub` of an unpacked grub-efi-arm64-bin).
    #[arg(long, default_value = "/usr/lib/grub")]
    grub_dir: PathBuf,
    /// Target architecture: amd64 (BIOS and x86_64-efi GRUB images) or arm64 (arm64-efi).
    #[arg(long, default_value = "amd64", value_parser = ["amd64", "arm64"])]
    arch: String,
}

/// Modules of the disk images' GRUB (docs/formats/disk-layout.md); `biosdisk` and `part_msdos` are
/// BIOS-only.
const GRUB_MODULES: &[&str] = &[
    "part_gpt",
    "ext2",
    "fat",
    "xfs",
    "normal",
    "configfile",
    "linux",
    "boot",
    "search",
    "search_fs_uuid",
    "search_fs_file",
    "ls",
    "cat",
    "echo",
    "test",
    "help",
    "reboot",
    "halt",
    "all_video",
    // the one-shot boot of an upgrade: load_env / save_env of grub/grubenv (upgrade.md)
    "loadenv",
];
const GRUB_BIOS_MODULES: &[&str] = &["biosdisk", "part_msdos"];
/// The disk images' GRUB prefix: BOOT must be partition 3.
const GRUB_PREFIX: &str = "(hd0,gpt3)/grub";

/// Runs grub-mkimage (allowed here only: it stands in for the upstream release build) and
/// returns the image bytes.
fn grub_mkimage(
    dir: &Path,
    format: &str,
    prefix: &str,
    extra: &[&str],
    mods: &[&str],
) -> Result<Vec<u8>> {
    let tmp = std::env::temp_dir().join(format!("base-assets-{}-{format}.img", std::process::id()));
    let out = std::process::Command::new("grub-mkimage")
        .arg("--directory")
        .arg(dir)
        .args(["--format", format, "--prefix", prefix, "--output"])
        .arg(&tmp)
        .args(extra)
        .args(mods)
        .output()
        .context("running grub-mkimage (apt-get install grub-common; hack/deps.sh)")?;
    if !out.status.success() {
        bail!(
            "grub-mkimage --format {format} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let b = fs::read(&tmp).with_context(|| format!("reading {}", tmp.display()))?;
    let _ = fs::remove_file(&tmp);
    Ok(b)
}

/// GRUB assets under `<out>/grub/`: `boot.img` and `core.img` (BIOS disk boot),
/// `grub-efi.img` (x86_64 EFI, for the grub layout's ESP), and for ISOs `eltorito.img`
/// (i386-pc-eltorito) and `boot_hybrid.img`; on arm64 only `grub-efi.img` (arm64-efi).
fn grub_assets(grub_dir: &Path, out: &Path, arch: &str) -> Result<()> {
    let dir = out.join("grub");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    if arch == "arm64" {
        // UEFI only: no BIOS images, and arm64 ISOs boot systemd-boot
        let efi_img = grub_mkimage(
            &grub_dir.join("arm64-efi"),
            "arm64-efi",
            GRUB_PREFIX,
            &["--compression", "xz"],
            GRUB_MODULES,
        )?;
        return write_atomic(&dir.join("grub-efi.img"), |w| Ok(w.write_all(&efi_img)?));
    }
    let pc = grub_dir.join("i386-pc");
    let efi = grub_dir.join("x86_64-efi");
    let mut bios_mods: Vec<&str> = GRUB_MODULES.to_vec();
    bios_mods.extend(GRUB_BIOS_MODULES);
    let core = grub_mkimage(&pc, "i386-pc", GRUB_PREFIX, &[], &bios_mods)?;
    if core.len() > 1024 * 1024 - 512 {
        bail!(
            "core.img is {} bytes: it must fit the 1 MiB BIOS boot partition",
            core.len()
        );
    }
    let efi_img = grub_mkimage(
        &efi,
        "x86_64-efi",
        GRUB_PREFIX,
        &["--compression", "xz"],
        GRUB_MODULES,
    )?;
    let mut iso_mods: Vec<&str> = vec!["iso9660", "biosdisk", "part_msdos"];
    iso_mods.extend(GRUB_MODULES);
    let eltorito = grub_mkimage(&pc, "i386-pc-eltorito", "/boot/grub", &[], &iso_mods)?;
    for (name, bytes) in [
        ("core.img", core),
        ("grub-efi.img", efi_img),
        ("eltorito.img", eltorito),
        (
            "boot.img",
            fs::read(pc.join("boot.img")).context("reading GRUB boot.img")?,
        ),
        (
            "boot_hybrid.img",
            fs::read(pc.join("boot_hybrid.img")).context("reading GRUB boot_hybrid.img")?,
        ),
    ] {
        write_atomic(&dir.join(name), |w| Ok(w.write_all(&bytes)?))?;
    }
    Ok(())
}

/// The release of the one kernel of an unpacked kernel package (`lib/modules/<release>`).
pub(crate) fn kernel_release(root: &Path) -> Result<String> {
    let mods_root = root.join("lib/modules");
    let kvers: Vec<String> = fs::read_dir(&mods_root)
        .with_context(|| format!("reading {}", mods_root.display()))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    match <[String; 1]>::try_from(kvers) {
        Ok([kver]) => Ok(kver),
        Err(kvers) => bail!(
            "expected exactly one kernel under {}, found {kvers:?}",
            mods_root.display()
        ),
    }
}

/// The parent directories of a relative `/`-separated path, outermost first (`a/b/c` → `a`,
/// `a/b`).
pub(crate) fn parents(path: &str) -> Vec<String> {
    let parts: Vec<&str> = path.split('/').collect();
    (1..parts.len()).map(|i| parts[..i].join("/")).collect()
}

pub(crate) fn epoch() -> Result<i64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not an integer")),
        Err(_) => Ok(0),
    }
}

fn read_floor(path: &Path) -> Result<Vec<String>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(kmod::parse_list(&text))
}

/// Stages `usr/lib/modules/<kver>` for the rootfs: the modules of `load` (paths relative to
/// `kdir`), the kernel's modules.order and modules.builtin*, and depmod's text indexes.
fn stage_modules(kdir: &Path, kver: &str, load: &[String], staging: &Path) -> Result<PathBuf> {
    let dst = staging.join(kver);
    for rel in load {
        let target = dst.join(rel);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        fs::copy(kdir.join(rel), &target).with_context(|| format!("copying {rel}"))?;
    }
    for f in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        if kdir.join(f).exists() {
            fs::copy(kdir.join(f), dst.join(f)).with_context(|| format!("copying {f}"))?;
        }
    }
    let out = kmod::depmod::generate(&dst).context("depmod")?;
    out.write_to(&dst).context("writing modules.*")?;
    Ok(dst)
}

fn rootfs_sqsh(node_runtime: &Path, modules: &Path, kver: &str, mtime: u32) -> Result<Vec<u8>> {
    let mut fs = squashfs::Builder::new(squashfs::Options {
        compression: squashfs::Compression::Zstd { level: 18 },
        mtime,
        ..squashfs::Options::default()
    });
    fs.dir("", 0o755, Vec::new()).context("squashfs root")?;
    // mount points of the booted system; /system and /tmp get tmpfs, /run is moved over
    for d in [
        "dev",
        "etc",
        "proc",
        "run",
        "sbin",
        "sys",
        "system",
        "tmp",
        "usr",
        "usr/lib",
        // mount point of the extension firmware node-runtime binds from the initramfs
        "usr/lib/firmware",
        "usr/lib/modules",
        "var",
    ] {
        fs.dir(d, 0o755, Vec::new())
            .with_context(|| format!("squashfs dir {d}"))?;
    }
    let os_release = b"NAME=\"node-runtime\"\nID=node-runtime\nPRETTY_NAME=\"node-runtime\"\n";
    fs.file(
        "etc/os-release",
        0o644,
        Vec::new(),
        squashfs::Source::Bytes(os_release.to_vec()),
    )
    .context("squashfs etc/os-release")?;
    for f in ["etc/hosts", "etc/resolv.conf"] {
        // bind-mount targets for files kept under /system/etc
        fs.file(f, 0o644, Vec::new(), squashfs::Source::Bytes(Vec::new()))
            .with_context(|| format!("squashfs {f}"))?;
    }
    fs.file(
        "sbin/init",
        0o755,
        Vec::new(),
        squashfs::Source::Path(node_runtime.to_path_buf()),
    )
    .context("squashfs sbin/init")?;
    fs.add_dir_tree(modules, &format!("usr/lib/modules/{kver}"))
        .context("squashfs usr/lib/modules")?;
    let mut out = Cursor::new(Vec::new());
    fs.write(&mut out).context("writing rootfs.sqsh")?;
    Ok(out.into_inner())
}

/// Writes `path` via a temp file in the same directory and renames it into place.
fn write_atomic(path: &Path, f: impl FnOnce(&mut BufWriter<File>) -> Result<()>) -> Result<()> {
    let tmp = path.with_extension("tmp-partial");
    let r = (|| -> Result<()> {
        let mut w = BufWriter::new(File::create(&tmp)?);
        f(&mut w)?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        fs::rename(&tmp, path)?;
        Ok(())
    })();
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r.with_context(|| format!("writing {}", path.display()))
}

mod overlay;
mod publish;

fn main() -> Result<()> {
    if std::env::args().nth(1).as_deref() == Some("publish") {
        return publish::main(std::env::args().skip(1));
    }
    if std::env::args().nth(1).as_deref() == Some("overlay") {
        return overlay::main(std::env::args().skip(1));
    }
    let a = Args::parse();
    let mtime = epoch()?;
    let mtime32 = u32::try_from(mtime).context("SOURCE_DATE_EPOCH out of range")?;
    let mods_root = a.kernel_root.join("lib/modules");
    let kver = &kernel_release(&a.kernel_root)?;
    let kdir = mods_root.join(kver);
    let vmlinuz = a.kernel_root.join(format!("boot/vmlinuz-{kver}"));
    let dep_text = fs::read_to_string(kdir.join("modules.dep"))
        .with_context(|| format!("reading {}/modules.dep (run hack/deps.sh)", kdir.display()))?;
    let dep = kmod::ModDep::parse(&dep_text);
    let floor = read_floor(&a.modules)?;
    let load = dep
        .load_order(&floor)
        .with_context(|| format!("resolving {}", a.modules.display()))?;

    fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let staging = a.out.join(".modules-staging");
    let _ = fs::remove_dir_all(&staging);
    let modules = stage_modules(&kdir, kver, &load, &staging)?;
    let sqsh = rootfs_sqsh(&a.node_runtime, &modules, kver, mtime32);
    let _ = fs::remove_dir_all(&staging);
    let sqsh = sqsh?;

    // Everything that goes into the initramfs, keyed by path so that the walk is sorted and
    // every parent directory precedes its children.
    enum Item {
        Dir,
        File(PathBuf, u32),
        Bytes(Vec<u8>, u32),
        Console,
    }
    let mut items: BTreeMap<String, Item> = BTreeMap::new();
    let add_parents = |items: &mut BTreeMap<String, Item>, p: &str| {
        for d in parents(p) {
            items.entry(d).or_insert(Item::Dir);
        }
    };
    for d in ["dev", "proc", "sys", "run", "sysroot", "tmp"] {
        items.insert(d.into(), Item::Dir);
    }
    items.insert("dev/console".into(), Item::Console);
    items.insert("init".into(), Item::File(a.node_runtime.clone(), 0o755));
    items.insert("rootfs.sqsh".into(), Item::Bytes(sqsh, 0o444));
    let moddir = format!("lib/modules/{kver}");
    let mut dep_subset = String::new();
    for path in &load {
        let p = format!("{moddir}/{path}");
        add_parents(&mut items, &p);
        items.insert(p, Item::File(kdir.join(path), 0o644));
        dep_subset.push_str(&format!("{path}:"));
        for d in dep.deps(path).unwrap_or_default() {
            dep_subset.push(' ');
            dep_subset.push_str(d);
        }
        dep_subset.push('\n');
    }
    items.insert(
        format!("{moddir}/modules.dep"),
        Item::Bytes(dep_subset.into_bytes(), 0o644),
    );
    let floor_conf = floor.join("\n") + "\n";
    add_parents(&mut items, "etc/modules-load.d/floor.conf");
    items.insert(
        "etc/modules-load.d/floor.conf".into(),
        Item::Bytes(floor_conf.into_bytes(), 0o644),
    );

    let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    write_atomic(&a.out.join("initramfs.xz"), |w| {
        let stream = liblzma::stream::MtStreamBuilder::new()
            .preset(6)
            .threads(threads)
            .check(liblzma::stream::Check::Crc32)
            .encoder()
            .context("xz encoder")?;
        let xz = liblzma::write::XzEncoder::new_stream(w, stream);
        let mut c = cpio::Writer::new(xz, mtime);
        for (path, item) in &items {
            match item {
                Item::Dir => c.dir(path, 0o755)?,
                Item::Console => c.char_device(path, 0o600, 5, 1)?,
                Item::Bytes(b, perm) => c.file(path, *perm, b.len() as u64, &mut &b[..])?,
                Item::File(src, perm) => {
                    let mut f =
                        File::open(src).with_context(|| format!("opening {}", src.display()))?;
                    let len = f.metadata()?.len();
                    c.file(path, *perm, len, &mut f)
                        .with_context(|| format!("adding {}", src.display()))?;
                }
            }
        }
        c.finish()?.finish().context("finishing xz stream")?;
        Ok(())
    })?;
    // the stub without its COFF symbol table, as a release build ships it (UKI assembly
    // refuses symbols)
    let stub =
        std::fs::read(&a.sd_stub).with_context(|| format!("reading {}", a.sd_stub.display()))?;
    let stub = pe::strip_symbols(&stub)
        .with_context(|| format!("stripping the symbols of {}", a.sd_stub.display()))?;
    write_atomic(&a.out.join("systemd-stub.efi"), |w| {
        w.write_all(&stub)?;
        w.flush()?;
        Ok(())
    })?;
    for (src, name) in [(&vmlinuz, "vmlinuz"), (&a.sd_boot, "systemd-boot.efi")] {
        write_atomic(&a.out.join(name), |w| {
            let mut f = File::open(src).with_context(|| format!("opening {}", src.display()))?;
            std::io::copy(&mut f, w)?;
            w.flush()?;
            Ok(())
        })?;
    }
    grub_assets(&a.grub_dir, &a.out, &a.arch)?;
    eprintln!(
        "base-assets: kernel {kver}, {} modules ({} in the floor list) → {}",
        load.len(),
        floor.len(),
        a.out.display()
    );
    Ok(())
}
