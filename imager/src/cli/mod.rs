//! Stage 1: the `imager` command line — one clap parser with a typed subcommand enum.
//!
//! `imager <profile>|- [flags]` builds (the default command): a built-in profile name with
//! flags merged onto it (docs/formats/profile.md, "CLI flags → profile"), or `-` to read a whole profile from
//! stdin (then only `--output`/`--tar-to-stdout` apply, as in Talos). The subcommands: `boot`,
//! `cache`, `pull`, `verify`, `verify-blob`, `self-image`, `completion`, `man`. Errors become
//! exit codes here, in one place.

pub mod boot;
pub mod docs;
mod flags;
pub mod inspect;
pub mod registry;
pub mod self_image;

use crate::build::{BuildOptions, build};
use crate::error::{Error, ExitCode, Result};
use crate::io::limits;
use crate::profile::{self, BUILTIN, OutputKind};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use std::path::PathBuf;

fn after_help() -> String {
    let names: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
    format!(
        "Built-in profiles: {}.

Registry pulls (extension and base installer imageRefs): IMAGER_REGISTRY_TIMEOUT (seconds per
read, default 30) and IMAGER_REGISTRY_ATTEMPTS (default 4, exponential backoff from 250 ms)
tune retries; every blob's size and sha256 are checked while it streams into the cache.

Exit codes: 0 ok, 1 unknown, 2 invalid input (profile, flags, META), 3 unsupported,
4 environment, 5 dependency, 6 I/O (including missing input files), 7 assembly.

SOURCE_DATE_EPOCH (default 0) sets every timestamp written; the same inputs and epoch give
byte-identical outputs.",
        names.join(", ")
    )
}

/// `imager --version`: the crate version, the commit it was built from (`IMAGER_GIT_COMMIT`
/// at build time, set by hack/env.sh) and the Talos version profiles default to.
pub static VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{} (commit {}; default Talos version {})",
        env!("CARGO_PKG_VERSION"),
        option_env!("IMAGER_GIT_COMMIT").unwrap_or("unknown"),
        profile::quirks::DEFAULT_VERSION
    )
});

/// Build bootable OS media (disk images, ISO, kernel, initramfs, cmdline, PXE set) from a
/// Talos-style profile.
#[derive(Parser, Debug)]
#[command(
    name = "imager",
    version = VERSION.as_str(),
    after_help = after_help(),
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    disable_help_subcommand = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    build: BuildArgs,
}

/// The subcommands; without one, `imager PROFILE …` builds.
#[derive(Subcommand, Debug)]
enum Command {
    /// Boot an artifact in QEMU (TCG) with the serial console on stderr.
    Boot(boot::BootArgs),
    /// The content-addressed blob cache shared by builds.
    Cache(registry::CacheArgs),
    /// Pull the linux/<arch> image of REF (through mirrors, signature policy applied) into the
    /// cache and write it as an OCI layout directory.
    Pull(registry::PullArgs),
    /// Check an image reference's cosign signature under a policy (no layers are pulled).
    Verify(registry::VerifyArgs),
    /// Check a detached Sigstore bundle (`<file>.sigstore.json`) of a file against a key, or
    /// keyless against a trusted root, an identity and an OIDC issuer.
    VerifyBlob(registry::VerifyBlobArgs),
    /// Package this imager and its install directory as the imager container image (OCI,
    /// FROM scratch, reproducible), optionally pushed and signed.
    SelfImage(self_image::SelfImageArgs),
    /// Describe a PE image (UKI, systemd-boot): sections, UKI profiles and their command
    /// lines, kernel release, Authenticode digest and signers.
    Inspect(inspect::InspectArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion(docs::CompletionArgs),
    /// Write the man pages (imager.1 and one per subcommand) into a directory.
    Man(docs::ManArgs),
}

/// How to reach registries: credentials, CAs and the blob cache (builds and `self-image`).
#[derive(clap::Args, Debug)]
pub struct RegistryAccess {
    /// Registry credentials `HOST=USER:PASSWORD` (repeatable); otherwise the registries config,
    /// GITHUB_TOKEN (ghcr.io) and ~/.docker/config.json (auths, credHelpers, credsStore) apply.
    #[arg(long = "registry-auth", value_name = "HOST=USER:PASSWORD")]
    registry_auth: Vec<String>,

