//! Kernel command line parsing (the keys are described in `docs/formats/cmdline.md`).
//!
//! Read by stage 2 (and by the error path of both stages, for the poweroff flag); the network
//! and the services read their own keys from it. In: the text of `/proc/cmdline`. Out: ordered
//! `key[=value]` pairs. Double quotes group words (`key="a b"`) and are removed, as the kernel
//! does for init's arguments.

/// A parsed kernel command line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Cmdline {
    args: Vec<(String, Option<String>)>,
}

impl Cmdline {
    /// Reads and parses `/proc/cmdline` (empty if it cannot be read).
    pub fn read() -> Self {
        Self::parse(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default())
    }

    /// Parses a command line.
    pub fn parse(text: &str) -> Self {
        let mut args = Vec::new();
        let mut cur = String::new();
        let mut in_quotes = false;
        let mut has = false;
        let push = |cur: &mut String, args: &mut Vec<(String, Option<String>)>| {
            let s = std::mem::take(cur);
            match s.split_once('=') {
                Some((k, v)) => args.push((k.to_string(), Some(v.to_string()))),
                None => args.push((s, None)),
            }
        };
        for c in text.chars() {
            match c {
                '"' => {
                    in_quotes = !in_quotes;
                    has = true;
                }
                c if c.is_whitespace() && !in_quotes => {
                    if has {
                        push(&mut cur, &mut args);
                        has = false;
                    }
                }
                c => {
                    cur.push(c);
                    has = true;
                }
            }
        }
        if has {
            push(&mut cur, &mut args);
        }
        Self { args }
    }

    /// The last value given for `key` (`Some("")` for a bare `key` or `key=`).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_deref().unwrap_or(""))
    }

    /// Every value of `key`, in order.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.args
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_deref().unwrap_or(""))
    }

    /// Whether a flag is set: present bare, or with a value other than `0`/`false`/`no`.
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some(v) if !matches!(v, "0" | "false" | "no" | "off"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_quotes_and_flags() {
        let c = Cmdline::parse(
            "console=tty0 console=ttyS0 quiet x=\"a b\" talos.environment=K=V node_runtime.test_poweroff=0\n",
        );
        assert_eq!(c.get("console"), Some("ttyS0"));
        assert_eq!(
            c.get_all("console").collect::<Vec<_>>(),
            vec!["tty0", "ttyS0"]
        );
        assert_eq!(c.get("x"), Some("a b"));
        assert_eq!(c.get("talos.environment"), Some("K=V"));
        assert!(c.flag("quiet"));
        assert!(!c.flag("node_runtime.test_poweroff"));
        assert!(!c.flag("missing"));
    }
}
