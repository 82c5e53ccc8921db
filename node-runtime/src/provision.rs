//! Maintenance mode and the install (docs/formats/install.md, "From the node").
//!
//! A node booted without an installation (an ISO, PXE, a fresh image) waits for a machine
//! configuration ([`crate::config`]) from whichever source gives one first: the maintenance
//! API ([`crate::api`]), `talos.config=URL` on the kernel command line (HTTP or HTTPS;
//! `${uuid}`, `${serial}`, `${mac}`, `${hostname}` and `${code}` substituted as Talos does;
//! retried with backoff, one console line per attempt; HTTPS trusts the active configuration's
//! `TrustedRootsConfig`), `talos.config.early` / `talos.config.inline` (base64 of zstd YAML),
//! or the `embedded-config` extension (docs/formats/machine-config.md, "Sources"). A
//! configuration that names a disk is installed: the installer image of
//! `machine.install.image` is pulled through `machine.registries`' mirrors (every blob
//! digest-checked), its layers are unpacked into `/system/installer`, and its
//! `/usr/bin/installer install` runs in a private mount namespace against the disk; the
//! configuration is stored in STATE (`config.yaml`), and the node reboots.
//!
//! In: the kernel cmdline, META 0x0b (`${code}`), the network. Out: console lines
//! `maintenance …`, `config-fetch …`, `config …`, `install …`, then a reboot.

use crate::cmdline::Cmdline;
use crate::config::{self, MachineConfig, glob};
use crate::console::say;
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the installer image is unpacked (tmpfs).
const INSTALLER_ROOT: &str = "/system/installer";
/// The blob cache of pulls (tmpfs).
const OCI_CACHE: &str = "/system/oci-cache";
/// Bound on one layer's unpacked size.
const MAX_UNPACKED: u64 = 2 << 30;

/// Where the `embedded-config` extension puts the configuration (docs/formats/extensions.md).
const EMBEDDED: &str = "/usr/local/etc/talos/config.yaml";