    /// Extra CA certificate file (PEM) trusted for HTTPS registries (repeatable).
    #[arg(long = "registry-ca", value_name = "FILE")]
    registry_ca: Vec<PathBuf>,

    /// Blob cache directory (default $XDG_CACHE_HOME/imager or ~/.cache/imager); see
    /// `imager cache --help`.
    #[arg(long = "cache-dir", env = "IMAGER_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
}

impl RegistryAccess {
    /// Fetch options with these credentials, CAs and cache (no mirrors, no policy).
    fn fetch_options(&self) -> Result<crate::inputs::registry::FetchOptions> {
        let credentials = self
            .registry_auth
            .iter()
            .map(|a| {
                oci::auth::parse_host_credentials(a)
                    .map_err(|e| Error::invalid(format!("--registry-auth {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(crate::inputs::registry::FetchOptions {
            credentials,
            ca_files: self.registry_ca.clone(),
            cache_dir: self.cache_dir.clone(),
            timeout: env_num::<f64>("IMAGER_REGISTRY_TIMEOUT")?
                .map(std::time::Duration::from_secs_f64),
            attempts: env_num("IMAGER_REGISTRY_ATTEMPTS")?,
            ..Default::default()
        })
    }
}

/// What a build takes: the profile and the flags merged onto it.
#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    /// A built-in profile name (e.g. `metal`, `aws`), or `-` to read a complete profile YAML
    /// from stdin.
    #[arg(required = true)]
    profile: Option<String>,

    /// Target architecture (amd64 or arm64); the default is the base profile's when an
    /// overlay's profile sets one, else the host's.
    #[arg(long)]
    arch: Option<String>,

    /// Platform (overrides the profile's), e.g. metal, aws, nocloud.
    #[arg(long)]
    platform: Option<String>,

    /// Base installer image reference (input.baseInstaller.imageRef).
    #[arg(long = "base-installer-image", value_name = "REF")]
    base_installer_image: Option<String>,

    /// Image cache: an image reference, or a path to an OCI layout directory.
    #[arg(long = "image-cache", value_name = "REF|DIR")]
    image_cache: Option<String>,

    /// Plain HTTP / no TLS verification for the base installer, extension and cache images.
    #[arg(long)]
    insecure: bool,

    /// Extra kernel argument (repeatable). `-key` deletes a default argument, `-key=value` one
    /// value; `console=` and `talos.platform=` replace the defaults.
    #[arg(
        long = "extra-kernel-arg",
        value_name = "ARG",
        allow_hyphen_values = true
    )]
    extra_kernel_args: Vec<String>,

    /// META value `KEY=VALUE` (repeatable); KEY is decimal, 0x hex, 0o octal or 0b binary
    /// (0..=0xff); `KEY=@FILE` reads the value from FILE. Key 0xa holds the metal network
    /// configuration. Disk images carry META in their META partition, other outputs on the
    /// kernel cmdline as talos.environment=INSTALLER_META_BASE64=….
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    meta: Vec<String>,

    /// System extension (repeatable): a directory is an OCI image layout (ociPath), a file a
    /// plain filesystem tarball, optionally gzip/zstd/xz-compressed (tarballPath), anything
    /// else an image reference pulled from its registry (see --registries-config).
    #[arg(long = "system-extension-image", value_name = "REF|DIR|FILE")]
    system_extension_images: Vec<String>,

    /// Check extension contents against Talos's allowed paths (no world-writable files).
    #[arg(long = "extension-validate-contents")]
    extension_validate_contents: bool,

    /// Allow setuid/setgid files in the extension with this manifest name (repeatable).
    #[arg(long = "extension-allow-setuid", value_name = "NAME")]
    extension_allow_setuid: Vec<String>,

