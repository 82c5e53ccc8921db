//! The YAML that upstream's canonical form is made of (docs/formats/factory.md, "Schematic
//! ID"): block style with four-space indentation, sequences indented under their key, no line
//! wrapping, and go-yaml's choice of scalar style, so that the bytes — and their SHA-256, the
//! schematic ID — are the same as upstream's.
//!
//! Scalar styles, as go-yaml v4 chooses them for a string:
//! - with a line break: a literal block (`|`, `|-` or `|+`, an indentation indicator when the
//!   text starts with a space) when it has two bytes or more and something other than white
//!   space and the emitter allows a block scalar, else double-quoted;
//! - a YAML 1.1 boolean word (`yes`, `off`, …), a base-60 float (`1:30`) or `<<`:
//!   single-quoted;
//! - a string that would read back as another type (`true`, `10`, `1.5`, `null`, `""`, a
//!   timestamp): double-quoted;
//! - else plain, unless the emitter's analysis forbids it (indicators, `: `, ` #`, leading or
//!   trailing space, …): then single-quoted, or double-quoted when that is not allowed either.

use std::cmp::Ordering;

/// The indentation step.
pub const INDENT: usize = 4;

/// What the emitter's analysis allows for a scalar.
struct Allowed {
    block_plain: bool,
    single: bool,
    block: bool,
    multiline: bool,
}

