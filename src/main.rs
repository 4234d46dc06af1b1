//! The `sensorium` command line: parses, builds the engine from a config, maps errors to
//! exit codes. All behaviour lives in the library crates (each subcommand's work in
//! `sensorium-app`); `cli.rs` holds the argument parsing and dispatch, `logging.rs` the
//! subscriber.

mod cli;
mod logging;

/// mimalloc rather than glibc's malloc: candle allocates a fresh buffer for every tensor, and
/// glibc hands each large one straight back to the kernel (`munmap`), so every step of
/// training or inference paid page faults and TLB shootdowns for the same memory again.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Library errors (candle's) carry a backtrace when RUST_BACKTRACE is set: error lines
    // stay one line unless the user asks for library backtraces themselves. Set before any
    // thread exists.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    sensorium_models::pin_thread_count();
    cli::main()
}
