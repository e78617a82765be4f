// Many small allocations (rows, messages, JSON) on the ingest path: mimalloc spends
// measurably less time on them than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    siyu::cli::main()
}
