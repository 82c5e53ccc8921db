//! Where a node in maintenance mode takes its machine configuration from (docs/formats/
//! machine-config.md, "Sources"): Talos's order — the embedded configuration, then
//! `talos.config.early`, then `talos.config=URL`, then `talos.config.inline` when there is no
//! URL or the URL gave an incomplete configuration — with the maintenance API open all along. A configuration without a v1alpha1
//! document (a `TrustedRootsConfig` alone) is taken and kept active while the node goes on
//! waiting; its certificate authorities are trusted by the HTTPS download of `talos.config`.
//! The HTTPS server is `openssl s_server -WWW` with a certificate of a throwaway CA, so the
//! node's TLS client is checked against an implementation that is not ours. Every boot is a
//! direct kernel boot of the PXE set with its own command line.
#![allow(clippy::unwrap_used)]

use e2e::node::{apply_config, wait};
use e2e::registry::{free_port, test_ca};
use e2e::*;
use qemu_harness::{DiskKind, Firmware, Machine, user_nic};
use std::path::Path;
use std::process::{Child, Command, Stdio};

const UUID: &str = "3f1c7a52-9d0e-4b7a-8c61-52d2e0a4f7b9";

/// `openssl s_server -WWW` serving `dir` on 127.0.0.1:`port`; killed on drop.
struct Www(Child);

