//! `modules.alias` and modalias matching (what `modprobe $MODALIAS` does for a uevent).
//!
//! In: the text of `modules.alias` (`alias <fnmatch pattern> <module>` lines) and a device's
//! `modalias` string from sysfs. Out: the modules whose patterns match, in file order, each
//! once. Patterns use fnmatch(3) syntax without flags: `*`, `?` and bracket expressions
//! (`[abc]`, `[a-z]`, `[!x]`/`[^x]`); kmod matches them the same way.

/// A parsed `modules.alias`.
#[derive(Debug, Default, Clone)]
pub struct Aliases {
    entries: Vec<(String, String)>,
}

impl Aliases {
    /// Parses the text of a modules.alias file (comments and malformed lines are skipped).
    pub fn parse(text: &str) -> Self {
        let entries = text
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                (w.next()? == "alias").then_some(())?;
                let (pat, module) = (w.next()?, w.next()?);
                Some((pat.to_string(), module.replace('-', "_")))
            })
            .collect();
        Self { entries }
    }

    /// Number of alias lines.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Modules whose alias pattern matches `modalias`, in file order, without repeats.
    pub fn lookup(&self, modalias: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (pat, m) in &self.entries {
            if fnmatch(pat.as_bytes(), modalias.as_bytes()) && !out.contains(m) {
                out.push(m.clone());
            }
        }
        out
    }
}

/// fnmatch(3) without flags (`/` and leading `.` are ordinary characters).
pub fn fnmatch(pat: &[u8], s: &[u8]) -> bool {
    // iterative matcher with backtracking to the last `*`
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() {
            match pat[p] {
                b'*' => {
                    star = Some((p, i));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    i += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = bracket(&pat[p..], s[i]) {
                        if matched {
                            p += next;
                            i += 1;
                            continue;
                        }
                    } else if s[i] == b'[' {
                        // an unterminated bracket is a literal '['
                        p += 1;
                        i += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pat.len() => {
                    if pat[p + 1] == s[i] {
                        p += 2;
                        i += 1;
                        continue;
                    }
                }
                c => {
                    if c == s[i] {
                        p += 1;
                        i += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((sp, si)) => {
                p = sp + 1;
                i = si + 1;
                star = Some((sp, si + 1));
            }
            None => return false,
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// Matches one character against the bracket expression at the start of `pat`; returns
/// `(matched, length of the expression)`, or `None` when the bracket is not terminated.
fn bracket(pat: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut j = 1;
    let negate = matches!(pat.get(j), Some(b'!') | Some(b'^'));
    if negate {
        j += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let ch = *pat.get(j)?;
        if ch == b']' && !first {
            break;
        }
        first = false;
        if pat.get(j + 1) == Some(&b'-') && pat.get(j + 2).is_some_and(|&e| e != b']') {
            let hi = pat[j + 2];
            if ch <= c && c <= hi {
                matched = true;
            }
            j += 3;
        } else {
            if ch == c {
                matched = true;
            }
            j += 1;
        }
    }
    Some((matched != negate, j + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnmatch_cases() {
        let m = |p: &str, s: &str| fnmatch(p.as_bytes(), s.as_bytes());
        assert!(m("virtio:d00000005v*", "virtio:d00000005v00001AF4"));
        assert!(!m("virtio:d00000005v*", "virtio:d00000001v00001AF4"));
        assert!(m(
            "pci:v00001AF4d00001000sv*sd*bc*sc*i*",
            "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"
        ));
        assert!(m(
            "usb:v*p*d*dc*dsc*dp*ic03isc01ip0[12]in*",
            "usb:v1D6Bp0001d0601dc09dsc00dp00ic03isc01ip02in00"
        ));
        assert!(!m("a[!b]c", "abc"));
        assert!(m("a[^b]c", "axc"));
        assert!(m("a[]]c", "a]c"));
        assert!(m("x?z", "xyz"));
        assert!(m("*", ""));
        assert!(!m("a", ""));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("a[", "a["));
        assert!(m("acpi*:PNP0A03:*", "acpi:PNP0A03:PNP0A08:"));
    }

    #[test]
    fn lookup_in_file_order_without_repeats() {
        let a = Aliases::parse(
            "# Aliases extracted from modules themselves.\nalias virtio:d00000005v* virtio_balloon\nalias virtio:d00000005v00001AF4 virtio_balloon\nalias pci:v*d* some-mod\nbogus line\n",
        );
        assert_eq!(a.len(), 3);
        assert_eq!(a.lookup("virtio:d00000005v00001AF4"), ["virtio_balloon"]);
        assert_eq!(a.lookup("pci:v1d2"), ["some_mod"]);
        assert!(a.lookup("platform:x").is_empty());
    }
}