fn is_break(c: char) -> bool {
    matches!(c, '\r' | '\n' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

/// libyaml's printable set (`0x0A`, `0x20`–`0x7E`, most of the BMP above `0xA0`; not
/// `0xFEFF`, `0xFFFE`, `0xFFFF`, nor anything outside the BMP).
fn printable(c: char) -> bool {
    let u = c as u32;
    u == 0x0A
        || (0x20..=0x7E).contains(&u)
        || u == 0x85
        || (0xA0..=0xD7FF).contains(&u)
        || ((0xE000..=0xFFFD).contains(&u) && u != 0xFEFF)
}

fn analyze(s: &str) -> Allowed {
    let chars: Vec<char> = s.chars().collect();
    if chars.is_empty() {
        return Allowed {
            block_plain: true,
            single: true,
            block: false,
            multiline: false,
        };
    }
    let (mut block_ind, mut flow_ind) = (false, false);
    if s.starts_with("---") || s.starts_with("...") {
        block_ind = true;
        flow_ind = true;
    }
    let (mut leading_space, mut leading_break, mut trailing_space, mut trailing_break) =
        (false, false, false, false);
    let (mut break_space, mut space_break, mut prev_space, mut prev_break) =
        (false, false, false, false);
    let (mut line_breaks, mut special, mut tab) = (false, false, false);
    let mut preceded_by_ws = true;
    let n = chars.len();
    for (i, &c) in chars.iter().enumerate() {
        let next = chars.get(i + 1).copied();
        let followed_by_ws = next.is_none_or(|x| x == ' ' || x == '\t' || is_break(x));
        if i == 0 {
            match c {
                '#' | ',' | '[' | ']' | '{' | '}' | '&' | '*' | '!' | '|' | '>' | '\'' | '"'
                | '%' | '@' | '`' => {
                    flow_ind = true;
                    block_ind = true;
                }
                '?' | ':' => {
                    flow_ind = true;
                    if followed_by_ws {
                        block_ind = true;
                    }
                }
                '-' if followed_by_ws => {
                    flow_ind = true;
                    block_ind = true;
                }
                _ => {}
            }
        } else {
            match c {
                ',' | '?' | '[' | ']' | '{' | '}' => flow_ind = true,
                ':' => {
                    flow_ind = true;
                    if followed_by_ws {
                        block_ind = true;
                    }
                }
                '#' if preceded_by_ws => {
                    flow_ind = true;
                    block_ind = true;
                }
                _ => {}
            }
        }
        if c == '\t' {
            tab = true;
        } else if !printable(c) {
            special = true;
        }
        if is_break(c) {
            line_breaks = true;
        }
        if c == ' ' {
            if i == 0 {
                leading_space = true;
            }
            if i == n - 1 {
                trailing_space = true;
            }
            if prev_break {
                break_space = true;
            }
            prev_space = true;
            prev_break = false;
        } else if is_break(c) {
            if i == 0 {
                leading_break = true;
            }
            if i == n - 1 {
                trailing_break = true;
            }
            if prev_space {
                space_break = true;
            }
            prev_space = false;
            prev_break = true;
        } else {
            prev_space = false;
            prev_break = false;
        }
        preceded_by_ws = c == ' ' || c == '\t' || is_break(c);
    }
    let mut a = Allowed {
        block_plain: true,
        single: true,
        block: true,
        multiline: line_breaks,
    };
    if leading_space || leading_break || trailing_space || trailing_break {
        a.block_plain = false;
    }
    if trailing_space {
        a.block = false;
    }
    if break_space {
        a.block_plain = false;
        a.single = false;
    }
    if space_break || tab || special {
        a.block_plain = false;
        a.single = false;
    }
    if space_break || special {
        a.block = false;
    }
    if line_breaks {
        a.block_plain = false;
    }
    if block_ind {
        a.block_plain = false;
    }
    let _ = flow_ind;
    a
}

/// Whether go-yaml resolves the plain scalar `s` to something other than a string.
fn resolves_to_non_string(s: &str) -> bool {
    if matches!(
        s,
        "" | "~"
            | "null"
            | "Null"
            | "NULL"
            | "true"
            | "True"
            | "TRUE"
            | "false"
            | "False"
            | "FALSE"
            | ".nan"
            | ".NaN"
            | ".NAN"
            | ".inf"
            | ".Inf"
            | ".INF"
            | "+.inf"
            | "+.Inf"
            | "+.INF"
            | "-.inf"
            | "-.Inf"
            | "-.INF"
            | "<<"
    ) {
        return true;
    }
    let first = s.as_bytes()[0];
    if first == b'.' {
        return s.parse::<f64>().is_ok();
    }
    if !(first.is_ascii_digit() || first == b'+' || first == b'-') {
        return false;
    }
    if s == "-0" || s == "-0.0" || timestamp(s) {
        return true;
    }
    let plain: String = s.chars().filter(|c| *c != '_').collect();
    if int(&plain) {
        return true;
    }
    float(s)
}

/// Go's `strconv.ParseInt(s, 0, 64)` / `ParseUint` acceptance (base prefixes, octal with a
/// leading 0), in range.
fn int(s: &str) -> bool {
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits) = if let Some(r) = body.strip_prefix("0x").or(body.strip_prefix("0X")) {
        (16, r)
    } else if let Some(r) = body.strip_prefix("0o").or(body.strip_prefix("0O")) {
        (8, r)
    } else if let Some(r) = body.strip_prefix("0b").or(body.strip_prefix("0B")) {
        (2, r)
    } else if body.len() > 1 && body.starts_with('0') {
        (8, &body[1..])
    } else {
        (10, body)
    };
    if digits.is_empty() {
        return false;
    }
    match u64::from_str_radix(digits, radix) {
        Ok(v) => !neg || v <= 1 << 63,
        Err(_) => false,
    }
}

/// go-yaml's float pattern: `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'-' | b'+')) {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let st = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - st
    };
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            digits(&mut i);
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// go-yaml's timestamp forms: `2006-1-2`, with `T`/`t`/space and `15:4:5[.frac]` and a zone.
fn timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 5 || !b[..4].iter().all(u8::is_ascii_digit) || b[4] != b'-' {
        return false;
    }
    let num = |p: &mut usize, max: usize| {
        let st = *p;
        while *p < b.len() && b[*p].is_ascii_digit() && *p - st < max {
            *p += 1;
        }
        *p > st
    };
    let mut p = 5;
    if !num(&mut p, 2) || b.get(p) != Some(&b'-') {
        return false;
    }
    p += 1;
    if !num(&mut p, 2) {
        return false;
    }
    if p == b.len() {
        return true;
    }
    if !matches!(b[p], b'T' | b't' | b' ') {
        return false;
    }
    p += 1;
    for k in 0..3 {
        if !num(&mut p, 2) {
            return false;
        }
        if k < 2 {
            if b.get(p) != Some(&b':') {
                return false;
            }
            p += 1;
        }
    }
    if b.get(p) == Some(&b'.') {
        p += 1;
        if !num(&mut p, 9) {
            return false;
        }
    }
    let zone = &s[p..];
    zone.is_empty()
        || zone == "Z"
        || (zone.len() == 6
            && matches!(zone.as_bytes()[0], b'+' | b'-')
            && zone.as_bytes()[3] == b':'
            && zone[1..3]
                .bytes()
                .chain(zone[4..].bytes())
                .all(|c| c.is_ascii_digit()))
}

fn old_bool(s: &str) -> bool {
    matches!(
        s,
        "y" | "Y"
            | "yes"
            | "Yes"
            | "YES"
            | "on"
            | "On"
            | "ON"
            | "n"
            | "N"
            | "no"
            | "No"
            | "NO"
            | "off"
            | "Off"
            | "OFF"
    )
}

