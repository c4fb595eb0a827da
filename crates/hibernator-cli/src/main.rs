//! `kubectl-hibernator`: see `kubectl hibernator --help`.

fn main() -> std::process::ExitCode {
    hibernator_cli::main()
}