/// Maintenance mode: takes configurations from the embedded one, `talos.config.early`, then
/// `talos.config=URL` (or `talos.config.inline` without a URL) in Talos's order, and from the
/// API ([`crate::api`]) all along; the last one taken is the active one. The first complete
/// configuration is installed and the node reboots; an incomplete one (no v1alpha1 document)
/// stays active while the node waits. A failed install is reported and the node goes on
/// waiting.
pub fn run(cmd: &Cmdline, meta: &crate::meta::Values, version: &str) {
    let (tx, rx) = std::sync::mpsc::channel::<crate::api::Incoming>();
    say("maintenance waiting for a machine configuration");
    let state = std::sync::Arc::new(crate::api::State {
        config: None,
        version: version.to_string(),
        meta: meta.clone(),
        tx: Some(tx.clone()),
        ca: None,
        disk: None,
    });
    // in its own thread: its key needs the kernel's random pool, which may still be filling
    std::thread::spawn(move || {
        if let Err(e) = crate::api::serve(state) {
            say(&format!("maintenance api error={:?}", format!("{e:#}")));
        }
    });
    // the active configuration's extra CAs (`TrustedRootsConfig`): the URL download trusts
    // them, from the next attempt on, whenever the active configuration changes
    let roots: Roots = Default::default();
    // Talos's order: the embedded configuration, then `talos.config.early`, then the URL, or
    // `talos.config.inline` when there is no URL; a complete configuration ends the search
    let mut local = Vec::new();
    if let Ok(text) = std::fs::read_to_string(EMBEDDED) {
        local.push(("embedded", config::parse(&text)));
    }
    if let Some(r) = cmdline_config(cmd, "talos.config.early") {
        local.push(("early", r));
    }
    let mut complete = false;
    for (source, r) in local {
        if let Ok(c) = &r {
            set_roots(&roots, c);
        }
        complete |= offer(&tx, source, r);
        if complete {
            break;
        }
    }
    // Talos reads the first occurrence
    let url = cmd
        .get_all("talos.config")
        .next()
        .filter(|u| !u.is_empty() && *u != "none");
    match url {
        _ if complete => {}
        Some(url) => {
            let template = url.to_string();
            let meta = meta.clone();
            let tx = tx.clone();
            let roots = roots.clone();
            let cmd = cmd.clone();
            std::thread::spawn(move || {
                // a configuration that does not parse is fetched again (it may be fixed)
                loop {
                    let (source, text) = if template == crate::metaliso::LABEL {
                        fetch_metal_iso()
                    } else {
                        let (url, text) = fetch_config(&template, &meta, &roots);
                        (format!("url {url}"), text)
                    };
                    match config::parse(&text) {
                        Ok(c) => {
                            // an incomplete one: Talos goes on to talos.config.inline
                            if !offer(&tx, &source, Ok(c))
                                && let Some(r) = cmdline_config(&cmd, "talos.config.inline")
                            {
                                offer(&tx, "inline", r);
                            }
                            return;
                        }
                        Err(e) => say(&format!("config source={source:?} error={e:?}")),
                    }
                    std::thread::sleep(Duration::from_secs(30));
                }
            });
        }
        None => {
            if let Some(r) = cmdline_config(cmd, "talos.config.inline") {
                offer(&tx, "inline", r);
            }
        }
    }
    drop(tx);
    while let Ok(inc) = rx.recv() {
        let cfg = inc.config;
        // the last configuration taken is the active one: Talos replaces, never merges (the
        // local sources set theirs when they were read, before the download started)
        if !matches!(inc.source.as_str(), "embedded" | "early") {
            set_roots(&roots, &cfg);
        }
        say(&format!(
            "config source={:?} install-disk={} install-image={} complete={} trusted-roots={}",
            inc.source,
            if cfg.install.disk.is_empty() {
                "none"
            } else {
                &cfg.install.disk
            },
            if cfg.install.image.is_empty() {
                "none"
            } else {
                &cfg.install.image
            },
            cfg.complete,
            cfg.trusted_roots.iter().map(|r| r.count).sum::<usize>(),
        ));
        for s in &cfg.not_applied {
            say(&format!("config not-applied={s}"));
        }
        if !cfg.complete {
            say("maintenance waiting for a complete machine configuration (a v1alpha1 document)");
            continue;
        }
        if let Err(e) = install(cmd, &cfg, meta) {
            say(&format!("install error={:?}", format!("{e:#}")));
            say("maintenance waiting for a machine configuration");
        }
    }
}

/// Hands a configuration read from `source` to the maintenance loop, or reports why it could
/// not be read; whether it was a complete one.
fn offer(
    tx: &std::sync::mpsc::Sender<crate::api::Incoming>,
    source: &str,
    r: Result<MachineConfig, String>,
) -> bool {
    match r {
        Ok(c) => {
            let complete = c.complete;
            let _ = tx.send(crate::api::Incoming {
                source: source.into(),
                config: c,
            });
            complete
        }
        Err(e) => {
            say(&format!("config source={source} error={e:?}"));
            false
        }
    }
}

/// The CAs the configuration download trusts besides Mozilla's roots (PEM).
type Roots = std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>;

fn set_roots(roots: &Roots, cfg: &MachineConfig) {
    if let Ok(mut r) = roots.lock() {
        *r = cfg.extra_cas();
    }
}

