//! Talos's extension compatibility check: `blang/semver` (v4) ranges.
//!
//! A range is `||`-separated alternatives of space-separated comparators (`>=1.9.0 <2.0.0`),
//! each `[op]major.minor.patch[-pre][+build]` with op one of `=`, `==`, `!=`, `!`, `>`, `>=`,
//! `<`, `<=` (none = `=`); a space between an operator and its version is allowed, and `x`,
//! `X` or `*` wildcards in minor/patch are expanded (`1.2.x` = `>=1.2.0 <1.3.0`). Before
//! parsing, Talos removes a `v` that precedes a digit anywhere in the string.

use std::cmp::Ordering;

/// A semantic version (build metadata is kept but ignored in comparisons).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// Major.
    pub major: u64,
    /// Minor.
    pub minor: u64,
    /// Patch.
    pub patch: u64,
    /// Pre-release identifiers (`alpha`, `1`, …).
    pub pre: Vec<String>,
}

fn num(s: &str, what: &str) -> Result<u64, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid {what} number {s:?}"));
    }
    if s.len() > 1 && s.starts_with('0') {
        return Err(format!("{what} number {s:?} has a leading zero"));
    }
    s.parse()
        .map_err(|_| format!("{what} number {s:?} out of range"))
}

impl Version {
    /// Strict `major.minor.patch[-pre][+build]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (s, _build) = s.split_once('+').unwrap_or((s, ""));
        let (core, pre) = match s.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (s, None),
        };
        let parts: Vec<&str> = core.split('.').collect();
        let [ma, mi, pa] = parts.as_slice() else {
            return Err(format!("{s:?}: no Major.Minor.Patch elements found"));
        };
        let pre = match pre {
            Some(p) => {
                let ids: Vec<String> = p.split('.').map(str::to_string).collect();
                if ids.iter().any(|i| {
                    i.is_empty() || !i.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                }) {
                    return Err(format!("{s:?}: invalid pre-release {p:?}"));
                }
                ids
            }
            None => Vec::new(),
        };
        Ok(Self {
            major: num(ma, "major")?,
            minor: num(mi, "minor")?,
            patch: num(pa, "patch")?,
            pre,
        })
    }

    /// `semver.ParseTolerant`: trims spaces and a leading `v`, fills a missing minor/patch.
    pub fn parse_tolerant(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let s = s.strip_prefix('v').unwrap_or(s);
        let (core, rest) = match s.find(['-', '+']) {
            Some(i) => (&s[..i], &s[i..]),
            None => (s, ""),
        };
        let mut parts: Vec<String> = core
            .split('.')
            .map(|p| {
                let t = p.trim_start_matches('0');
                if t.is_empty() && !p.is_empty() {
                    "0".to_string()
                } else {
                    t.to_string()
                }
            })
            .collect();
        if parts.len() > 3 {
            return Err(format!("{s:?}: too many version components"));
        }
        while parts.len() < 3 {
            parts.push("0".into());
        }
        Self::parse(&format!("{}{rest}", parts.join(".")))
    }

    /// `major.minor.patch` without pre-release.
    pub fn core(&self) -> Self {
        Self {
            pre: Vec::new(),
            ..self.clone()
        }
    }
}

impl Ord for Version {
    fn cmp(&self, o: &Self) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(o.major, o.minor, o.patch))
            .then_with(|| match (self.pre.is_empty(), o.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => {
                    for (a, b) in self.pre.iter().zip(&o.pre) {
                        let c = match (a.parse::<u64>(), b.parse::<u64>()) {
                            (Ok(x), Ok(y)) => x.cmp(&y),
                            (Ok(_), Err(_)) => Ordering::Less,
                            (Err(_), Ok(_)) => Ordering::Greater,
                            (Err(_), Err(_)) => a.cmp(b),
                        };
                        if c != Ordering::Equal {
                            return c;
                        }
                    }
                    self.pre.len().cmp(&o.pre.len())
                }
            })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

/// A parsed range: alternatives (OR) of comparator lists (AND).
#[derive(Debug, Clone)]
pub struct Range {
    alts: Vec<Vec<(Op, Version)>>,
}

/// Talos `trim`: drops every `v` that precedes a digit.
pub fn strip_v(s: &str) -> String {
    let b = s.as_bytes();
    let mut o = String::with_capacity(s.len());
    for (i, c) in s.char_indices() {
        if c == 'v' && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
            continue;
        }
        o.push(c);
    }
    o
}