impl Www {
    fn start(dir: &Path, port: u16, cert: &Path, key: &Path) -> Www {
        let mut child = Command::new("openssl")
            .current_dir(dir)
            .args(["s_server", "-quiet", "-WWW", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(cert)
            .arg("-key")
            .arg(key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Www(child);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("openssl s_server did not listen on {port}");
    }
}

impl Drop for Www {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Talos's encoding of `talos.config.early` and `talos.config.inline`: base64 (standard,
/// padded) of zstd-compressed YAML.
fn cmdline_value(yaml: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(zstd::encode_all(yaml.as_bytes(), 19).unwrap())
}

fn trusted_roots(name: &str, pem: &str) -> String {
    format!(
        "apiVersion: v1alpha1\nkind: TrustedRootsConfig\nname: {name}\ncertificates: |\n{}",
        pem.lines().map(|l| format!("  {l}\n")).collect::<String>()
    )
}

#[test]
fn config_sources_in_talos_order_and_https_trusting_trusted_roots_config() {
    let t = tempfile::tempdir().unwrap();
    let ca = test_ca();
    let ca_pem = std::fs::read_to_string(&ca.ca_pem).unwrap();
    let roots = trusted_roots("lab-ca", &ca_pem);
    // the configuration the HTTPS server gives, at the machine's UUID
    let www = t.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(
        www.join(UUID),
        "version: v1alpha1\nmachine:\n  network:\n    hostname: from-https\ncluster: {}\n",
    )
    .unwrap();
    std::fs::write(www.join("incomplete"), trusted_roots("from-url", &ca_pem)).unwrap();
    let port = free_port();
    let _www = Www::start(&www, port, &ca.cert_pem, &ca.key_pem);
    let url = format!("talos.config=https://10.0.2.2:{port}/${{uuid}}");
    let pxe = t.path().join("pxe");
    ok(imager()
        .args(["metal", "--output-kind", "pxe", "--output"])
        .arg(&pxe)
        .args(["--extra-kernel-arg", "console=ttyS0"]));
    let base = std::fs::read_to_string(pxe.join("cmdline-metal-amd64")).unwrap();
    let api = free_port();
    let boot = |args: &[&str], cd: Option<&Path>| {
        let cmdline = format!("{} {}", base.trim(), args.join(" "));
        // the kernel would cut a longer one (COMMAND_LINE_SIZE 2048 with its NUL)
        assert!(cmdline.len() <= 2047, "{} bytes: {cmdline}", cmdline.len());
        let mut extra = user_nic("n0", &format!(",hostfwd=tcp:127.0.0.1:{api}-:50000"));
        extra.extend(["-uuid".to_string(), UUID.to_string()]);
        Machine {
            firmware: Firmware::Bios,
            direct: Some((
                pxe.join("kernel-amd64"),
                pxe.join("initramfs-amd64.xz"),
                cmdline,
            )),
            extra,
            disks: cd
                .map(|c| vec![(c.to_path_buf(), DiskKind::Cdrom)])
                .unwrap_or_default(),
            memory_mib: 1024,
            ..Default::default()
        }
        .start()
        .unwrap()
    };
    let lines = |run: &qemu_harness::Run, needle: &str| -> Vec<String> {
        run.console()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    };

    // 1. the URL (and a talos.config.early that does not decode: one error line): the
    //    server's CA is unknown, every attempt fails; a TrustedRootsConfig
    //    applied through the maintenance API is an incomplete configuration the node takes
    //    (and stays in maintenance), and the next attempt trusts its CA
    let mut run = boot(&["talos.config.early=%%%", &url], None);
    let bad = wait(&mut run, "node-runtime: config source=early error=", 300);
    assert!(bad.contains("talos.config.early: not base64"), "{bad}");
    let failed = wait(&mut run, "node-runtime: config-fetch url=", 300);
    let failed = if failed.contains(" error=") && !failed.contains("UnknownIssuer") {
        // attempts before the network was up fail earlier; the first to reach the server
        wait(&mut run, "UnknownIssuer", 120)
    } else {
        failed
    };
    assert!(failed.contains("UnknownIssuer"), "{failed}");
    assert!(failed.contains(UUID), "${{uuid}} substituted: {failed}");
    wait(&mut run, "node-runtime: maintenance api listening", 300);
    let file = t.path().join("roots.yaml");
    std::fs::write(&file, &roots).unwrap();
    let o = apply_config(api, &file);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("incomplete"), "{out}");
    let api_line = wait(&mut run, "node-runtime: config source=\"api\"", 60);
    assert!(
        api_line.ends_with("complete=false trusted-roots=1"),
        "{api_line}"
    );
    wait(
        &mut run,
        "maintenance waiting for a complete machine configuration",
        60,
    );
    let taken = wait(&mut run, "node-runtime: config source=\"url https://", 120);
    let fetches = lines(&run, "node-runtime: config-fetch url=\"https://10.0.2.2:");
    assert!(fetches.last().unwrap().contains(" bytes="), "{fetches:#?}");
    // the downloaded configuration replaces the API's: complete, no extra CA of its own
    assert!(taken.ends_with("complete=true trusted-roots=0"), "{taken}");
    wait(
        &mut run,
        "install error=\"machine.install.image is not set\"",
        60,
    );
    drop(run);

    // 2. the same CA given by talos.config.early: taken first, so the download trusts it
    //    from the first attempt; talos.config.inline is not read while there is a URL
    let inline = cmdline_value("version: v1alpha1\nmachine: {}\n");
    let early = format!("talos.config.early={}", cmdline_value(&roots));
    let mut run = boot(
        &[&early, &url, &format!("talos.config.inline={inline}")],
        None,
    );
    let early_line = wait(&mut run, "node-runtime: config source=\"early\"", 300);
    assert!(
        early_line.ends_with("complete=false trusted-roots=1"),
        "{early_line}"
    );
    wait(&mut run, "node-runtime: config source=\"url https://", 300);
    let fetches = lines(&run, "node-runtime: config-fetch");
    assert!(fetches.last().unwrap().contains(" bytes="), "{fetches:#?}");
    assert!(
        fetches.iter().all(|l| !l.contains("UnknownIssuer")),
        "{fetches:#?}"
    );
    // neither taken nor tried
    assert!(lines(&run, "config source=\"inline\"").is_empty());
    assert!(lines(&run, "config source=inline").is_empty());
    drop(run);

    // 3. the URL gives an incomplete configuration (a TrustedRootsConfig of its own): Talos
    //    goes on to talos.config.inline, here split over two occurrences, joined in order
    let full = cmdline_value(&format!(
        "version: v1alpha1\nmachine:\n  network:\n    hostname: from-inline\n---\n{roots}"
    ));
    let (a, b) = full.split_at(full.len() / 2);
    let incomplete = format!("talos.config=https://10.0.2.2:{port}/incomplete");
    let mut run = boot(
        &[
            &early,
            &incomplete,
            &format!("talos.config.inline={a}"),
            &format!("talos.config.inline={b}"),
        ],
        None,
    );
    let from_url = wait(&mut run, "node-runtime: config source=\"url https://", 300);
    assert!(
        from_url.contains("/incomplete\"") && from_url.ends_with("complete=false trusted-roots=1"),
        "{from_url}"
    );
    let inline_line = wait(&mut run, "node-runtime: config source=\"inline\"", 120);
    assert!(
        inline_line.ends_with("complete=true trusted-roots=1"),
        "{inline_line}"
    );
    wait(
        &mut run,
        "install error=\"machine.install.image is not set\"",
        60,
    );
    let order: Vec<&str> = [
        "source=\"early\"",
        "source=\"url https://",
        "source=\"inline\"",
    ]
    .into_iter()
    .filter(|n| !lines(&run, n).is_empty())
    .collect();
    assert_eq!(order.len(), 3, "{}", run.console().join("\n"));
    let at = |n: &str| run.console().iter().position(|l| l.contains(n)).unwrap();
    assert!(at("source=\"early\"") < at("source=\"url https://"));
    assert!(at("source=\"url https://") < at("source=\"inline\""));
    drop(run);

    // 4. no URL: talos.config.inline is read at once
    let mut run = boot(&[&format!("talos.config.inline={full}")], None);
    let inline_line = wait(&mut run, "node-runtime: config source=\"inline\"", 300);
    assert!(
        inline_line.ends_with("complete=true trusted-roots=1"),
        "{inline_line}"
    );
    assert!(lines(&run, "config-fetch").is_empty());
    drop(run);

    // 5. talos.config=metal-iso: config.yaml of a CD labelled metal-iso, made by xorriso as
    //    Talos's documentation makes it with mkisofs (Rock Ridge and Joliet names)
    let cfg_dir = t.path().join("metal-iso");
    std::fs::create_dir(&cfg_dir).unwrap();
    std::fs::write(
        cfg_dir.join("config.yaml"),
        "version: v1alpha1\nmachine:\n  network:\n    hostname: from-metal-iso\n",
    )
    .unwrap();
    let cfg_iso = t.path().join("config.iso");
    ok(Command::new("xorriso")
        .args([
            "-as",
            "mkisofs",
            "-joliet",
            "-rock",
            "-volid",
            "metal-iso",
            "-o",
        ])
        .arg(&cfg_iso)
        .arg(&cfg_dir));
    let mut run = boot(&["talos.config=metal-iso"], Some(&cfg_iso));
    let fetched = wait(
        &mut run,
        "node-runtime: config-fetch source=metal-iso device=",
        300,
    );
    assert!(fetched.contains("device=/dev/sr0"), "{fetched}");
    let taken = wait(
        &mut run,
        "node-runtime: config source=\"metal-iso /dev/sr0\"",
        60,
    );
    assert!(taken.ends_with("complete=true trusted-roots=0"), "{taken}");
    drop(run);
}