/// Whether block device `name` is a loop, RAM, zram, device-mapper or md device (or a
/// partition of one): never an install disk nor a configuration volume.
pub(crate) fn is_virtual_block(name: &str) -> bool {
    ["loop", "ram", "zram", "dm-", "md"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// Talos's `talos.config.early` and `talos.config.inline`: the values of every occurrence of
/// `key`, joined, are base64 (standard alphabet, padded) of zstd-compressed YAML. `None` when
/// the key is absent.
fn cmdline_config(cmd: &Cmdline, key: &str) -> Option<Result<MachineConfig, String>> {
    cmd.get(key)?;
    let joined: String = cmd.get_all(key).collect();
    Some(
        decode_cmdline_config(&joined)
            .map_err(|e| format!("{key}: {e}"))
            .and_then(|t| config::parse(&t)),
    )
}

/// base64 → zstd → UTF-8, bounded by [`config::MAX_CONFIG`].
pub(crate) fn decode_cmdline_config(b64: &str) -> Result<String, String> {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| format!("not base64: {e}"))?;
    let mut out = Vec::new();
    let mut d =
        zstd::stream::read::Decoder::with_buffer(&raw[..]).map_err(|e| format!("not zstd: {e}"))?;
    // a window of 8 MiB at most (what zstd's levels up to 19 use on a stream of unknown
    // size): a frame header alone could otherwise ask for 128 MiB
    d.window_log_max(23).map_err(|e| format!("zstd: {e}"))?;
    d.take(config::MAX_CONFIG as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("not zstd: {e}"))?;
    if out.len() > config::MAX_CONFIG {
        return Err(format!("more than {} bytes", config::MAX_CONFIG));
    }
    String::from_utf8(out).map_err(|_| "not UTF-8".to_string())
}

/// Talos's variables of `talos.config` URLs.
const VARIABLES: [&str; 5] = ["uuid", "serial", "mac", "hostname", "code"];

/// The variables' values, read now.
fn read_vars(meta: &crate::meta::Values) -> BTreeMap<&'static str, String> {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let code = meta
        .get(&0x0b)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default();
    BTreeMap::from([
        ("uuid", read("/sys/class/dmi/id/product_uuid")),
        ("serial", read("/sys/class/dmi/id/product_serial")),
        ("mac", first_mac()),
        ("hostname", hostname),
        ("code", code),
    ])
}