    /// Output directory (created if missing) [default: /out; with --tar-to-stdout and no
    /// --output, a private directory under $TMPDIR (or /tmp), removed afterwards].
    #[arg(long)]
    output: Option<PathBuf>,

    /// Output kind, overriding the profile's: image, iso, installer, kernel, initramfs, cmdline,
    /// pxe (uki is not implemented yet).
    #[arg(long = "output-kind", value_name = "KIND")]
    output_kind: Option<String>,

    /// After a successful build, write the output directory as a .tar.gz to stdout. Without
    /// --output the build runs in a private temporary directory (nothing is kept).
    #[arg(long = "tar-to-stdout")]
    tar_to_stdout: bool,

    /// Overlay installer name (overlay.name).
    #[arg(long = "overlay-name", value_name = "NAME")]
    overlay_name: Option<String>,

    /// Overlay image (overlay.image and input.overlayInstaller): an OCI layout directory, a
    /// tarball, or a registry reference.
    #[arg(long = "overlay-image", value_name = "REF|DIR|FILE")]
    overlay_image: Option<String>,

    /// Time limit of one run of an overlay's installer program, in seconds (it runs in a
    /// sandbox; docs/formats/overlays.md).
    #[arg(
        long = "overlay-timeout",
        env = "IMAGER_OVERLAY_TIMEOUT",
        value_name = "SECS",
        default_value_t = 120,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    overlay_timeout: u64,

    /// Overlay option `k=v` (`v` of `@file` reads the file) or `@file.yaml` (a YAML map).
    #[arg(long = "overlay-option", value_name = "OPT")]
    overlay_options: Vec<String>,

    /// Machine configuration file to embed (customization.embeddedMachineConfiguration).
    #[arg(long = "embedded-config-path", value_name = "FILE")]
    embedded_config_path: Option<PathBuf>,

    /// Add Microsoft's well-known certificates to the SecureBoot enrolment databases.
    #[arg(long = "secureboot-include-well-known-certs")]
    secureboot_include_well_known_certs: bool,

    /// gRPC signer for SecureBoot signing (`unix://…`).
    #[arg(long = "secureboot-signer-address", value_name = "ADDR")]
    secureboot_signer_address: Option<String>,

    /// gRPC signer for PCR signing (`unix://…`).
    #[arg(long = "pcr-signer-address", value_name = "ADDR")]
    pcr_signer_address: Option<String>,

    /// SecureBoot key enrolment: if-safe, manual, force or off (image and ISO options).
    #[arg(long = "secureboot-enroll-keys", value_name = "MODE")]
    secureboot_enroll_keys: Option<String>,

    /// Directory holding the base assets as `<arch>/{vmlinuz,initramfs.xz,systemd-boot.efi,
    /// systemd-stub.efi}`; it replaces /usr/install in the default input paths.
    #[arg(
        long = "install-dir",
        env = "IMAGER_INSTALL_DIR",
        default_value = "/usr/install"
    )]
    install_dir: String,

    /// Registry mirrors, TLS and credentials, as Talos's `machine.registries` (a file holding
    /// `mirrors:`/`config:`, `registries:`, or a whole machine config); merged over the
    /// profile's `input.registries`. With a mirror whose `skipFallback` is set, the original
    /// host is never contacted (air-gapped builds).
    #[arg(
        long = "registries-config",
        env = "IMAGER_REGISTRIES_CONFIG",
        value_name = "FILE"
    )]
    registries_config: Option<PathBuf>,

    #[command(flatten)]
    access: RegistryAccess,

    /// cosign signature policy (YAML: `images: [{glob, key | keyless: {identity|identityRegexp,
    /// issuer|issuerRegexp, trustedRoot}}]`). Every pulled image whose repository matches a
    /// rule must carry a valid signature, or the build fails.
    #[arg(
        long = "signature-policy",
        env = "IMAGER_SIGNATURE_POLICY",
        value_name = "FILE"
    )]
    signature_policy: Option<PathBuf>,

    /// Do not verify signatures even where the policy requires them (a warning is printed).
    #[arg(long = "insecure-skip-signature-verify")]
    insecure_skip_signature_verify: bool,

    /// Push the installer image to REF (plain HTTP with --insecure).
    #[arg(long, value_name = "REF")]
    push: Option<String>,

    /// Sign outputs with this cosign/PKCS#8 EC P-256 private key (PEM; COSIGN_PASSWORD
    /// decrypts cosign-encrypted keys): a pushed image gets a cosign signature, every written
    /// file a detached Sigstore bundle `<file>.sigstore.json`.
    #[arg(long = "sign-key", env = "IMAGER_SIGN_KEY", value_name = "FILE")]
    sign_key: Option<PathBuf>,

    /// Print the filled-in profile as YAML and exit without building.
    #[arg(long = "dump-profile")]
    dump_profile: bool,

    /// Print the artifacts (kind, path, size, sha256) as JSON on stdout (on stderr with
    /// --tar-to-stdout).
    #[arg(long)]
    json: bool,
}

