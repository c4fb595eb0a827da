//! `hibernator-runner`: performs one hibernate or wake-up of one target. See the library.

fn main() -> std::process::ExitCode {
    hibernator_runner::main()
}