/// `template` with every `${name}` of Talos's variables (names case-insensitive) replaced by
/// its value, [`escape`]d, anywhere in the URL (Talos substitutes in query values only; the
/// path is this project's addition), and Talos's legacy empty `uuid` query parameter filled
/// with the UUID; and the variables used whose value is empty: Talos does not request the URL
/// until they have one. Other `${…}` are left as written.
fn substitute(
    template: &str,
    vars: &BTreeMap<&'static str, String>,
) -> (String, Vec<&'static str>) {
    let mut missing: Vec<&'static str> = Vec::new();
    let mut value = |name: &'static str| {
        let v = vars.get(name).map(String::as_str).unwrap_or("");
        if v.is_empty() && !missing.contains(&name) {
            missing.push(name);
        }
        escape(v)
    };
    let mut out = String::new();
    let mut rest = template;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let known = after.find('}').and_then(|end| {
            let name = after[..end].to_ascii_lowercase();
            VARIABLES.iter().find(|v| **v == name).map(|v| (*v, end))
        });
        match known {
            Some((name, end)) => {
                out.push_str(&value(name));
                rest = &after[end + 1..];
            }
            None => {
                out.push_str("${");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    // the legacy form: `?uuid=` (or a bare `uuid`) with no value
    if let Some((base, query)) = out.split_once('?') {
        let (query, fragment) = match query.split_once('#') {
            Some((q, f)) => (q, Some(f)),
            None => (query, None),
        };
        if query.split('&').any(|p| p == "uuid" || p == "uuid=") {
            let params: Vec<String> = query
                .split('&')
                .map(|p| {
                    if p == "uuid" || p == "uuid=" {
                        format!("uuid={}", value("uuid"))
                    } else {
                        p.to_string()
                    }
                })
                .collect();
            out = format!(
                "{base}?{}{}",
                params.join("&"),
                fragment.map(|f| format!("#{f}")).unwrap_or_default()
            );
        }
    }
    (out, missing)
}

/// A substituted value percent-encoded but for unreserved characters and `:` (MAC addresses),
/// so that a value (META 0x0b is the operator's text) cannot add a path segment, a query
/// parameter or a fragment to the URL.
fn escape(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The MAC address of the first physical link (one with a device behind it: not `lo`, nor
/// the `bond0` or `dummy0` the kernel's modules create with random addresses), by name.
fn first_mac() -> String {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| crate::net::is_physical(n))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
        .first()
        .and_then(|n| std::fs::read_to_string(format!("/sys/class/net/{n}/address")).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `talos.config=metal-iso`: `config.yaml` of the volume labelled `metal-iso`, looked for
/// again with backoff (1 s doubling to 30 s) until it is there (a CD may be probed late);
/// the source (`metal-iso <device>`) and the text.
fn fetch_metal_iso() -> (String, String) {
    with_backoff(|attempt, delay| match crate::metaliso::read_config() {
        Ok((dev, text)) => {
            say(&format!(
                "config-fetch source=metal-iso device={dev} attempt={attempt} bytes={}",
                text.len()
            ));
            Some((format!("metal-iso {dev}"), text))
        }
        Err(e) => {
            say(&format!(
                "config-fetch source=metal-iso attempt={attempt} error={:?} retry_in={}s",
                format!("{e:#}"),
                delay.as_secs()
            ));
            None
        }
    })
}

/// Calls `attempt(n, delay)` for n = 1, 2, … until it gives a value, sleeping `delay` between
/// calls: 1 s, doubling up to 30 s.
fn with_backoff<T>(mut attempt: impl FnMut(u32, Duration) -> Option<T>) -> T {
    let mut delay = Duration::from_secs(1);
    for n in 1.. {
        if let Some(v) = attempt(n, delay) {
            return v;
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_secs(30));
    }
    unreachable!("the retry loop only ends by returning")
}

/// Fetches the configuration, retrying with backoff (1 s doubling to 30 s) until it comes;
/// the URL it came from (the variables are substituted for every attempt, as Talos does, so
/// that `${hostname}` and `${mac}` see the network once it is up; an attempt with a variable
/// still empty is not sent) and the text. HTTPS trusts Mozilla's roots and the active
/// configuration's `TrustedRootsConfig`, read again for every attempt.
fn fetch_config(template: &str, meta: &crate::meta::Values, roots: &Roots) -> (String, String) {
    with_backoff(|attempt, delay| {
        let (url, missing) = substitute(template, &read_vars(meta));
        if !missing.is_empty() {
            say(&format!(
                "config-fetch url={template:?} attempt={attempt} waiting={} retry_in={}s",
                missing.join(","),
                delay.as_secs()
            ));
            return None;
        }
        let cas = roots.lock().map(|r| r.clone()).unwrap_or_default();
        let r = oci::client::tls_config(&cas, false)
            .map_err(|e| e.to_string())
            .and_then(|tls| {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .timeout_global(Some(Duration::from_secs(30)))
                    .tls_config(tls)
                    .build()
                    .into();
                agent.get(&url).call().map_err(|e| e.to_string())
            })
            .and_then(|resp| {
                let mut body = String::new();
                resp.into_body()
                    .into_reader()
                    .take(config::MAX_CONFIG as u64 + 1)
                    .read_to_string(&mut body)
                    .map_err(|e| e.to_string())?;
                Ok(body)
            });
        match r {
            Ok(body) => {
                say(&format!(
                    "config-fetch url={url:?} attempt={attempt} bytes={}",
                    body.len()
                ));
                Some((url, body))
            }
            Err(e) => {
                say(&format!(
                    "config-fetch url={url:?} attempt={attempt} error={e:?} retry_in={}s",
                    delay.as_secs()
                ));
                None
            }
        }
    })
}

pub(crate) fn arch() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    }
}

/// Pulls and unpacks `image` into [`INSTALLER_ROOT`]; returns the root.
pub(crate) fn pull_installer(image: &str, cfg: &MachineConfig) -> Result<PathBuf> {
    let r =
        oci::Reference::parse(image).with_context(|| format!("machine.install.image {image:?}"))?;
    let cache = oci::cache::Cache::open(Path::new(OCI_CACHE)).context("the blob cache")?;
    let opts = oci::ClientOptions {
        registries: cfg.registries.clone(),
        extra_ca: cfg.extra_cas(),
        // machine.env's proxies, as Talos's pulls take them from PID 1's environment
        proxy: oci::proxy::Proxies::from_vars(|k| cfg.env.get(k).cloned()),
        ..Default::default()
    };
    let client = oci::Client::new(opts, cache).context("the registry client")?;
    let top = client
        .resolve(&r, false)
        .with_context(|| format!("pulling {r}"))?;
    verify_installer(&client, &r, &top.digest, cfg)?;
    let img = client
        .pull_resolved(&r, top, arch(), false)
        .with_context(|| format!("pulling {r}"))?;
    say(&format!(
        "install pulled={r} digest={} layers={}",
        img.manifest_digest,
        img.manifest.layers.len()
    ));
    let root = PathBuf::from(INSTALLER_ROOT);
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;
    for l in &img.manifest.layers {
        let path = img
            .blobs
            .get(&l.digest)
            .with_context(|| format!("layer {} not pulled", l.digest))?;
        let f = std::fs::File::open(path)?;
        let gz = flate2::read::GzDecoder::new(f).take(MAX_UNPACKED);
        let mut a = tar::Archive::new(gz);
        a.set_preserve_permissions(true);
        a.set_overwrite(true);
        // entries that climb out of the root are skipped by `unpack` (tar's own check)
        a.unpack(&root)
            .with_context(|| format!("unpacking layer {}", l.digest))?;
    }
    Ok(root)
}

/// Checks the installer image's signature under the configuration's `ImageVerificationConfig`
/// (docs/formats/machine-config.md): no matching rule pulls unverified, as Talos does; `deny`
/// refuses; `skip` pulls unverified; otherwise a cosign signature of `digest` must verify.
fn verify_installer(
    client: &oci::Client,
    r: &oci::Reference,
    digest: &oci::Digest,
    cfg: &MachineConfig,
) -> Result<()> {
    let repo = r.name();
    let Some(rule) = cfg.image_rule(&repo) else {
        say(&format!("install verify={repo} result=no-rule"));
        return Ok(());
    };
    if rule.deny {
        bail!("{r}: denied by image verification rule {:?}", rule.image);
    }
    let verifier = match rule.verifier() {
        Ok(Some(v)) => v,
        Ok(None) => {
            say(&format!(
                "install verify={repo} result=skipped rule={:?}",
                rule.image
            ));
            return Ok(());
        }
        Err(e) => bail!("image verification rule {:?}: {e}", rule.image),
    };
    let layers: Vec<cosign::SignatureLayer> = client
        .signatures(r, digest, false)
        .with_context(|| format!("fetching the signatures of {r}"))?
        .into_iter()
        .map(|s| cosign::SignatureLayer {
            payload: s.payload,
            annotations: s.annotations,
        })
        .collect();
    let verified =
        cosign::verify_image_then_referrers(&verifier, &repo, digest.as_str(), &layers, || {
            client.referrer_bundles(r, digest, false)
        })
        .with_context(|| format!("fetching the referrers of {r}"))?
        .map_err(|e| {
            anyhow::anyhow!(
                "{r}@{digest}: signature verification failed under rule {:?}: {e}",
                rule.image
            )
        })?;
    say(&format!(
        "install verify={repo} result=verified digest={digest} rule={:?} by={:?}",
        rule.image, verified.description
    ));
    Ok(())
}

/// The disk to install to: `machine.install.disk`, which must exist, else the only disk
/// `machine.install.diskSelector` matches.
fn install_disk(cfg: &MachineConfig) -> Result<String> {
    let d = &cfg.install.disk;
    if !d.is_empty() {
        if !Path::new(d).exists() {
            bail!("machine.install.disk {d}: no such disk");
        }
        return Ok(d.clone());
    }
    let Some(sel) = &cfg.install.disk_selector else {
        bail!("neither machine.install.disk nor machine.install.diskSelector is set");
    };
    let mut names: Vec<String> = std::fs::read_dir("/sys/block")?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("sr") && !is_virtual_block(n))
        .collect();
    names.sort();
    let mut matched = Vec::new();
    for n in names {
        let disk = SysDisk::read(&n);
        match selector_matches(sel, &disk) {
            Ok(true) => matched.push(format!("/dev/{n}")),
            Ok(false) => {}
            Err(e) => bail!("machine.install.diskSelector: {e}"),
        }
    }
    say(&format!(
        "install disk-selector matched={}",
        if matched.is_empty() {
            "none".to_string()
        } else {
            matched.join(",")
        }
    ));
    match matched.len() {
        1 => Ok(matched.remove(0)),
        0 => bail!("machine.install.diskSelector matches no disk"),
        _ => bail!(
            "machine.install.diskSelector matches {} disks; it must choose one",
            matched.len()
        ),
    }
}

/// What sysfs says about one disk.
#[derive(Debug, Default)]
struct SysDisk {
    size: u64,
    model: String,
    serial: String,
    kind: String,
    bus_path: String,
}

impl SysDisk {
    fn read(name: &str) -> Self {
        let base = Path::new("/sys/block").join(name);
        let text = |p: &str| {
            std::fs::read_to_string(base.join(p))
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let serial = match text("device/serial") {
            s if s.is_empty() => text("serial"),
            s => s,
        };
        let kind = if name.starts_with("nvme") {
            "nvme"
        } else if name.starts_with("mmcblk") {
            "sd"
        } else if text("queue/rotational") == "1" {
            "hdd"
        } else {
            "ssd"
        };
        // the device's path under /sys/devices, without the block part
        let bus_path = std::fs::canonicalize(base.join("device"))
            .map(|p| {
                p.to_string_lossy()
                    .trim_start_matches("/sys/devices")
                    .to_string()
            })
            .unwrap_or_default();
        SysDisk {
            size: text("size").parse::<u64>().unwrap_or(0) * 512,
            model: text("device/model"),
            serial,
            kind: kind.into(),
            bus_path,
        }
    }
}

/// A size as Talos writes it: bytes, or a number with `kB`/`MB`/`GB`/`TB` (powers of 1000)
/// or `KiB`/`MiB`/`GiB`/`TiB` (powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("size {s:?}: not a number"))?;
    let mult: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        u => return Err(format!("size {s:?}: unknown unit {u:?}")),
    };
    let v = n * mult;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
        return Err(format!("size {s:?}: out of range"));
    }
    Ok(v as u64)
}