/// The architecture this binary runs on (`amd64` or `arm64`).
pub const fn host_arch() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    }
}

/// SOURCE_DATE_EPOCH (0 when unset), refused when it is not an integer.
pub fn epoch() -> Result<i64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| Error::invalid(format!("SOURCE_DATE_EPOCH={v:?} is not an integer"))),
        _ => Ok(0),
    }
}

impl BuildArgs {
    /// The profile argument (`-` for stdin).
    fn profile(&self) -> &str {
        self.profile.as_deref().unwrap_or_default()
    }
}

/// Profile stage: the profile the arguments describe, merged (onto an overlay's profile or a
/// built-in one), defaulted and validated.
fn resolve(cli: &BuildArgs) -> Result<profile::Resolved> {
    let (value, what) = if cli.profile() == "-" {
        let what = "profile (stdin)";
        let bytes = crate::io::read_capped(std::io::stdin().lock(), limits::PROFILE, what)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| Error::invalid(format!("{what}: not UTF-8 text")))?;
        (
            profile::parse_yaml(&text, "profile (stdin)")?,
            "profile (stdin)".to_string(),
        )
    } else {
        (
            flags::flags_profile(cli)?,
            format!("profile {}", cli.profile()),
        )
    };
    let mut value = value;
    let extra = overlay_profiles(cli, &value)?;
    if cli.profile() != "-" && cli.arch.is_none() {
        let base_arch = extra
            .get(cli.profile())
            .and_then(|b| b.get("arch"))
            .and_then(Value::as_str)
            .is_some_and(|a| !a.is_empty());
        if !base_arch && let Value::Object(m) = &mut value {
            m.insert("arch".into(), Value::String(host_arch().into()));
        }
    }
    profile::resolve(value, &what, std::path::Path::new(&cli.install_dir), &extra)
}

/// The profiles of the overlay image the unmerged profile `value` names (Talos reads them
/// before the base profile is chosen): the image is read for the profile's architecture when
/// it names one, else for the host's, in a scratch directory of the output directory.
fn overlay_profiles(cli: &BuildArgs, value: &Value) -> Result<profile::OverlayProfiles> {
    let Some(o) = value.get("overlay").filter(|o| !o.is_null()) else {
        return Ok(Default::default());
    };
    // a malformed overlay or registries field is left to the typed profile, whose error
    // names the exact field
    let Ok(o) = serde_json::from_value::<profile::OverlayOptions>(o.clone()) else {
        return Ok(Default::default());
    };
    if o.image.is_empty() {
        return Ok(Default::default());
    }
    let arch = match value.get("arch").and_then(Value::as_str) {
        Some(a @ ("amd64" | "arm64")) => a,
        _ => host_arch(),
    };
    let registries = match value.pointer("/input/registries") {
        Some(r) if !r.is_null() => serde_json::from_value(r.clone()).ok(),
        _ => None,
    };
    let fetcher = if o.image.tarball_path.is_empty() && o.image.oci_path.is_empty() {
        Some(crate::inputs::registry::Fetcher::new(&fetch_options(
            cli, registries,
        )?)?)
    } else {
        None
    };
    let out = output_dir(cli)?;
    let work = crate::output::workdir::WorkDir::create(out.path())?;
    let opts = crate::inputs::extensions::Options {
        max_bytes: max_extension_bytes()?,
        ..Default::default()
    };
    crate::inputs::overlay::profiles(&o.image, arch, fetcher.as_ref(), work.path(), &opts)
}

