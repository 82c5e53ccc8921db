//! A board overlay's installer program, as Talos runs them (docs/formats/overlays.md,
//! "Protocol"): `get-options` and `install`, YAML (here JSON, which is YAML) on stdin, YAML on
//! stdout. It does for the rockpro64 what `overlays/rockchip/overlay.yaml` describes — U-Boot
//! at sectors 64 and 16384 of `installDisk`, the dtb under `<mountPrefix>/boot/EFI/` — so that
//! the imager's tests can compare the two paths byte for byte; `extraOptions.mode` turns it
//! hostile (`escape`: write outside what it was given; `hang`: never finish; `network`:
//! connect to `extraOptions.connectTo`).
//!
//! In: argv[1] and stdin. Out: stdout, the disk and the staging directory; exit status 1 with
//! a line on stderr on any failure.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

const IDBLOADER: &str = "arm64/u-boot/rockpro64-rk3399/idbloader.img";
const ITB: &str = "arm64/u-boot/rockpro64-rk3399/u-boot.itb";
const DTB: &str = "arm64/dtb/rockchip/rk3399-rockpro64.dtb";

fn fail(msg: String) -> ! {
    eprintln!("overlay-test-installer: {msg}");
    std::process::exit(1)
}

fn input() -> serde_json::Value {
    let mut s = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut s) {
        fail(format!("reading stdin: {e}"));
    }
    if s.trim().is_empty() {
        return serde_json::Value::Null;
    }
    serde_json::from_str(&s).unwrap_or_else(|e| fail(format!("stdin: {e}")))
}

fn str_of<'a>(v: &'a serde_json::Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| fail(format!("{key} missing")))
}

fn pwrite(disk: &str, offset: u64, src: &Path) {
    let data = std::fs::read(src).unwrap_or_else(|e| fail(format!("{}: {e}", src.display())));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(disk)
        .unwrap_or_else(|e| fail(format!("{disk}: {e}")));
    f.seek(SeekFrom::Start(offset))
        .and_then(|_| f.write_all(&data))
        .unwrap_or_else(|e| fail(format!("writing {disk}: {e}")));
}

fn main() {
    let cmd = std::env::args().nth(1).unwrap_or_default();
    match cmd.as_str() {
        "get-options" => {
            let _options = input();
            print!(
                "name: rockpro64\nkernelArgs:\n  - console=tty0\n  - console=ttyS2,1500000n8\npartitionOptions:\n  offset: 20480\n"
            );
        }
        "install" => {
            let v = input();
            let disk = str_of(&v, "installDisk");
            let prefix = Path::new(str_of(&v, "mountPrefix"));
            let artifacts = Path::new(str_of(&v, "artifactsPath"));
            let extra = &v["extraOptions"];
            match extra["mode"].as_str().unwrap_or("") {
                "escape" => {
                    let mut wrote = Vec::new();
                    let mut targets: Vec<String> = vec![
                        "/etc/overlay-escape".into(),
                        "/overlay-escape".into(),
                        artifacts.join("overlay-escape").display().to_string(),
                    ];
                    if let Some(t) = extra["escapeTo"].as_str() {
                        targets.push(t.to_string());
                    }
                    for t in &targets {
                        if std::fs::write(t, b"escaped").is_ok() {
                            wrote.push(t.clone());
                        }
                    }
                    fail(format!("tried to write outside; succeeded for {wrote:?}"));
                }
                "hang" => loop {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                },
                "network" => {
                    let to = extra["connectTo"].as_str().unwrap_or("127.0.0.1:1");
                    match std::net::TcpStream::connect(to) {
                        Ok(_) => fail(format!("connected to {to}")),
                        Err(e) => fail(format!("no network to {to}: {e}")),
                    }
                }
                _ => {}
            }
            pwrite(disk, 32768, &artifacts.join(IDBLOADER));
            pwrite(disk, 8388608, &artifacts.join(ITB));
            let dst = prefix.join("boot/EFI/dtb/rockchip/rk3399-rockpro64.dtb");
            if let Some(d) = dst.parent() {
                std::fs::create_dir_all(d)
                    .unwrap_or_else(|e| fail(format!("{}: {e}", d.display())));
            }
            std::fs::copy(artifacts.join(DTB), &dst)
                .unwrap_or_else(|e| fail(format!("{}: {e}", dst.display())));
        }
        other => fail(format!("unknown command {other:?}")),
    }
}
