//! Transparency-log proofs, offline: RFC 6962 Merkle inclusion proofs and signed checkpoints
//! (the "signed note" format of Rekor v1 and the C2SP checkpoint of Rekor v2);
//! docs/formats/signatures.md, "Inclusion proofs and checkpoints".
//!
//! In: a leaf (the log entry's canonical body), its index, the audit path, and the
//! checkpoint text with the trust-root key of the log. Out: `Ok` when the path leads to the
//! root that the log signed, or a message naming what differs.

use sha2::Digest as _;

use crate::trust::TlogKey;

/// At most this many audit-path hashes (a tree of 2^64 leaves needs 64).
const MAX_PROOF: usize = 64;
/// A checkpoint larger than this is refused unread.
const MAX_CHECKPOINT: usize = 64 * 1024;

/// RFC 6962 leaf hash: SHA-256(0x00 || leaf).
pub(crate) fn leaf_hash(leaf: &[u8]) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    h.update([0u8]);
    h.update(leaf);
    h.finalize().into()
}

fn node(left: &[u8], right: &[u8]) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root that the audit path `proof` of leaf `index` in a tree of `size` leaves leads to
/// (RFC 9162 §2.1.3.2).
pub(crate) fn root_from_proof(
    index: u64,
    size: u64,
    leaf: &[u8; 32],
    proof: &[[u8; 32]],
) -> Result<[u8; 32], String> {
    if index >= size {
        return Err(format!("index {index} is not below tree size {size}"));
    }
    if proof.len() > MAX_PROOF {
        return Err(format!(
            "{} proof hashes (at most {MAX_PROOF})",
            proof.len()
        ));
    }
    let inner = (64 - (index ^ (size - 1)).leading_zeros()) as usize;
    let border = index.checked_shr(inner as u32).unwrap_or(0).count_ones() as usize;
    if proof.len() != inner + border {
        return Err(format!(
            "{} proof hashes for index {index} in a tree of {size} (expected {})",
            proof.len(),
            inner + border
        ));
    }
    let mut h = *leaf;
    for (i, p) in proof[..inner].iter().enumerate() {
        h = if (index >> i) & 1 == 0 {
            node(&h, p)
        } else {
            node(p, &h)
        };
    }
    for p in &proof[inner..] {
        h = node(p, &h);
    }
    Ok(h)
}

/// A checkpoint's body: origin, tree size, root hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: [u8; 32],
}

/// Parses `text` as a signed note and verifies that a signature line of `log` (key hint = the
/// first 4 bytes of its log ID) signs the body; other lines (witnesses) are ignored.
/// Rekor v1 signs SHA-256 of the body with ECDSA; Rekor v2 signs the body with Ed25519.
pub(crate) fn verify_checkpoint(text: &str, log: &TlogKey) -> Result<Checkpoint, String> {
    if text.len() > MAX_CHECKPOINT {
        return Err(format!("checkpoint of {} bytes", text.len()));
    }
    let split = text
        .rfind("\n\n")
        .ok_or("checkpoint has no blank line between body and signatures")?;
    let (body, sigs) = (&text[..split + 1], &text[split + 2..]);
    let hint = hex::decode(log.log_id.get(..8).unwrap_or_default())
        .map_err(|_| format!("log {} has no usable log ID", log.base_url))?;
    let mut verified = false;
    let mut seen = 0;
    let mut failed = None;
    for line in sigs.lines().filter(|l| !l.is_empty()) {
        let rest = line
            .strip_prefix("\u{2014} ")
            .ok_or("checkpoint signature line does not start with an em dash")?;
        let (name, blob) = rest
            .rsplit_once(' ')
            .ok_or("checkpoint signature line has no key name")?;
        let blob = crate::unb64(blob).map_err(|e| format!("checkpoint signature: {e}"))?;
        seen += 1;
        // the log's line: its name and key hint (witness lines are skipped)
        if name != log.host() || blob.len() <= 4 || blob[..4] != hint[..] {
            continue;
        }
        if log.key.verify(body.as_bytes(), &blob[4..]).is_ok() {
            verified = true;
            break;
        }
        failed = Some(format!(
            "checkpoint signature does not verify with the key of log {}",
            log.base_url
        ));
    }
    if let (false, Some(f)) = (verified, failed) {
        return Err(f);
    }
    if !verified {
        return Err(format!(
            "none of the checkpoint's {seen} signature(s) is by log {} (key name {}, hint {})",
            log.base_url,
            log.host(),
            hex::encode(&hint)
        ));
    }
    let mut lines = body.lines();
    let origin = lines.next().unwrap_or_default().to_string();
    let size = lines
        .next()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or("checkpoint tree size is not a number")?;
    let root: [u8; 32] = lines
        .next()
        .and_then(|s| crate::unb64(s).ok())
        .and_then(|r| r.try_into().ok())
        .ok_or("checkpoint root hash is not 32 bytes of base64")?;
    if origin.is_empty() {
        return Err("checkpoint has no origin".into());
    }
    Ok(Checkpoint { origin, size, root })
}

#[cfg(any(test, feature = "testing"))]
/// The RFC 6962 root of `leaves`, computed the slow recursive way.
pub(crate) fn mth(leaves: &[Vec<u8>]) -> [u8; 32] {
    match leaves.len() {
        0 => sha2::Sha256::digest([]).into(),
        1 => leaf_hash(&leaves[0]),
        n => {
            let k = n.next_power_of_two() / 2;
            node(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

#[cfg(any(test, feature = "testing"))]
/// The audit path of leaf `m` (RFC 6962 §2.1.1).
pub(crate) fn path(m: usize, leaves: &[Vec<u8>]) -> Vec<[u8; 32]> {
    let n = leaves.len();
    if n <= 1 {
        return Vec::new();
    }
    let k = n.next_power_of_two() / 2;
    if m < k {
        let mut p = path(m, &leaves[..k]);
        p.push(mth(&leaves[k..]));
        p
    } else {
        let mut p = path(m - k, &leaves[k..]);
        p.push(mth(&leaves[..k]));
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_leaf_of_every_small_tree_proves_and_a_wrong_path_does_not() {
        for n in 1..=17usize {
            let leaves: Vec<Vec<u8>> = (0..n).map(|i| format!("leaf {i}").into_bytes()).collect();
            let root = mth(&leaves);
            for m in 0..n {
                let p = path(m, &leaves);
                let got = root_from_proof(m as u64, n as u64, &leaf_hash(&leaves[m]), &p);
                assert_eq!(got, Ok(root), "n={n} m={m}");
                // another leaf, another index, or a truncated path
                let other = leaf_hash(b"other");
                assert_ne!(root_from_proof(m as u64, n as u64, &other, &p), Ok(root));
                if n > 1 {
                    let wrong = (m + 1) % n;
                    assert_ne!(
                        root_from_proof(wrong as u64, n as u64, &leaf_hash(&leaves[m]), &p),
                        Ok(root)
                    );
                    assert!(
                        root_from_proof(m as u64, n as u64, &leaf_hash(&leaves[m]), &p[1..])
                            .is_err()
                    );
                }
            }
        }
        assert!(root_from_proof(3, 3, &[0; 32], &[]).is_err());
    }
}
