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

/// The enrollment files: the layout firmware parses (time, WIN_CERTIFICATE_UEFI_GUID, the
/// SignedData with SHA-256 at offset 13, then the lists), and each signature verifies with
/// `openssl cms` over the serialization UEFI specifies. Deterministic.
#[test]
fn enrollment_variables_verify_with_openssl() {
    use crate::variables::*;
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = key_and_cert(dir.path(), "enroll-test");
    let signer = PemSigner::new(&key, "k", &cert, "c").unwrap();
    let files = enrollment(&signer, true, 1_700_000_000).unwrap();
    assert_eq!(files, enrollment(&signer, true, 1_700_000_000).unwrap());
    let names: Vec<&str> = files.iter().map(|f| f.0).collect();
    assert_eq!(names, ["db.auth", "KEK.auth", "PK.auth"]);
    let cert_der = signer.certificate_der().to_vec();
    for (file, data) in &files {
        let (var, vendor) = match *file {
            "db.auth" => ("db", guid(IMAGE_SECURITY_DATABASE)),
            "KEK.auth" => ("KEK", guid(GLOBAL_VARIABLE)),
            _ => ("PK", guid(GLOBAL_VARIABLE)),
        };
        assert_eq!(&data[..16], &efi_time(1_700_000_000));
        let len = u32::from_le_bytes(data[16..20].try_into().unwrap()) as usize;
        assert_eq!(&data[20..24], &[0x00, 0x02, 0xf1, 0x0e]);
        assert_eq!(&data[24..40], &guid(CERT_TYPE_PKCS7));
        let sd = &data[40..16 + len];
        assert_eq!(&sd[..2], &[0x30, 0x82]);
        assert_eq!(
            &sd[13..22],
            &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01]
        );
        let value = &data[16 + len..];
        // the first list is ours, DER, with the certificate-derived owner
        assert_eq!(&value[..16], &guid(CERT_X509));
        assert_eq!(&value[28..44], &owner_for(&cert_der));
        assert_eq!(&value[44..44 + cert_der.len()], &cert_der[..]);
        let lists = match var {
            "PK" => 1,
            "KEK" => 3,
            _ => 4,
        };
        let mut at = 0;
        let mut n = 0;
        while at < value.len() {
            at += u32::from_le_bytes(value[at + 16..at + 20].try_into().unwrap()) as usize;
            n += 1;
        }
        assert_eq!((at, n), (value.len(), lists), "{file}");
        let mut signed: Vec<u8> = var.encode_utf16().flat_map(u16::to_le_bytes).collect();
        signed.extend_from_slice(&vendor);
        signed.extend_from_slice(&ATTRIBUTES.to_le_bytes());
        signed.extend_from_slice(&data[..16]);
        signed.extend_from_slice(value);
        // openssl wants a ContentInfo around the SignedData
        let mut ci = vec![
            0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02,
        ];
        ci.extend(crate::asn1::ctx(0, sd));
        let ci = crate::asn1::tlv(0x30, &ci);
        let (p7, content) = (dir.path().join("p7.der"), dir.path().join("content"));
        std::fs::write(&p7, &ci).unwrap();
        std::fs::write(&content, &signed).unwrap();
        let verify = |content: &Path| {
            run(Command::new("openssl")
                .args([
                    "cms",
                    "-verify",
                    "-binary",
                    "-inform",
                    "DER",
                    "-noverify",
                    "-in",
                ])
                .arg(&p7)
                .arg("-content")
                .arg(content)
                .args(["-out", "/dev/null"]))
        };
        let o = verify(&content);
        assert!(
            o.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        signed[0] ^= 1;
        std::fs::write(&content, &signed).unwrap();
        assert!(
            !verify(&content).status.success(),
            "{file}: tampered content verified"
        );
    }
    // without the well-known certificates, every list holds only ours
    let plain = enrollment(&signer, false, 0).unwrap();
    assert!(plain.iter().all(|(_, d)| d.len() < files[0].1.len()));
}