fn env_num<T: std::str::FromStr>(name: &str) -> Result<Option<T>> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| Error::invalid(format!("{name}={v:?} is not a number"))),
        _ => Ok(None),
    }
}

/// Registry settings from the flags, the environment and the profile.
fn fetch_options(
    cli: &BuildArgs,
    registries: Option<oci::RegistriesConfig>,
) -> Result<crate::inputs::registry::FetchOptions> {
    let mut registries = registries.unwrap_or_default();
    if let Some(f) = &cli.registries_config {
        registries.merge(&crate::inputs::registry::registries_file(f)?);
    }
    Ok(crate::inputs::registry::FetchOptions {
        registries,
        policy: cli.signature_policy.clone(),
        skip_verify: cli.insecure_skip_signature_verify,
        ..cli.access.fetch_options()?
    })
}

/// Loads a `--sign-key` file.
fn load_sign_key(f: Option<&std::path::Path>) -> Result<Option<crate::build::SignKey>> {
    let Some(f) = f else {
        return Ok(None);
    };
    let pem = crate::io::read_bytes(f, limits::SIDE_FILE, "--sign-key", ExitCode::Io)?;
    let pw = std::env::var("COSIGN_PASSWORD").ok();
    let k = cosign::SigningKey::from_pem(&pem, pw.as_deref().map(str::as_bytes))
        .map_err(|e| Error::invalid(format!("--sign-key {}: {e}", f.display())))?;
    Ok(Some(crate::build::SignKey(std::sync::Arc::new(k))))
}

fn stdin_ignores(cli: &BuildArgs) -> bool {
    cli.profile() == "-"
        && (!cli.extra_kernel_args.is_empty()
            || !cli.meta.is_empty()
            || cli.platform.is_some()
            || cli.output_kind.is_some()
            || !cli.system_extension_images.is_empty()
            || cli.base_installer_image.is_some()
            || cli.overlay_image.is_some())
}

/// `IMAGER_MAX_EXTENSION_BYTES`: bound on one extension's file contents.
fn max_extension_bytes() -> Result<u64> {
    match std::env::var("IMAGER_MAX_EXTENSION_BYTES") {
        Ok(v) => v.trim().parse().map_err(|_| {
            Error::invalid(format!(
                "IMAGER_MAX_EXTENSION_BYTES={v:?} is not a byte count"
            ))
        }),
        Err(_) => Ok(crate::inputs::extensions::DEFAULT_MAX_BYTES),
    }
}

/// Where a build writes: `--output`, else `/out`, else (with `--tar-to-stdout`) a private
/// directory under the temporary directory, so that `docker run -i IMAGE - --tar-to-stdout`
/// needs no volume and no writable `/out` (a read-only root with a tmpfs on /tmp is enough).
#[derive(Debug)]
enum OutputDir {
    Given(PathBuf),
    Scratch(crate::output::workdir::Scratch),
}

impl OutputDir {
    fn path(&self) -> &std::path::Path {
        match self {
            Self::Given(p) => p,
            Self::Scratch(t) => t.path(),
        }
    }
}

fn output_dir(cli: &BuildArgs) -> Result<OutputDir> {
    match (&cli.output, cli.tar_to_stdout) {
        (Some(p), _) => Ok(OutputDir::Given(p.clone())),
        (None, false) => Ok(OutputDir::Given(PathBuf::from("/out"))),
        (None, true) => {
            let tmp = std::env::temp_dir();
            crate::output::workdir::Scratch::create(&tmp, "imager-out.")
                .map(OutputDir::Scratch)
                .map_err(|e| {
                    Error::new(
                        ExitCode::Io,
                        anyhow::anyhow!(
                            "--tar-to-stdout without --output needs a writable temporary \
                             directory ({}; set TMPDIR or give --output): {e}",
                            crate::error::printable(&tmp.display().to_string())
                        ),
                    )
                })
        }
    }
}

