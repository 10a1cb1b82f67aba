//! kill -9 of a real `callhook run` process, again and again, while its trace grows:
//! no event may be lost or stored twice. (`benches/crash.rs` runs 50 cycles and prints
//! the figures.)

mod common;

use std::path::Path;

#[test]
fn kill_9_and_restart_loses_and_repeats_nothing() {
    let report = common::crash_cycles(Path::new(env!("CARGO_BIN_EXE_callhook")), 8, 0x5eed_1234, false);
    eprintln!("{report:?}");
    assert_eq!(report.lost, 0, "{report:?}");
    assert_eq!(report.extra, 0, "{report:?}");
    assert_eq!(report.stored, report.expected, "{report:?}");
    // stdout is at-least-once: everything printed at least once
    assert_eq!(report.printed_unique, report.expected, "{report:?}");
}

#[test]
fn kill_9_during_deliveries_loses_no_job() {
    let report = common::crash_cycles(Path::new(env!("CARGO_BIN_EXE_callhook")), 8, 0xdead_beef, true);
    eprintln!("{report:?}");
    assert_eq!(report.lost, 0, "{report:?}");
    assert_eq!(report.jobs, report.expected, "{report:?}");
    // at-least-once: every job arrived; repeats carry the same webhook-id
    assert_eq!(report.jobs_lost, 0, "{report:?}");
}
