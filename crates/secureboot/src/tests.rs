//! Authenticode signatures checked by an independent validator, sbsigntool's `sbverify`
//! (installed by hack/deps.sh), on Debian's systemd-boot: our signature verifies with our
//! certificate and not with another; signing is deterministic; the signer is named.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use std::path::Path;
use std::process::Command;

const SD_BOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";

fn run(cmd: &mut Command) -> std::process::Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (hack/deps.sh installs it)"))
}

/// A fresh RSA-2048 key (PKCS#8) and self-signed certificate from openssl.
fn key_and_cert(dir: &Path, cn: &str) -> (Vec<u8>, Vec<u8>) {
    let (k, c) = (dir.join(format!("{cn}.key")), dir.join(format!("{cn}.pem")));
    let o = run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
        ])
        .args(["-subj", &format!("/CN={cn}"), "-keyout"])
        .arg(&k)
        .arg("-out")
        .arg(&c));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (std::fs::read(k).unwrap(), std::fs::read(c).unwrap())
}

fn sbverify(image: &Path, cert: &Path) -> std::process::Output {
    run(Command::new("sbverify").arg("--cert").arg(cert).arg(image))
}

#[test]
fn sbverify_accepts_our_signature_and_refuses_another_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let image = std::fs::read(SD_BOOT).expect("Debian's systemd-boot (hack/deps.sh)");
    let (key, cert) = key_and_cert(dir.path(), "db-test");
    let signer = PemSigner::new(&key, "db-test.key", &cert, "db-test.pem").unwrap();
    let signed = sign_pe(image.clone(), &signer).unwrap();
    assert_eq!(
        signed,
        sign_pe(image.clone(), &signer).unwrap(),
        "deterministic"
    );
    let out = dir.path().join("signed.efi");
    std::fs::write(&out, &signed).unwrap();
    let o = sbverify(&out, &dir.path().join("db-test.pem"));
    assert!(
        o.status.success(),
        "sbverify refused our signature:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let (_, _) = key_and_cert(dir.path(), "other");
    let o = sbverify(&out, &dir.path().join("other.pem"));
    assert!(!o.status.success(), "sbverify accepted another certificate");

    // the signature names its signer; the image digest is unchanged by signing
    let pe = pe::Pe::parse(&signed).unwrap();
    let sigs = pe.signatures();
    assert_eq!(sigs.len(), 1);
    assert_eq!(
        authenticode::signer_subjects(sigs[0]).unwrap(),
        vec!["CN=db-test".to_string()]
    );
    let mut padded = image.clone();
    padded.resize(padded.len().div_ceil(8) * 8, 0);
    assert_eq!(
        pe.authenticode_sha256().unwrap(),
        pe::Pe::parse(&padded)
            .unwrap()
            .authenticode_sha256()
            .unwrap()
    );
    // signed once
    assert!(sign_pe(signed.clone(), &signer).is_err());
    // an unsigned image does not verify
    let plain = dir.path().join("plain.efi");
    std::fs::write(&plain, &image).unwrap();
    assert!(
        !sbverify(&plain, &dir.path().join("db-test.pem"))
            .status
            .success()
    );
}