/// `^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$`
fn base60_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'-' | b'+')) {
        i += 1;
    }
    if !b.get(i).is_some_and(u8::is_ascii_digit) {
        return false;
    }
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
        i += 1;
    }
    let mut groups = 0;
    while b.get(i) == Some(&b':') {
        i += 1;
        let st = i;
        while i < b.len() && b[i].is_ascii_digit() && i - st < 2 {
            i += 1;
        }
        match i - st {
            1 => {}
            2 if b[st] <= b'5' => {}
            _ => return false,
        }
        groups += 1;
    }
    if groups == 0 {
        return false;
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
            i += 1;
        }
    }
    i == b.len()
}

fn double_quoted(s: &str) -> String {
    let mut o = String::from("\"");
    let bom = s.starts_with('\u{FEFF}');
    for c in s.chars() {
        let esc = match c {
            '\0' => Some("\\0".to_string()),
            '\u{7}' => Some("\\a".into()),
            '\u{8}' => Some("\\b".into()),
            '\t' => Some("\\t".into()),
            '\n' => Some("\\n".into()),
            '\u{B}' => Some("\\v".into()),
            '\u{C}' => Some("\\f".into()),
            '\r' => Some("\\r".into()),
            '\u{1B}' => Some("\\e".into()),
            '"' => Some("\\\"".into()),
            '\\' => Some("\\\\".into()),
            '\u{85}' => Some("\\N".into()),
            '\u{A0}' => Some("\\_".into()),
            '\u{2028}' => Some("\\L".into()),
            '\u{2029}' => Some("\\P".into()),
            c if bom || !printable(c) => {
                let u = c as u32;
                Some(if u <= 0xFF {
                    format!("\\x{u:02X}")
                } else if u <= 0xFFFF {
                    format!("\\u{u:04X}")
                } else {
                    format!("\\U{u:08X}")
                })
            }
            _ => None,
        };
        match esc {
            Some(e) => o.push_str(&e),
            None => o.push(c),
        }
    }
    o.push('"');
    o
}

fn single_quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A literal block scalar after `key:` (or `-`): the header and the lines at `indent`.
fn literal(s: &str, indent: usize) -> String {
    let mut o = String::from(" |");
    if s.starts_with(' ') {
        o.push_str(&INDENT.to_string());
    }
    let ends_break = s.ends_with('\n');
    if !ends_break {
        o.push('-');
    } else if s == "\n" || s.ends_with("\n\n") {
        o.push('+');
    }
    o.push('\n');
    let body = s.strip_suffix('\n').unwrap_or(s);
    for line in body.split('\n') {
        if !line.is_empty() {
            o.push_str(&" ".repeat(indent));
            o.push_str(line);
        }
        o.push('\n');
    }
    o
}

/// A string value after `key:` or `-` in block context: ` value\n`, or a literal block
/// whose lines are at `block_indent`. go-yaml's indentation indicator (for text that starts
/// with a space) is always 4, which is right only where the lines are 4 deeper than their
/// parent (`aligned`); elsewhere its output does not read back as the same text, and `None`
/// says so.
pub fn string_value(s: &str, block_indent: usize, aligned: bool) -> Option<String> {
    if s.contains('\n') {
        let a = analyze(s);
        let literal_ok = s.len() >= 2 && s.chars().any(|c| !c.is_whitespace());
        if literal_ok && a.block {
            if s.starts_with(' ') && !aligned {
                return None;
            }
            return Some(literal(s, block_indent));
        }
        return Some(format!(" {}\n", double_quoted(s)));
    }
    Some(format!(" {}\n", inline(s)))
}

/// A string as an inline scalar (a value without line breaks, or a mapping key).
pub fn inline(s: &str) -> String {
    if base60_float(s) || old_bool(s) || s == "<<" {
        return single_quoted(s);
    }
    if resolves_to_non_string(s) {
        return double_quoted(s);
    }
    let a = analyze(s);
    if a.block_plain && !a.multiline {
        s.to_string()
    } else if a.single && !a.multiline {
        single_quoted(s)
    } else {
        double_quoted(s)
    }
}