/// Talos's matching: every given field must match; `size` is exact or `>=`/`<=` a size,
/// `model` and `serial` are globs (`*`), `busPath` a glob on the sysfs device path.
fn selector_matches(sel: &config::DiskSelector, d: &SysDisk) -> Result<bool, String> {
    if let Some(size) = &sel.size {
        let t = size.trim();
        let ok = if let Some(v) = t.strip_prefix(">=") {
            d.size >= parse_size(v)?
        } else if let Some(v) = t.strip_prefix("<=") {
            d.size <= parse_size(v)?
        } else {
            d.size == parse_size(t)?
        };
        if !ok {
            return Ok(false);
        }
    }
    for (want, have) in [
        (&sel.model, &d.model),
        (&sel.serial, &d.serial),
        (&sel.bus_path, &d.bus_path),
    ] {
        if let Some(w) = want
            && !glob(w, have)
        {
            return Ok(false);
        }
    }
    if let Some(k) = &sel.kind
        && !k.eq_ignore_ascii_case(&d.kind)
    {
        return Ok(false);
    }
    Ok(true)
}

/// Installs `cfg` and reboots; the node's META values (those it booted with, the cmdline's
/// included) go to the installed disk's META, as Talos's installer carries them over.
fn install(cmd: &Cmdline, cfg: &MachineConfig, meta: &crate::meta::Values) -> Result<()> {
    if cfg.install.image.is_empty() {
        bail!("machine.install.image is not set");
    }
    let disk = install_disk(cfg)?;
    let root = pull_installer(&cfg.install.image, cfg)?;
    let mut extra = Vec::new();
    if cfg.install.wipe {
        extra.push("--zero".into());
    }
    // a UKI's command line is fixed when it is built: Talos ignores the extra arguments then
    if root
        .join("usr/install")
        .join(arch())
        .join("vmlinuz.efi")
        .exists()
    {
        if !cfg.install.extra_kernel_args.is_empty() {
            say("install extra-kernel-args=ignored reason=uki");
        }
    } else {
        for a in &cfg.install.extra_kernel_args {
            extra.push("--extra-kernel-arg".into());
            extra.push(a.clone());
        }
    }
    let mut env = Vec::new();
    if !meta.is_empty() {
        let pairs: Vec<(u8, String)> = meta
            .iter()
            .map(|(k, v)| (*k, String::from_utf8_lossy(v).into_owned()))
            .collect();
        env.push((adv::env::VAR.into(), adv::env::encode(&pairs, true)));
    }
    let pause = cfg.env.get(adv::env::TEST_PAUSE).is_some_and(|v| v == "1");
    say(&format!("install disk={disk} image={}", cfg.install.image));
    run_installer(&root, &disk, cmd, cfg, &extra, env, pause)?;
    store_config(&disk, cfg)?;
    let _ = std::fs::remove_dir_all(&root);
    say(&format!("install done disk={disk} reboot=true"));
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
    Ok(())
}