/// blang `splitAndTrim`: split on spaces, except right after an operator character.
fn split_and_trim(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut last = 0u8;
    for b in s.bytes() {
        if b == b' ' {
            if !matches!(last, b'>' | b'<' | b'=' | b'!') && !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(b as char);
            last = b;
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn parse_op(s: &str) -> (Op, &str) {
    for (p, op) in [
        (">=", Op::Ge),
        ("<=", Op::Le),
        ("!=", Op::Ne),
        ("==", Op::Eq),
        (">", Op::Gt),
        ("<", Op::Lt),
        ("=", Op::Eq),
        ("!", Op::Ne),
    ] {
        if let Some(r) = s.strip_prefix(p) {
            return (op, r);
        }
    }
    (Op::Eq, s)
}

fn is_wild(s: &str) -> bool {
    matches!(s, "x" | "X" | "*")
}

/// One comparator token, wildcards expanded into one or two comparators.
fn comparator(tok: &str) -> Result<Vec<(Op, Version)>, String> {
    let (op, v) = parse_op(tok);
    let parts: Vec<&str> = v.split('.').collect();
    let wild = parts.iter().position(|p| is_wild(p));
    let Some(w) = wild else {
        return Ok(vec![(op, Version::parse(v)?)]);
    };
    if w == 0 || parts.len() > 3 || parts[w..].iter().any(|p| !is_wild(p)) {
        return Err(format!("{tok:?}: invalid wildcard version"));
    }
    let major = num(parts[0], "major")?;
    let (lo, hi) = if w == 1 {
        (
            Version::parse(&format!("{major}.0.0"))?,
            Version::parse(&format!("{}.0.0", major + 1))?,
        )
    } else {
        let minor = num(parts[1], "minor")?;
        (
            Version::parse(&format!("{major}.{minor}.0"))?,
            Version::parse(&format!("{major}.{}.0", minor + 1))?,
        )
    };
    Ok(match op {
        Op::Eq => vec![(Op::Ge, lo), (Op::Lt, hi)],
        Op::Ge => vec![(Op::Ge, lo)],
        Op::Gt => vec![(Op::Ge, hi)],
        Op::Lt => vec![(Op::Lt, lo)],
        Op::Le => vec![(Op::Lt, hi)],
        Op::Ne => return Err(format!("{tok:?}: a wildcard cannot be negated")),
    })
}

impl Range {
    /// Parses a constraint as Talos does (`v` before digits stripped first).
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts = split_and_trim(&strip_v(s));
        if parts.is_empty() {
            return Err("empty constraint".into());
        }
        let mut alts = Vec::new();
        let mut cur = Vec::new();
        for p in &parts {
            if p == "||" {
                if cur.is_empty() {
                    return Err(format!("{s:?}: '||' without a comparator before it"));
                }
                alts.push(std::mem::take(&mut cur));
            } else {
                cur.extend(comparator(p)?);
            }
        }
        if cur.is_empty() {
            return Err(format!("{s:?}: '||' without a comparator after it"));
        }
        alts.push(cur);
        Ok(Self { alts })
    }

    /// Whether `v` satisfies the range.
    pub fn matches(&self, v: &Version) -> bool {
        self.alts.iter().any(|and| {
            and.iter().all(|(op, c)| match op {
                Op::Eq => v == c,
                Op::Ne => v != c,
                Op::Gt => v > c,
                Op::Ge => v >= c,
                Op::Lt => v < c,
                Op::Le => v <= c,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(r: &str, v: &str) -> bool {
        Range::parse(r)
            .unwrap()
            .matches(&Version::parse_tolerant(v).unwrap().core())
    }

    #[test]
    fn talos_constraints() {
        assert!(ok(">= v1.9.0", "v1.14.0"));
        assert!(ok(">= v1.9.0", "v1.9.0-alpha.1"));
        assert!(!ok(">= v1.9.0", "v1.8.4"));
        assert!(ok(">=1.9.0 <1.10.0", "1.9.7"));
        assert!(!ok(">=1.9.0 <1.10.0", "1.10.0"));
        assert!(ok("<1.5.0 || >= 1.9.0", "1.4.0"));
        assert!(ok("1.14.x", "v1.14.3"));
        assert!(!ok("1.14.x", "v1.15.0"));
        assert!(ok(">1.13.x", "v1.14.0"));
        assert!(!ok(">1.13.x", "v1.13.9"));
        assert!(ok("!=1.2.3", "1.2.4"));
        assert!(ok("=1.14.0", "v1.14"));
        assert!(ok(">= 1.9.0-alpha.0", "1.9.0"));
    }

    #[test]
    fn bad_constraints() {
        for r in [
            "",
            ">= banana",
            "1.2",
            "|| 1.2.3",
            "1.2.3 ||",
            ">=01.2.3",
            "x.1.2",
            "!=1.x",
        ] {
            assert!(Range::parse(r).is_err(), "{r:?}");
        }
    }

    #[test]
    fn ordering() {
        let p = |s| Version::parse(s).unwrap();
        assert!(p("1.0.0-alpha") < p("1.0.0-alpha.1"));
        assert!(p("1.0.0-alpha.1") < p("1.0.0-beta"));
        assert!(p("1.0.0-beta.2") < p("1.0.0-beta.11"));
        assert!(p("1.0.0-rc.1") < p("1.0.0"));
        assert_eq!(strip_v(">= v1.9.0 dev v"), ">= 1.9.0 dev v");
    }
}
