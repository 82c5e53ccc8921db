//! `imager completion SHELL` and `imager man --output DIR`: shell completions and man pages
//! generated from the clap definitions, so they never disagree with `--help`.

use super::Cli;
use crate::error::{Error, ExitCode, Result, WithCode};
use clap::CommandFactory;
use std::path::PathBuf;

/// Arguments of `imager completion`.
#[derive(clap::Args, Debug)]
pub struct CompletionArgs {
    /// bash, zsh, fish, elvish or powershell.
    shell: clap_complete::Shell,
}

/// Arguments of `imager man`.
#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// Directory for `imager.1` and one `imager-<subcommand>.1` per subcommand.
    #[arg(long)]
    output: PathBuf,
}

/// Prints the completion script for a shell.
pub fn completion(a: &CompletionArgs) -> Result<()> {
    let mut cmd = Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "imager", &mut std::io::stdout());
    Ok(())
}

/// Every man page: (file name, roff): `imager.1`, then one per subcommand at any depth
/// (`imager-cache-prune.1`).
pub fn man_pages() -> Result<Vec<(String, Vec<u8>)>> {
    fn walk(c: &clap::Command, name: &str, out: &mut Vec<(String, Vec<u8>)>) -> Result<()> {
        let mut buf = Vec::new();
        clap_mangen::Man::new(c.clone().name(name.to_string()))
            .render(&mut buf)
            .map_err(|e| Error::new(ExitCode::Unknown, anyhow::anyhow!("man page {name}: {e}")))?;
        out.push((format!("{name}.1"), buf));
        for sub in c.get_subcommands() {
            walk(sub, &format!("{name}-{}", sub.get_name()), out)?;
        }
        Ok(())
    }
    let cmd = Cli::command().version(super::VERSION.as_str());
    let mut pages = Vec::new();
    walk(&cmd, "imager", &mut pages)?;
    Ok(pages)
}

/// Writes the man pages.
pub fn man(a: &ManArgs) -> Result<()> {
    std::fs::create_dir_all(&a.output)
        .code(ExitCode::Io, || format!("creating {}", a.output.display()))?;
    for (name, roff) in man_pages()? {
        let p = a.output.join(&name);
        std::fs::write(&p, roff).code(ExitCode::Io, || format!("writing {}", p.display()))?;
        eprintln!("imager: wrote {}", p.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Every long flag of a command and its subcommands, with the command's name.
    fn flags(c: &clap::Command, path: &str, out: &mut Vec<(String, String)>) {
        for a in c.get_arguments() {
            if let Some(l) = a.get_long() {
                out.push((path.to_string(), format!("--{l}")));
            }
        }
        for s in c.get_subcommands() {
            flags(s, &format!("{path}-{}", s.get_name()), out);
        }
    }

    #[test]
    fn completions_and_man_pages_mention_every_flag() {
        let cmd = Cli::command();
        let mut all = Vec::new();
        flags(&cmd, "imager", &mut all);
        assert!(all.len() > 60, "{} flags", all.len());
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "imager", &mut buf);
            let text = String::from_utf8(buf).unwrap();
            for (_, f) in &all {
                // fish lists long flags without their dashes (`-l output`)
                let bare = f.trim_start_matches('-');
                assert!(
                    text.contains(f.as_str()) || text.contains(&format!("-l {bare}")),
                    "{shell:?} completion lacks {f}"
                );
            }
        }
        let pages = man_pages().unwrap();
        for (page, f) in &all {
            let (_, roff) = pages
                .iter()
                .find(|(n, _)| n == &format!("{page}.1"))
                .unwrap_or_else(|| panic!("no man page {page}.1"));
            let text = String::from_utf8_lossy(roff);
            // roff escapes dashes as \-
            let escaped = f.replace('-', "\\-");
            assert!(
                text.contains(&escaped) || text.contains(f.as_str()),
                "{page}.1 lacks {f}"
            );
        }
        assert!(String::from_utf8_lossy(&pages[0].1).contains(env!("CARGO_PKG_VERSION")));
    }
}
