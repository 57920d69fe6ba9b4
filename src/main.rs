fn main() -> std::process::ExitCode {
    strangler::cli::main()
}
