//! `factory`: the Image Factory service (docs/formats/factory.md).

use anyhow::{Context, Result, bail};
use clap::Parser;
use factory::config::Config;
use factory::log;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Parser)]
#[command(
    name = "factory",
    version,
    about = "The Image Factory: builds any asset of a schematic and Talos version on demand, \
             caches it in an OCI registry shared by every instance, serves PXE scripts",
    after_help = "Configuration: the defaults, then IF_* environment variables \
                  (IF_CACHE_OCI_REGISTRY=…), then each --config file (YAML or JSON) in order. \
                  Keys and routes: docs/formats/factory.md."
)]
struct Args {
    /// A configuration file (YAML, or JSON with a .json name); repeatable, later files win.
    #[arg(long = "config", value_name = "FILE")]
    config: Vec<PathBuf>,
    /// Print the effective configuration as JSON and exit.
    #[arg(long)]
    print_config: bool,
}

/// Exit codes: 0 after a graceful shutdown, 1 on a runtime failure, 2 on a bad
/// configuration (clap's usage errors are 2 as well).
const EXIT_CONFIG: i32 = 2;

fn main() {
    let args = Args::parse();
    // variables that are not UTF-8 cannot be configuration (and must not stop the start)
    let env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    let cfg = match Config::load(&args.config, env, "IF_") {
        Ok(c) => c,
        Err(e) => {
            log::error("bad configuration", &[("error", &e.to_string())]);
            std::process::exit(EXIT_CONFIG);
        }
    };
    if args.print_config {
        match serde_json::to_string_pretty(&cfg) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                log::error("printing the configuration", &[("error", &e.to_string())]);
                std::process::exit(1);
            }
        }
        return;
    }
    if let Err(e) = run(cfg) {
        log::error("stopped", &[("error", &format!("{e:#}"))]);
        std::process::exit(1);
    }
}

fn read_bounded(p: &Path, what: &str) -> Result<Vec<u8>> {
    use std::io::Read as _;
    let mut b = Vec::new();
    std::fs::File::open(p)
        .and_then(|f| f.take(1 << 20).read_to_end(&mut b))
        .with_context(|| format!("{what} {}", p.display()))?;
    Ok(b)
}

/// The input signature policy the configuration describes, as the imager's policy file.
fn policy(cfg: &Config, work: &Path) -> Result<Option<PathBuf>> {
    let cs = &cfg.container_signature;
    if cs.disabled {
        log::warn(
            "input signature verification is disabled (containerSignature.disabled)",
            &[],
        );
        return Ok(None);
    }
    let abs = |p: &str| -> Result<String> {
        let p = std::fs::canonicalize(p).with_context(|| format!("containerSignature file {p}"))?;
        Ok(p.display().to_string())
    };
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let rule = if !cs.public_key_file.is_empty() {
        format!("    key: {}\n", q(&abs(&cs.public_key_file)?))
    } else {
        if cs.trusted_root_file.is_empty() {
            bail!(
                "keyless verification needs containerSignature.trustedRootFile (a pinned \
                 Sigstore trusted_root.json); or set containerSignature.publicKeyFile"
            );
        }
        let issuer = if cs.issuer_regexp.is_empty() {
            format!("      issuer: {}\n", q(&cs.issuer))
        } else {
            format!("      issuerRegexp: {}\n", q(&cs.issuer_regexp))
        };
        format!(
            "    keyless:\n      identityRegexp: {}\n{issuer}      trustedRoot: {}\n",
            q(&cs.subject_regexp),
            q(&abs(&cs.trusted_root_file)?)
        )
    };
    let text = format!("images:\n  - glob: \"**\"\n{rule}");
    // parsed here so that a bad key or pattern stops the start, not the first build
    cosign::Policy::from_yaml(&text, work).context("containerSignature")?;
    let p = work.join("input-policy.yaml");
    std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    Ok(Some(p))
}

