//! Calls whose end the log never shows are not kept forever: silent for longer than
//! `max_idle` they end as `unknown`, and over `max_open` the longest-silent end first.

mod common;

use common::{Trace, invite, replay_chunked};

fn inbound(trace: &mut Trace, ms_of_day: u64, index: usize) {
    trace.at_ms(ms_of_day).sip(
        true,
        &invite(
            &format!("open-{index}@pbx"),
            &format!("<sip:{}@pbx>", 5550000 + index),
            "<sip:101@pbx>",
            1,
        ),
    );
}

#[test]
fn a_call_silent_for_hours_ends_as_unknown() {
    let mut trace = Trace::new();
    inbound(&mut trace, 8 * 3_600_000, 0);
    // Five hours later, enough other calls for the tracker to look.
    for i in 1..5000 {
        inbound(&mut trace, 13 * 3_600_000 + i as u64, i);
    }
    let (events, errors) = replay_chunked(trace.text.as_bytes(), 1 << 20, |c| c.max_open = 100_000);
    assert!(errors.is_empty(), "{errors:?}");
    let ended: Vec<_> = events.iter().filter(|e| e.call_id == "open-0@pbx").collect();
    assert_eq!(ended.len(), 2, "{ended:?}");
    assert_eq!(ended[1].outcome.map(|o| o.as_str()), Some("unknown"));
    // Ended at the time it was last seen, not hours later.
    assert_eq!(ended[1].at, ended[0].at);
    assert_eq!(events.iter().filter(|e| e.outcome.is_some()).count(), 1);
}

#[test]
fn over_the_cap_the_longest_silent_calls_end_first() {
    let mut trace = Trace::new();
    for i in 0..300 {
        inbound(&mut trace, 8 * 3_600_000 + i as u64 * 10, i);
    }
    let (events, _) = replay_chunked(trace.text.as_bytes(), 1 << 20, |c| c.max_open = 100);
    let ended: Vec<&str> = events
        .iter()
        .filter(|e| e.outcome.is_some())
        .map(|e| e.call_id.as_str())
        .collect();
    // Each time the cap is passed, down to 90: the oldest go, in order.
    assert!(ended.len() >= 200 && ended.len() <= 210, "{}", ended.len());
    assert_eq!(ended[0], "open-0@pbx");
    assert!(ended.iter().all(|id| {
        id.trim_start_matches("open-")
            .trim_end_matches("@pbx")
            .parse::<usize>()
            .unwrap()
            < 210
    }));
}
