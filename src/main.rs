//! The `sensorium` command line: parses, builds the engine from a config, maps errors to
//! exit codes. All behaviour lives in the library crates; `cli.rs` holds the glue.

mod answers;
mod bundle;
mod cli;
mod output;
mod sources;
mod train;

/// mimalloc rather than glibc's malloc: candle allocates a fresh buffer for every tensor, and
/// glibc hands each large one straight back to the kernel (`munmap`), so every step of
/// training or inference paid page faults and TLB shootdowns for the same memory again.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    pin_thread_count();
    cli::main()
}

/// candle asks for its thread count on every matmul and, unless `RAYON_NUM_THREADS` is set,
/// re-reads `/proc/cpuinfo` each time to count physical cores (candle-core 0.11.1,
/// `utils::get_num_threads`): thousands of reads per training step. Settle the count once,
/// as candle would (physical cores), before any thread starts. A user's own setting stands.
fn pin_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = num_cpus::get_physical().max(1);
        // Single-threaded here: nothing else reads the environment yet.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
}