fn listen_addr(a: &str) -> String {
    match a.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => a.to_string(),
    }
}

/// Creates the work directory, private to this user (mode 0700; chmod fails on a directory
/// someone else owns), and refuses a symbolic link there: the default lives under the shared
/// temporary directory.
fn private_dir(work: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let m = std::fs::symlink_metadata(work).with_context(|| format!("{}", work.display()))?;
    if !m.file_type().is_dir() {
        bail!(
            "build.workDir {} is not a directory (a symbolic link?)",
            work.display()
        );
    }
    std::fs::set_permissions(work, std::fs::Permissions::from_mode(0o700)).with_context(|| {
        format!(
            "build.workDir {}: not ours to use (owned by another user?)",
            work.display()
        )
    })?;
    Ok(())
}

fn run(cfg: Config) -> Result<()> {
    let work = cfg.work_dir();
    private_dir(&work)?;
    // builds and installer assemblies of a previous run of this work directory are dead
    for sub in ["builds", "installers"] {
        let d = work.join(sub);
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    }
    let pem = read_bounded(
        Path::new(&cfg.cache.signing_key_path),
        "cache.signingKeyPath",
    )?;
    let password = std::env::var("COSIGN_PASSWORD").ok();
    let key = cosign::SigningKey::from_pem(&pem, password.as_deref().map(str::as_bytes))
        .map_err(|e| anyhow::anyhow!("cache.signingKeyPath: {e}"))?;
    let registries = if cfg.artifacts.registries_config.is_empty() {
        oci::RegistriesConfig::default()
    } else {
        imager::inputs::registry::registries_file(Path::new(&cfg.artifacts.registries_config))
            .map_err(|e| anyhow::anyhow!("artifacts.registriesConfig: {e:#}"))?
    };
    let fetch = imager::inputs::registry::FetchOptions {
        registries,
        cache_dir: Some(work.join("blobs")),
        policy: policy(&cfg, &work)?,
        ..Default::default()
    };
    let fetcher =
        imager::inputs::registry::Fetcher::new(&fetch).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let store = factory::store::Store::new(
        fetcher,
        Arc::new(key),
        cfg.cache.oci.clone(),
        cfg.artifacts.schematic.clone(),
    );
    let addr = listen_addr(&cfg.http.listen_addr);
    let server =
        tiny_http::Server::http(&addr).map_err(|e| anyhow::anyhow!("listening on {addr}: {e}"))?;
    let metrics_server = if cfg.metrics.addr.is_empty() {
        None
    } else {
        let a = listen_addr(&cfg.metrics.addr);
        Some(
            tiny_http::Server::http(&a)
                .map_err(|e| anyhow::anyhow!("listening on {a} (metrics.addr): {e}"))?,
        )
    };
    let grace = std::time::Duration::from_secs(cfg.http.shutdown_grace_seconds);
    let f = Arc::new(
        factory::service::Factory::new(cfg, store, fetch, work).map_err(anyhow::Error::msg)?,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .context("installing signal handlers")?;
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            if let Some(sig) = signals.forever().next() {
                log::info("shutting down", &[("signal", &sig.to_string())]);
                stop.store(true, Ordering::SeqCst);
            }
        });
    }
    let metrics_thread = metrics_server.map(|m| {
        let (f, stop) = (f.clone(), stop.clone());
        std::thread::spawn(move || factory::http::serve_metrics(f, m, stop))
    });
    let bound = server
        .server_addr()
        .to_ip()
        .map(|a| a.to_string())
        .unwrap_or(addr);
    log::info("listening", &[("addr", &bound)]);
    factory::http::serve(f.clone(), server, metrics_thread.is_none(), stop, grace);
    if let Some(t) = metrics_thread {
        let _ = t.join();
    }
    let left = f.metrics.in_flight.load(Ordering::SeqCst);
    log::info("stopped", &[("requests_cut", &left.to_string())]);
    Ok(())
}