/// Runs the unpacked installer image's `/usr/bin/installer install --disk <disk> --platform
/// <talos.platform> --arch <arch> --install-dir <image>/usr/install <extra…>` in a private
/// mount namespace, with the configuration's `machine.env`, `env`, and `TMPDIR` inside the
/// image. The test hook `INSTALLER_TEST_PAUSE=1` is passed (`pause`) only when the kernel
/// command line has `node_runtime.test_install_pause`.
pub(crate) fn run_installer(
    root: &Path,
    disk: &str,
    cmd: &Cmdline,
    cfg: &MachineConfig,
    extra: &[String],
    mut env: Vec<(String, String)>,
    pause: bool,
) -> Result<()> {
    let bin = root.join("usr/bin/installer");
    if !bin.is_file() {
        bail!("the installer image has no /usr/bin/installer");
    }
    let tmp = root.join("tmp");
    std::fs::create_dir_all(&tmp)?;
    let mut args: Vec<String> = [
        "install",
        "--disk",
        disk,
        "--platform",
        cmd.get("talos.platform").unwrap_or("metal"),
        "--arch",
        arch(),
        "--install-dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(root.join("usr/install").to_string_lossy().into_owned());
    args.extend(extra.iter().cloned());
    env.extend(
        cfg.env
            .iter()
            .filter(|(k, _)| k.as_str() != adv::env::TEST_PAUSE)
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    if pause && cmd.flag("node_runtime.test_install_pause") {
        env.push((adv::env::TEST_PAUSE.into(), "1".into()));
    }
    env.push(("TMPDIR".into(), tmp.to_string_lossy().into_owned()));
    env.push(("PATH".into(), "/usr/bin:/bin".into()));
    let exit = crate::sys::run_in_mount_ns(&bin, &args, &env)?;
    if exit != crate::services::reaper::Exit::Code(0) {
        bail!("the installer ended with {exit:?}");
    }
    Ok(())
}

/// Writes the configuration into STATE's `config.yaml` (mode 0600).
fn store_config(disk: &str, cfg: &MachineConfig) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dev = crate::volumes::partition_of(disk, "STATE").context("the installed disk")?;
    // the kernel rereads the table the installer wrote once the device is closed
    for _ in 0..100 {
        if Path::new(&dev).exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mnt = "/system/install-state";
    crate::mounts::mount_fs(&dev, mnt, "ext4", nix::mount::MsFlags::MS_NOSUID, None)
        .with_context(|| format!("mounting STATE ({dev})"))?;
    let path = Path::new(mnt).join("config.yaml");
    let r = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut o| {
            o.write_all(cfg.text.as_bytes())?;
            o.sync_all()
        });
    // (the file is synced: a STATE left mounted is still consistent at the reboot)
    let _ = installer::ab::umount_settling(Path::new(mnt));
    r.with_context(|| format!("writing {}", path.display()))?;
    say(&format!("install config-stored device={dev}"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_configs_and_url_values() {
        use base64::Engine as _;
        let b64 = |yaml: &str| {
            base64::engine::general_purpose::STANDARD
                .encode(zstd::encode_all(yaml.as_bytes(), 3).unwrap())
        };
        let yaml = "version: v1alpha1\nmachine: {}\n";
        assert_eq!(decode_cmdline_config(&b64(yaml)).as_deref(), Ok(yaml));
        // split over occurrences, joined in order
        let v = b64(yaml);
        let (a, b) = v.split_at(7);
        let cmd = Cmdline::parse(&format!(
            "talos.config.inline={a} quiet talos.config.inline={b}"
        ));
        let c = cmdline_config(&cmd, "talos.config.inline")
            .unwrap()
            .unwrap();
        assert!(c.complete);
        assert!(cmdline_config(&cmd, "talos.config.early").is_none());
        // uncompressed YAML, URL-safe base64, garbage, a bomb past the bound
        let plain = base64::engine::general_purpose::STANDARD.encode(yaml);
        assert!(
            decode_cmdline_config(&plain)
                .unwrap_err()
                .contains("not zstd")
        );
        assert!(
            decode_cmdline_config("a_b-")
                .unwrap_err()
                .contains("not base64")
        );
        // zstd's level 19 on a stream (an 8 MiB window) decodes; a frame asking for 16 MiB does
        // not
        let l19 = base64::engine::general_purpose::STANDARD
            .encode(zstd::encode_all(yaml.as_bytes(), 19).unwrap());
        assert_eq!(decode_cmdline_config(&l19).as_deref(), Ok(yaml));
        let mut e = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
        e.window_log(24).unwrap();
        std::io::Write::write_all(&mut e, yaml.as_bytes()).unwrap();
        let wide = base64::engine::general_purpose::STANDARD.encode(e.finish().unwrap());
        assert!(
            decode_cmdline_config(&wide)
                .unwrap_err()
                .contains("too much memory")
        );
        let big = "#".repeat(config::MAX_CONFIG + 1);
        assert!(
            decode_cmdline_config(&b64(&big))
                .unwrap_err()
                .contains("more than")
        );
        assert_eq!(escape("52:54:00:12:34:56"), "52:54:00:12:34:56");
        let vars = BTreeMap::from([
            ("uuid", "u-1".to_string()),
            ("serial", String::new()),
            ("mac", "52:54:00:12:34:56".to_string()),
            ("hostname", "talos-123456".to_string()),
            ("code", "a b&c".to_string()),
        ]);
        assert_eq!(
            substitute(
                "http://h/${UUID}/x?mac=${Mac}&c=${code}&n=${nope}#${uuid}",
                &vars
            ),
            (
                "http://h/u-1/x?mac=52:54:00:12:34:56&c=a%20b%26c&n=${nope}#u-1".to_string(),
                vec![]
            )
        );
        assert_eq!(
            substitute("http://h/c?uuid=&s=${serial}&h=${hostname}", &vars),
            (
                "http://h/c?uuid=u-1&s=&h=talos-123456".to_string(),
                vec!["serial"]
            )
        );
        assert_eq!(substitute("http://h/${uuid", &vars).0, "http://h/${uuid");
        assert_eq!(escape("a/b?c=d&e#f g"), "a%2Fb%3Fc%3Dd%26e%23f%20g");
    }

    #[test]
    fn sizes_and_selectors() {
        assert_eq!(parse_size("8GB"), Ok(8_000_000_000));
        assert_eq!(parse_size("6GiB"), Ok(6 << 30));
        assert_eq!(parse_size(" 512 "), Ok(512));
        assert_eq!(parse_size("1.5 TB"), Ok(1_500_000_000_000));
        assert!(parse_size("8 parsecs").is_err());
        assert!(parse_size("").is_err());
        let d = SysDisk {
            size: 6 << 30,
            model: "QEMU HARDDISK".into(),
            serial: "abc123".into(),
            kind: "hdd".into(),
            bus_path: "/pci0000:00/0000:00:03.0/virtio1".into(),
        };
        let sel = |f: &dyn Fn(&mut config::DiskSelector)| {
            let mut s = config::DiskSelector::default();
            f(&mut s);
            selector_matches(&s, &d)
        };
        assert_eq!(sel(&|s| s.size = Some(">= 4GB".into())), Ok(true));
        assert_eq!(sel(&|s| s.size = Some("<= 4GB".into())), Ok(false));
        assert_eq!(sel(&|s| s.size = Some("6GiB".into())), Ok(true));
        assert_eq!(sel(&|s| s.model = Some("QEMU*".into())), Ok(true));
        assert_eq!(sel(&|s| s.serial = Some("abc*9".into())), Ok(false));
        assert_eq!(
            sel(&|s| s.bus_path = Some("/pci0000:00/*".into())),
            Ok(true)
        );
        assert_eq!(sel(&|s| s.kind = Some("ssd".into())), Ok(false));
        assert!(sel(&|s| s.size = Some(">= lots".into())).is_err());
        assert!(glob("*", "") && glob("a*c", "abc") && !glob("a*c", "abd") && glob("x", "x"));
    }
}
