//! `callhook run` on MicroSIP's `microsip.ini`, rewritten whole and in place (UTF-16LE)
//! as MicroSIP does on every change of its call list.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Daemon, write_ini};

fn daemon(ini: &Path, state: &Path, start_at: callhook::source::config::StartAt) -> Daemon {
    let mut source = callhook::source::config::Source::sip_trace(ini);
    source.kind = callhook::event::SourceKind::History.into();
    source.poll_interval = Duration::from_millis(20);
    source.time_zone = jiff::tz::TimeZone::UTC;
    source.start_at = start_at;
    Daemon::with_config(callhook::config::Config::with_sources(state, vec![source]))
}

#[test]
fn rewrites_in_place_become_ringing_answered_ended_once() {
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("microsip.ini");
    let state = dir.path().join("state");
    let old = "5550000;Old Call;1;1795420000;30;";
    write_ini(&ini, &[old]);
    let d = daemon(&ini, &state, callhook::source::config::StartAt::End);
    d.quiet_for(300); // the old call is not reported
    // an inbound call starts (type 2), is answered (2 → 1), ends (duration set)
    write_ini(&ini, &[old, "5551234;Alice \"A\";2;1795422856;0;"]);
    let ringing = d.take(1);
    assert_eq!(
        (ringing[0]["type"].as_str(), ringing[0]["direction"].as_str()),
        (Some("ringing"), Some("inbound"))
    );
    assert_eq!(ringing[0]["remote_name"], "Alice \"A\"");
    std::thread::sleep(Duration::from_millis(50));
    write_ini(&ini, &[old, "5551234;Alice \"A\";1;1795422856;0;"]);
    assert_eq!(d.take(1)[0]["type"], "answered");
    std::thread::sleep(Duration::from_millis(50));
    write_ini(&ini, &[old, "5551234;Alice \"A\";1;1795422856;42;"]);
    let ended = d.take(1);
    assert_eq!(
        (ended[0]["type"].as_str(), ended[0]["outcome"].as_str()),
        (Some("ended"), Some("completed"))
    );
    d.quiet_for(200);
    d.stop();
    // restart: nothing repeats; a missed call that comes later is reported
    let d = daemon(&ini, &state, callhook::source::config::StartAt::End);
    d.quiet_for(300);
    write_ini(
        &ini,
        &[
            old,
            "5551234;Alice \"A\";1;1795422856;42;",
            "5559999;;2;1795423000;0;Missed Call",
        ],
    );
    let events = d.take(2);
    assert_eq!(events[0]["type"], "ringing");
    assert_eq!(
        (events[1]["type"].as_str(), events[1]["outcome"].as_str()),
        (Some("ended"), Some("missed"))
    );
    d.quiet_for(200);
}
