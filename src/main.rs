fn main() -> std::process::ExitCode {
    retrace::cli::main_with(retrace::registry::Registry::builtin())
}