#[test]
fn the_ovmf_snakeoil_key_signs_after_decryption() {
    let (key, cert) = (
        Path::new("/usr/share/ovmf/PkKek-1-snakeoil.key"),
        Path::new("/usr/share/ovmf/PkKek-1-snakeoil.pem"),
    );
    let encrypted = std::fs::read(key).expect("OVMF's snakeoil key (hack/deps.sh: ovmf)");
    let cert_pem = std::fs::read(cert).unwrap();
    let e = PemSigner::new(&encrypted, "snakeoil.key", &cert_pem, "snakeoil.pem").unwrap_err();
    assert!(e.to_string().contains("an encrypted key"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.key");
    let o = run(Command::new("openssl")
        .args(["pkcs8", "-passin", "pass:snakeoil", "-in"])
        .arg(key)
        .arg("-out")
        .arg(&plain));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let signer =
        PemSigner::new(&std::fs::read(&plain).unwrap(), "plain", &cert_pem, "cert").unwrap();
    let signed = sign_pe(std::fs::read(SD_BOOT).unwrap(), &signer).unwrap();
    let out = dir.path().join("signed.efi");
    std::fs::write(&out, signed).unwrap();
    let o = sbverify(&out, cert);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // a certificate that is not the key's is refused up front
    let (_, other) = key_and_cert(dir.path(), "other");
    let e = PemSigner::new(
        &std::fs::read(&plain).unwrap(),
        "plain",
        &other,
        "other.pem",
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("the certificate is not for the key plain"),
        "{e}"
    );
}

/// `systemd-measure VERB` with each section written to a file in `dir` and every bank.
fn systemd_measure(verb: &str, sections: &[(&str, Vec<u8>)], dir: &Path) -> Command {
    let mut cmd = Command::new("/usr/lib/systemd/systemd-measure");
    cmd.arg(verb);
    for (name, data) in sections {
        let f = dir.join(&name[1..]);
        std::fs::write(&f, data).unwrap();
        cmd.arg(format!("--{}={}", &name[1..], f.display()));
    }
    for b in measure::Bank::ALL {
        cmd.arg(format!("--bank={}", b.name()));
    }
    cmd
}

#[test]
fn pcr11_predictions_equal_systemd_measure() {
    let dir = tempfile::tempdir().unwrap();
    let sections: Vec<(&str, Vec<u8>)> = vec![
        (".linux", b"a kernel".repeat(1000)),
        (".osrel", b"NAME=\"Talos\"\nID=talos\n".to_vec()),
        (".cmdline", b"console=ttyS0 talos.platform=metal".to_vec()),
        (".initrd", vec![7u8; 100_000]),
        (".splash", b"BM....".to_vec()),
    ];
    let mut cmd = systemd_measure("calculate", &sections, dir.path());
    cmd.args(["--phase=enter-initrd", "--phase=enter-initrd:leave-initrd"])
        .arg("--phase=enter-initrd:leave-initrd:enter-machined");
    let o = run(&mut cmd);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let refs: Vec<(&str, &[u8])> = sections.iter().map(|(n, d)| (*n, d.as_slice())).collect();
    let mut expected = String::new();
    let phases = [
        "enter-initrd",
        "enter-initrd:leave-initrd",
        "enter-initrd:leave-initrd:enter-machined",
    ];
    let values: Vec<Vec<Vec<u8>>> = measure::Bank::ALL
        .iter()
        .map(|b| measure::pcr11(*b, &refs, &measure::PHASES))
        .collect();
    // one block per phase (its "# PCR[11] Phase <…>" heading goes to stderr)
    assert_eq!(phases.len(), measure::PHASES.len());
    for i in 0..phases.len() {
        for (b, v) in measure::Bank::ALL.iter().zip(&values) {
            expected.push_str(&format!("11:{}={}\n", b.name(), hex(&v[i])));
        }
    }
    assert_eq!(text, expected);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A software TPM on free TCP ports, stopped on drop.
/// (the process, its port, its state directory, kept until the end)
struct Swtpm(
    std::process::Child,
    u16,
    #[allow(dead_code)] tempfile::TempDir,
);

impl Swtpm {
    fn start() -> Self {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let p = l.local_addr().unwrap().port();
            drop(l);
            p
        };
        let state = tempfile::tempdir().unwrap();
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", state.path().display()))
            .args([
                "--server",
                &format!("type=tcp,port={port},bindaddr=127.0.0.1"),
            ])
            .args([
                "--ctrl",
                &format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1),
            ])
            .args(["--flags", "not-need-init,startup-clear"])
            .spawn()
            .expect("swtpm (hack/deps.sh)");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Self(child, port, state)
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn pcr_signatures_equal_systemd_measure_sign() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("pcr.key");
    let public = dir.path().join("pcr.pub");
    let o = run(Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let pk = measure::PcrKey::from_pem(&std::fs::read(&key).unwrap(), "pcr.key").unwrap();
    std::fs::write(&public, pk.public_pem().unwrap()).unwrap();
    let sections: Vec<(&str, Vec<u8>)> = vec![
        (".linux", b"kernel".repeat(999)),
        (".osrel", b"ID=talos\n".to_vec()),
        (".cmdline", b"talos.platform=metal".to_vec()),
        (".initrd", vec![1u8; 5000]),
        (".splash", b"BM".to_vec()),
        (".pcrpkey", std::fs::read(&public).unwrap()),
    ];
    let tpm = Swtpm::start();
    let mut cmd = systemd_measure("sign", &sections, dir.path());
    cmd.arg(format!("--tpm2-device=swtpm:host=127.0.0.1,port={}", tpm.1));
    cmd.arg("--phase=enter-initrd:leave-initrd:enter-machined")
        .arg(format!("--private-key={}", key.display()))
        .arg(format!("--public-key={}", public.display()))
        .arg("--json=short");
    let o = run(&mut cmd);
    let theirs = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(
        o.status.success(),
        "systemd-measure sign: {theirs}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let refs: Vec<(&str, &[u8])> = sections.iter().map(|(n, d)| (*n, d.as_slice())).collect();
    // systemd 252's systemd-measure measures what its stub does
    let ours = measure::pcr_signature(&measure::SECTION_ORDER_252, &refs, &pk).unwrap();
    assert_eq!(
        ours, theirs,
        "byte for byte (RSA PKCS#1 v1.5 is deterministic)"
    );
    // and openssl verifies each bank's signature over the policy digest
    let doc: serde_json::Value = serde_json::from_str(&ours).unwrap();
    for (bank, md) in [
        ("sha256", "-sha256"),
        ("sha384", "-sha384"),
        ("sha512", "-sha512"),
    ] {
        use base64::Engine as _;
        let e = &doc[bank][0];
        let pol: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&e["pol"].as_str().unwrap()[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        let sig = base64::engine::general_purpose::STANDARD
            .decode(e["sig"].as_str().unwrap())
            .unwrap();
        let (pf, sf) = (dir.path().join("pol"), dir.path().join("sig"));
        std::fs::write(&pf, &pol).unwrap();
        std::fs::write(&sf, &sig).unwrap();
        let o = run(Command::new("openssl")
            .args(["dgst", md, "-verify"])
            .arg(&public)
            .arg("-signature")
            .arg(&sf)
            .arg(&pf));
        assert!(
            o.status.success(),
            "{bank}: {}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
}
