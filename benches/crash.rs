//! kill -9 benchmark: `cargo bench --bench crash` (50 cycles; `CYCLES=n` to change).
//! A real `callhook run` process is killed with SIGKILL and restarted while its trace
//! grows; prints how many events were expected, stored, lost, stored twice, and printed
//! twice on stdout, and for the webhook every event makes: jobs lost and repeated deliveries (stdout is at-least-once: a kill between printing and recording it
//! prints that event again after the restart, with the same id).

#[path = "../tests/common/mod.rs"]
mod common;

fn main() {
    let cycles = std::env::var("CYCLES").ok().and_then(|c| c.parse().ok()).unwrap_or(50);
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_callhook"));
    let report = common::crash_cycles(binary, cycles, 0xc0ff_ee00_1234, true);
    println!("kill -9 / restart cycles: {}", report.cycles);
    println!("events expected:          {}", report.expected);
    println!("events stored:            {}", report.stored);
    println!("events lost:              {}", report.lost);
    println!("events duplicated:        {}", report.extra);
    println!("printed (unique):         {}", report.printed_unique);
    println!("printed again after kill: {}", report.printed_duplicates);
    println!("webhook jobs:             {}", report.jobs);
    println!("webhook jobs lost:        {}", report.jobs_lost);
    println!(
        "delivered again (same webhook-id, after a kill): {}",
        report.deliveries_repeated
    );
    if report.lost > 0 || report.extra > 0 || report.jobs_lost > 0 {
        std::process::exit(1);
    }
}