/// What a command wrote: the `--json` report (on stderr when stdout carries data) and one
/// `imager: wrote …` line per artifact.
fn report(artifacts: &[crate::output::Artifact], secs: f64, json: bool, stdout_busy: bool) {
    if json {
        let out = json!({"artifacts": artifacts, "seconds": secs});
        if stdout_busy {
            eprintln!("{out}")
        } else {
            println!("{out}")
        }
    }
    for a in artifacts {
        eprintln!("imager: wrote {} ({} bytes)", a.path.display(), a.size);
    }
}

/// `imager PROFILE …`: the pipeline, and what it prints.
fn run_build(cli: &BuildArgs) -> Result<()> {
    if stdin_ignores(cli) {
        eprintln!(
            "imager: the profile comes from stdin: flags other than --output and --tar-to-stdout are ignored"
        );
    }
    crate::progress::init(cli.json);
    let r = resolve(cli)?;
    let p = &r.profile;
    if cli.dump_profile {
        print!("{}", p.to_yaml()?);
        return Ok(());
    }
    p.check_supported()?;
    for n in crate::output::limitations(p) {
        eprintln!("imager: note: {n}");
    }
    // options are read in the order they always were: epoch, bounds, registry settings,
    // then --push and --sign-key
    let epoch = epoch()?;
    let max_bytes = max_extension_bytes()?;
    let out = output_dir(cli)?;
    let fetch = fetch_options(cli, p.input.registries.clone())?;
    let push = match &cli.push {
        None => None,
        Some(r) => {
            if p.output.kind != OutputKind::Installer {
                return Err(Error::invalid(format!(
                    "--push {r}: only the installer output is an image"
                )));
            }
            Some((
                crate::inputs::registry::parse_ref("--push", r)?,
                cli.insecure,
            ))
        }
    };
    let opts = BuildOptions {
        output_dir: out.path().to_path_buf(),
        epoch,
        digests: cli.json,
        inputs: crate::inputs::Options {
            fetch,
            extensions: crate::inputs::extensions::Options {
                validate_contents: cli.extension_validate_contents,
                allow_setuid: cli.extension_allow_setuid.clone(),
                max_bytes,
            },
            push: push.is_some(),
            overlay_timeout: std::time::Duration::from_secs(cli.overlay_timeout),
        },
        push,
        sign: load_sign_key(cli.sign_key.as_deref())?,
    };
    crate::output::workdir::handle_signals();
    let start = std::time::Instant::now();
    let artifacts = build(&r, &opts)?;
    let secs = start.elapsed().as_secs_f64();
    report(&artifacts, secs, cli.json, cli.tar_to_stdout);
    eprintln!("imager: done in {secs:.1} s");
    if cli.tar_to_stdout {
        let stdout = std::io::stdout().lock();
        crate::output::tar::tar_gz_dir(out.path(), opts.epoch, stdout)?;
    }
    Ok(())
}

/// Parses the command line, runs it and returns the process exit code: 0, clap's 2 for usage
/// errors, or the failure's [`ExitCode`] after one `error:` line.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let r = match cli.command {
        None => run_build(&cli.build),
        Some(Command::Boot(a)) => boot::run(&a),
        Some(Command::Cache(a)) => registry::cache(a),
        Some(Command::Pull(a)) => registry::pull(a),
        Some(Command::Verify(a)) => registry::verify(a),
        Some(Command::VerifyBlob(a)) => registry::verify_blob(a),
        Some(Command::SelfImage(a)) => self_image::run(&a),
        Some(Command::Inspect(a)) => inspect::run(&a),
        Some(Command::Completion(a)) => docs::completion(&a),
        Some(Command::Man(a)) => docs::man(&a),
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {}", crate::error::printable(&e.to_string()));
            e.exit_code()
        }
    }
}
