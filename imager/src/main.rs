//! `imager`: builds boot media from a profile (see `imager --help` and docs/ARCHITECTURE.md).

fn main() {
    std::process::exit(imager::cli::main());
}