/// go-yaml's order of string map keys (`keyList.Less`): rune by rune; letters by rune; a run
/// of digits against another by its numeric value; a letter against a non-letter depending on
/// whether digits came before.
pub fn key_order(a: &str, b: &str) -> Ordering {
    let (ar, br): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut digits = false;
    let mut i = 0;
    while i < ar.len() && i < br.len() {
        if ar[i] == br[i] {
            digits = ar[i].is_ascii_digit();
            i += 1;
            continue;
        }
        let (al, bl) = (ar[i].is_alphabetic(), br[i].is_alphabetic());
        if al && bl {
            return ar[i].cmp(&br[i]);
        }
        if al || bl {
            let less = if digits { al } else { bl };
            return if less {
                Ordering::Less
            } else {
                Ordering::Greater
            };
        }
        let (mut an, mut bn) = (0u128, 0u128);
        if (ar[i] == '0' || br[i] == '0') && i > 0 {
            let mut j = i;
            while j > 0 && ar[j - 1].is_ascii_digit() {
                j -= 1;
                if ar[j] != '0' {
                    an = 1;
                    bn = 1;
                    break;
                }
            }
        }
        let (mut ai, mut bi) = (i, i);
        while ai < ar.len() && ar[ai].is_ascii_digit() {
            an = an
                .saturating_mul(10)
                .saturating_add(u128::from(ar[ai] as u32 - '0' as u32));
            ai += 1;
        }
        while bi < br.len() && br[bi].is_ascii_digit() {
            bn = bn
                .saturating_mul(10)
                .saturating_add(u128::from(br[bi] as u32 - '0' as u32));
            bi += 1;
        }
        if an != bn {
            return an.cmp(&bn);
        }
        if ai != bi {
            return ai.cmp(&bi);
        }
        return ar[i].cmp(&br[i]);
    }
    ar.len().cmp(&br.len())
}

/// Go's `strconv.FormatFloat(f, 'g', -1, 64)` (the shortest digits; an exponent, at least
/// two digits with its sign, when it is below -4 or at least 6), with YAML's `.inf`, `-.inf`,
/// `.nan`.
pub fn float_text(f: f64) -> String {
    if f.is_nan() {
        return ".nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            ".inf".into()
        } else {
            "-.inf".into()
        };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let e = format!("{f:e}");
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        format!(
            "{mant}e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.unsigned_abs()
        )
    } else {
        format!("{f}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_styles() {
        for (s, want) in [
            ("noapic", "noapic"),
            ("vga=791", "vga=791"),
            ("siderolabs/gvisor", "siderolabs/gvisor"),
            ("", "\"\""),
            ("true", "\"true\""),
            ("10", "\"10\""),
            ("0x1F", "\"0x1F\""),
            ("1.5", "\"1.5\""),
            (".5", "\".5\""),
            ("null", "\"null\""),
            ("2015-02-24", "\"2015-02-24\""),
            ("yes", "'yes'"),
            ("off", "'off'"),
            ("1:30", "'1:30'"),
            ("a: b", "'a: b'"),
            ("a:b", "a:b"),
            ("a #b", "'a #b'"),
            ("a#b", "a#b"),
            ("-foo", "-foo"),
            ("-", "'-'"),
            ("- x", "'- x'"),
            ("{}", "'{}'"),
            (" lead", "' lead'"),
            ("trail ", "'trail '"),
            ("it's", "it's"),
            ("'q'", "'''q'''"),
            ("tab\there", "\"tab\\there\""),
            ("nan", "nan"),
            ("---x", "'---x'"),
        ] {
            assert_eq!(inline(s), want, "{s:?}");
        }
        assert_eq!(
            string_value("a\nb\n", 8, true).unwrap(),
            " |\n        a\n        b\n"
        );
        assert_eq!(
            string_value("a\nb", 8, true).unwrap(),
            " |-\n        a\n        b\n"
        );
        assert_eq!(string_value("a\n\n", 4, true).unwrap(), " |+\n    a\n\n");
        assert_eq!(
            string_value("a\n\nb\n", 4, true).unwrap(),
            " |\n    a\n\n    b\n"
        );
        assert_eq!(
            string_value(" a\nb\n", 4, true).unwrap(),
            " |4\n     a\n    b\n"
        );
        assert_eq!(string_value("\n", 4, true).unwrap(), " \"\\n\"\n");
        assert_eq!(string_value("a \nb", 4, true).unwrap(), " \"a \\nb\"\n");
    }

    #[test]
    fn go_key_order() {
        let mut keys = vec!["b", "a10", "a2", "A", "a", "z1", "_x", "1", "10", "9"];
        keys.sort_by(|a, b| key_order(a, b));
        assert_eq!(
            keys,
            ["_x", "1", "9", "10", "A", "a", "a2", "a10", "b", "z1"]
        );
    }

    #[test]
    fn go_floats() {
        for (f, want) in [
            (1.0, "1"),
            (1.5, "1.5"),
            (1e6, "1e+06"),
            (123456789.0, "1.23456789e+08"),
            (0.00001, "1e-05"),
            (0.0001, "0.0001"),
            (100000.0, "100000"),
            (f64::INFINITY, ".inf"),
        ] {
            assert_eq!(float_text(f), want, "{f}");
        }
    }
}
