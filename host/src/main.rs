//! The `fixsec-workspace` binary. See `fixsec-workspace --help`.

fn main() -> std::process::ExitCode {
    fixsec_workspace::cli::main()
}
