//! Helpers shared by the fuzz targets.

mod seeds;

use std::path::PathBuf;

/// The file the `cosign_keyless` seeds sign.
pub const KEYLESS_FILE: &[u8] = b"a file signed keyless";
/// Its SHA-256 (the seeds are verified with it when written).
pub const KEYLESS_FILE_SHA256: [u8; 32] = [
    0x12, 0x24, 0xff, 0x10, 0x4a, 0x65, 0xf2, 0x79, 0x9e, 0x1b, 0xd0, 0x36, 0x9d, 0x5f, 0xed, 0x25,
    0x47, 0x18, 0x1e, 0x0c, 0x63, 0xce, 0xcb, 0xf7, 0x08, 0xd7, 0x3c, 0xea, 0x92, 0x6e, 0xbf, 0x7e,
];
/// The image digest the `cosign_keyless` image seeds sign.
pub const KEYLESS_IMAGE: &str =
    "sha256:6b2d5b8b2bd41a3d5b9d3c1b5f5a5d8f2f0f6c1e6a8f3b5b4c2d1e0f9a8b7c6d";
/// The signer's identity and OIDC issuer in those seeds.
pub const KEYLESS_EMAIL: &str = "fuzz@example.com";
/// See [`KEYLESS_EMAIL`].
pub const KEYLESS_ISSUER: &str = "https://issuer.example.com";

/// The keyless verifier of the `cosign_keyless` target: the stand-in's trust root, the seeds'
/// identity and issuer.
pub fn keyless_verifier() -> cosign::Verifier {
    let s = cosign::testing::Sigstore::new(b"fuzz");
    cosign::Verifier::Keyless {
        identity: cosign::Identity::Exact(KEYLESS_EMAIL.into()),
        issuer: cosign::Issuer::Exact(KEYLESS_ISSUER.into()),
        trust_root: cosign::TrustRoot::from_json(s.trusted_root_json().as_bytes())
            .unwrap_or_else(|e| panic!("stand-in trust root: {e}")),
    }
}

/// A per-process scratch directory for targets that need files (an OCI layout, a tree's
/// blobs), emptied before each run; on tmpfs when there is one.
pub fn scratch(name: &str) -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let d = base.join(format!("imager-fuzz-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// Makes a GPT image's CRCs right (header at LBA 1, entry array where the header says, both
/// bounded by the image), so that the fuzzer reaches the checks behind them.
pub fn fix_gpt_crcs(disk: &mut [u8], sector: usize) {
    let h = sector;
    if disk.len() < h + 92 {
        return;
    }
    let rd32 = |d: &[u8], o: usize| u32::from_le_bytes([d[o], d[o + 1], d[o + 2], d[o + 3]]);
    let array_lba = u64::from_le_bytes(disk[h + 72..h + 80].try_into().unwrap_or([0; 8]));
    let count = rd32(disk, h + 80) as usize;
    let size = rd32(disk, h + 84) as usize;
    let start = (array_lba as usize).saturating_mul(sector);
    let len = count.saturating_mul(size);
    if let Some(array) = start
        .checked_add(len)
        .filter(|end| *end <= disk.len())
        .map(|end| &disk[start..end])
    {
        let crc = crc32fast::hash(array);
        disk[h + 88..h + 92].copy_from_slice(&crc.to_le_bytes());
    }
    let hsize = (rd32(disk, h + 12) as usize).min(sector);
    if hsize >= 92 && h + hsize <= disk.len() {
        disk[h + 16..h + 20].copy_from_slice(&[0; 4]);
        let crc = crc32fast::hash(&disk[h..h + hsize]);
        disk[h + 16..h + 20].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Writes `target`'s seeds into `$FUZZ_SEEDS_DIR` (hack/fuzz.sh points it at the corpus)
/// when that is set, leaving files that exist alone. Run once, from the target's init.
pub fn write_seeds(target: &str) {
    let Some(dir) = std::env::var_os("FUZZ_SEEDS_DIR") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("seed dir");
    for (t, name, data) in seeds::all() {
        let p = dir.join(format!("seed-{name}"));
        if t == target && !p.exists() {
            std::fs::write(p, data).expect("seed");
        }
    }
}
