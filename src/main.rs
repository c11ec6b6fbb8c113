fn main() -> std::process::ExitCode {
    mobix::cli::main()
}
