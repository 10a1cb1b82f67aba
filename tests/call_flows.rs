//! Call flows the tracker must get right, on synthetic PJSIP traces built line by line:
//! what the fixtures cannot show (level-4 challenges, hostile caller IDs, midnight,
//! garbage) and regression cases.

mod common;

use callhook::event::{Direction, EndedBy, Event, EventType, Outcome};
use common::{Trace, invite, replay, request, response};
use proptest::prelude::*;

const CALLER: &str = "\"Alice\" <sip:5551@pbx>";
const PHONE: &str = "<sip:101@pbx>";

fn kinds(events: &[Event]) -> Vec<(String, EventType)> {
    events.iter().map(|e| (e.call_id.clone(), e.kind)).collect()
}

fn ended(events: &[Event]) -> &Event {
    events
        .iter()
        .find(|e| e.kind == EventType::Ended)
        .expect("an ended event")
}

#[test]
fn inbound_answered_and_hung_up_by_caller() {
    let mut t = Trace::new();
    t.sip(true, &invite("c1", CALLER, PHONE, 1))
        .sip(false, &response(180, "c1", CALLER, PHONE, 1, "INVITE"))
        .wait(2500)
        .sip(false, &response(200, "c1", CALLER, PHONE, 1, "INVITE"))
        .wait(10_000)
        .sip(true, &request("BYE", "c1", CALLER, PHONE, 2, ""));
    let (events, errors) = replay(t.text.as_bytes());
    assert!(errors.is_empty());
    assert_eq!(events.len(), 3);
    let e = ended(&events);
    assert_eq!(e.direction, Direction::Inbound);
    assert_eq!(e.remote_number, "5551");
    assert_eq!(e.remote_name.as_deref(), Some("Alice"));
    assert_eq!(e.local_number, "101");
    assert_eq!(
        (e.outcome, e.status_code, e.ended_by),
        (Some(Outcome::Completed), Some(200), Some(EndedBy::Remote))
    );
    assert_eq!((e.ring_s, e.talk_s), (Some(2.5), Some(10.0)));
    assert_eq!(events[0].at.to_string(), "2026-11-23T08:00:00+00:00[UTC]");
}

#[test]
fn challenge_then_credentials_is_one_call_even_without_state_lines() {
    // Level 4: no "State changed" lines, only the messages.
    let mut t = Trace::new();
    t.sip(false, &invite("c2", PHONE, "<sip:5552@pbx>", 1))
        .sip(true, &response(407, "c2", PHONE, "<sip:5552@pbx>", 1, "INVITE"))
        .sip(false, &request("ACK", "c2", PHONE, "<sip:5552@pbx>", 1, ""))
        .sip(false, &invite("c2", PHONE, "<sip:5552@pbx>", 2))
        // a late copy of the challenge must not end the call
        .sip(true, &response(407, "c2", PHONE, "<sip:5552@pbx>", 1, "INVITE"))
        .wait(8000)
        .sip(true, &response(200, "c2", PHONE, "<sip:5552@pbx>", 2, "INVITE"))
        .wait(1000)
        .sip(false, &request("BYE", "c2", PHONE, "<sip:5552@pbx>", 3, ""));
    let (events, _) = replay(t.text.as_bytes());
    let types: Vec<_> = events.iter().map(|e| e.kind).collect();
    assert_eq!(types, [EventType::Ringing, EventType::Answered, EventType::Ended]);
    let e = ended(&events);
    assert_eq!(
        (e.outcome, e.ended_by),
        (Some(Outcome::Completed), Some(EndedBy::Local))
    );
    assert_eq!(e.remote_number, "5552");
}

#[test]
fn rejected_credentials_end_the_call_after_the_follow_up_wait() {
    let mut t = Trace::new();
    t.sip(false, &invite("c3", PHONE, "<sip:5553@pbx>", 1))
        .sip(true, &response(401, "c3", PHONE, "<sip:5553@pbx>", 1, "INVITE"))
        .wait(10_000)
        .line("pjsua_acc.c", "later activity");
    let (events, _) = replay(t.text.as_bytes());
    let e = ended(&events);
    assert_eq!((e.outcome, e.status_code), (Some(Outcome::Failed), Some(401)));
    // ended when the 401 came, not when the wait ran out
    assert_eq!(e.ring_s, Some(0.0));
}

#[test]
fn redirect_not_followed_ends_at_the_invite_state_line() {
    let mut t = Trace::new();
    t.line("inv0x77", "Sending Request msg INVITE/cseq=1 (tdta0x2)")
        .sip(false, &invite("c4", PHONE, "<sip:5554@pbx>", 1))
        .wait(200)
        .sip(true, &response(302, "c4", PHONE, "<sip:5554@pbx>", 1, "INVITE"))
        .line("inv0x77", "State changed from CALLING to DISCONNECTED, event=TSX_STATE");
    let (events, _) = replay(t.text.as_bytes());
    let e = ended(&events);
    assert_eq!((e.outcome, e.status_code), (Some(Outcome::Failed), Some(302)));
}

#[test]
fn invite_timeout_is_no_answer_408() {
    let mut t = Trace::new();
    t.line("inv0x77", "Sending Request msg INVITE/cseq=1 (tdta0x2)")
        .sip(false, &invite("c5", PHONE, "<sip:5555@pbx>", 1))
        .wait(500)
        .sip(false, &invite("c5", PHONE, "<sip:5555@pbx>", 1)) // retransmission
        .wait(32_000)
        .line("inv0x77", "State changed from CALLING to DISCONNECTED, event=TSX_STATE");
    let (events, _) = replay(t.text.as_bytes());
    assert_eq!(events.len(), 2);
    let e = ended(&events);
    assert_eq!((e.outcome, e.status_code), (Some(Outcome::NoAnswer), Some(408)));
}

#[test]
fn reinvites_updates_and_in_dialog_errors_change_nothing() {
    let mut t = Trace::new();
    t.sip(true, &invite("c6", CALLER, PHONE, 1))
        .sip(false, &response(200, "c6", CALLER, PHONE, 1, "INVITE"))
        .sip(false, &response(200, "c6", CALLER, PHONE, 1, "INVITE")) // retransmitted 200
        .sip(true, &request("INVITE", "c6", CALLER, PHONE, 2, "")) // hold (To has a tag)
        .sip(false, &response(488, "c6", CALLER, PHONE, 2, "INVITE"))
        .sip(true, &request("UPDATE", "c6", CALLER, PHONE, 3, ""))
        .sip(false, &response(200, "c6", CALLER, PHONE, 3, "UPDATE"))
        .sip(true, &request("REFER", "c6", CALLER, PHONE, 4, "Refer-To: <sip:9@pbx>"))
        .sip(false, &response(603, "c6", CALLER, PHONE, 4, "REFER"))
        .sip(false, &request("BYE", "c6", CALLER, PHONE, 5, ""));
    let (events, _) = replay(t.text.as_bytes());
    assert_eq!(kinds(&events).len(), 3);
    assert_eq!(
        ended(&events).ended_by,
        Some(EndedBy::Local),
        "refused REFER leaves the call as it was"
    );
}

#[test]
fn late_retransmission_does_not_start_the_call_again() {
    let mut t = Trace::new();
    t.sip(true, &invite("c7", CALLER, PHONE, 1))
        .sip(true, &request("CANCEL", "c7", CALLER, PHONE, 1, ""))
        .sip(false, &response(487, "c7", CALLER, PHONE, 1, "INVITE"))
        .sip(true, &invite("c7", CALLER, PHONE, 1));
    let (events, _) = replay(t.text.as_bytes());
    assert_eq!(events.len(), 2);
    assert_eq!(ended(&events).outcome, Some(Outcome::Missed));
}

#[test]
fn noise_dialogs_are_never_calls() {
    let mut t = Trace::new();
    for (i, method) in ["REGISTER", "OPTIONS", "SUBSCRIBE", "NOTIFY", "MESSAGE"]
        .iter()
        .enumerate()
    {
        let text = format!(
            "{method} sip:101@pbx SIP/2.0\nFrom: <sip:5551@pbx>;tag=a\nTo: <sip:101@pbx>\nCall-ID: n{i}\nCSeq: 1 {method}\nContent-Length: 0"
        );
        t.sip(true, &text)
            .sip(false, &response(200, &format!("n{i}"), CALLER, PHONE, 1, method));
    }
    let (events, errors) = replay(t.text.as_bytes());
    assert!(events.is_empty() && errors.is_empty());
}

#[test]
fn compact_headers_and_odd_case() {
    let text = "INVITE sip:101@pbx SIP/2.0\nv: SIP/2.0/UDP h\nf: \"Comp\" <sip:5558@pbx>;tag=1\nt: <sip:101@pbx>\ni: compact-1\ncseq: 1 INVITE\nl: 0";
    let mut t = Trace::new();
    t.sip(true, text);
    let (events, _) = replay(t.text.as_bytes());
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].remote_number.as_str(), events[0].remote_name.as_deref()),
        ("5558", Some("Comp"))
    );
    assert_eq!(events[0].call_id, "compact-1");
}

#[test]
fn asserted_identity_when_configured() {
    let text = invite("c9", "\"Anonymous\" <sip:anonymous@pbx>", PHONE, 1).replace(
        "Content-Length",
        "P-Asserted-Identity: \"Real Caller\" <sip:+4930123@pbx>\nContent-Length",
    );
    let mut t = Trace::new();
    t.sip(true, &text);
    let (plain, _) = replay(t.text.as_bytes());
    assert_eq!(plain[0].remote_number, "anonymous");
    let (asserted, _) = common::replay_chunked(t.text.as_bytes(), 1 << 20, |c| c.prefer_asserted_identity = true);
    assert_eq!(asserted[0].remote_number, "+4930123");
    assert_eq!(asserted[0].remote_name.as_deref(), Some("Real Caller"));
}

#[test]
fn hostile_display_names_stay_inert_data() {
    let names = [
        (r#""a \"quoted\" \\ name""#, "a \"quoted\" \\ name"),
        (
            r#""$(touch /tmp/pwned) `id` ; rm -rf /""#,
            "$(touch /tmp/pwned) `id` ; rm -rf /",
        ),
        (r#""{{ 7*7 }} ${env:HOME}""#, "{{ 7*7 }} ${env:HOME}"),
        ("\"Jörg 李 🙂\"", "Jörg 李 🙂"),
        ("\"\u{202E}3pm.exe\u{2066}x\u{0007}\"", "3pm.exex"),
        ("\"Tab\tName\"", "Tab Name"),
        (r#""</script><b>""#, "</script><b>"),
    ];
    for (i, (display, want)) in names.iter().enumerate() {
        let mut t = Trace::new();
        t.sip(
            true,
            &invite(&format!("h{i}"), &format!("{display} <sip:%2B49%24(x)@pbx>"), PHONE, 1),
        );
        let (events, _) = replay(t.text.as_bytes());
        let event = &events[0];
        assert_eq!(event.remote_name.as_deref(), Some(*want), "{display}");
        assert_eq!(event.remote_number, "+49$(x)");
        // The JSON form carries the text as a string value, nothing else.
        let json: serde_json::Value = serde_json::from_str(&event.to_json()).unwrap();
        assert_eq!(json["remote_name"], *want);
        assert_eq!(json.as_object().unwrap().len(), 11);
    }
}

#[test]
fn midnight_rollover_moves_the_date() {
    let mut t = Trace::new();
    t.at("23:59:58")
        .sip(true, &invite("m1", CALLER, PHONE, 1))
        .wait(1000)
        .sip(false, &response(200, "m1", CALLER, PHONE, 1, "INVITE"))
        .wait(3000)
        .sip(true, &request("BYE", "m1", CALLER, PHONE, 2, ""));
    let (events, _) = replay(t.text.as_bytes());
    assert_eq!(events[0].at.to_string(), "2026-11-23T23:59:58+00:00[UTC]");
    assert_eq!(events[2].at.to_string(), "2026-11-24T00:00:02+00:00[UTC]");
    assert_eq!(events[2].talk_s, Some(3.0));
}

#[test]
fn crlf_trace_with_dates() {
    let mut t = Trace::crlf();
    t.sip(true, &invite("d1", CALLER, PHONE, 1));
    let dated = t.text.replace("08:00:00.000", "2025-02-03 08:00:00.000");
    let (events, _) = replay(dated.as_bytes());
    assert_eq!(events[0].at.to_string(), "2025-02-03T08:00:00+00:00[UTC]");
}

#[test]
fn message_cut_at_4000_bytes_still_starts_the_call() {
    let big = format!("X-Padding: {}\n", "p".repeat(300)).repeat(20);
    let text = invite("cut1", CALLER, PHONE, 1).replace("Content-Length: 0", &format!("{big}Content-Length: 0"));
    let mut t = Trace::new();
    t.sip(true, &text);
    // What PJSIP writes: the entry cut at 4000 bytes, no end marker.
    let full = t.text.clone();
    let cut_at = 4000.min(full.len());
    let mut log = full[..cut_at].to_owned();
    log.push('\n');
    let mut rest = Trace::new();
    rest.wait(5)
        .line("pjsua_call.c", "Incoming Request msg INVITE/cseq=1 (rdata0x1)");
    log.push_str(&rest.text);
    let (events, errors) = replay(log.as_bytes());
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].call_id, "cut1");
}

#[test]
fn garbage_gives_errors_or_nothing() {
    let (events, errors) = replay(b"");
    assert!(events.is_empty() && errors.is_empty());
    let binary: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let (events, _) = replay(&binary);
    assert!(events.is_empty());
    // A 10 MB line between two calls: reported with its line, the calls still come.
    let mut t = Trace::new();
    t.sip(true, &invite("g1", CALLER, PHONE, 1));
    let mut log = t.text.clone().into_bytes();
    let long_line_no = t.text.lines().count() + 1;
    log.extend(std::iter::repeat_n(b'A', 10 << 20));
    log.push(b'\n');
    let mut after = Trace::new();
    after.wait(10).sip(true, &invite("g2", CALLER, PHONE, 1));
    log.extend_from_slice(after.text.as_bytes());
    let (events, errors) = replay(&log);
    assert_eq!(events.len(), 2);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].line as usize, long_line_no);
    assert_eq!(
        errors[0].to_string(),
        format!("line {long_line_no}: line longer than 65536 bytes, cut")
    );
}

#[test]
fn unreadable_sip_message_is_reported_with_its_line_and_skipped() {
    let mut t = Trace::new();
    t.sip(true, "INVITE sip:1@h SIP/2.0\nFrom: <sip:1@h>\nCSeq: 1 INVITE")
        .sip(true, &invite("ok", CALLER, PHONE, 1));
    let (events, errors) = replay(t.text.as_bytes());
    assert_eq!(events.len(), 1);
    assert_eq!(errors.len(), 1);
    assert_eq!(
        errors[0].to_string(),
        "line 1: unreadable SIP message: missing Call-ID header"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Random bytes, and real traces with random bytes spliced in, never panic.
    #[test]
    fn never_panics(noise in proptest::collection::vec(any::<u8>(), 0..4000), at in 0usize..100_000, chunk in 1usize..5000) {
        let _ = common::replay_chunked(&noise, chunk, |_| {});
        let fixture = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pjsip/basic/phone.log")).unwrap();
        let at = at.min(fixture.len());
        let mut spliced = fixture[..at].to_vec();
        spliced.extend_from_slice(&noise);
        spliced.extend_from_slice(&fixture[at..]);
        let _ = common::replay_chunked(&spliced, chunk, |_| {});
    }

    /// How the bytes are chunked never changes the events.
    #[test]
    fn chunking_does_not_change_events(chunk in 1usize..3000) {
        let fixture = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pjsip/mixed-tcp/phone.log")).unwrap();
        let whole = common::replay(&fixture).0;
        let chunked = common::replay_chunked(&fixture, chunk, |_| {}).0;
        prop_assert_eq!(whole, chunked);
    }
}

#[test]
fn crlf_date_fixture_in_small_chunks() {
    let fixture = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/pjsip/crlf-date/phone.log"
    ))
    .unwrap();
    for chunk in [1, 2, 3, 7, 100, 4096] {
        let got = common::replay_chunked(&fixture, chunk, |_| {}).0;
        assert_eq!(got.len(), 7, "chunk {chunk}");
    }
}

/// Black-box finding: an attended transfer whose NOTIFY reports failure leaves the
/// consultation call as it was; its later end is whoever hangs up.
#[test]
fn failed_attended_transfer_does_not_blame_the_phone() {
    let (a, c) = ("<sip:5551@pbx>", "<sip:5552@pbx>");
    let mut t = Trace::new();
    t.sip(false, &invite("first", PHONE, a, 1))
        .sip(true, &response(200, "first", PHONE, a, 1, "INVITE"))
        .sip(false, &invite("consult", PHONE, c, 1))
        .sip(true, &response(200, "consult", PHONE, c, 1, "INVITE"))
        .sip(
            false,
            &request(
                "REFER",
                "first",
                PHONE,
                a,
                2,
                "Refer-To: <sip:5552@pbx?Replaces=consult%3Bto-tag%3Dtt%3Bfrom-tag%3Dft>",
            ),
        )
        .sip(true, &response(202, "first", PHONE, a, 2, "REFER"))
        .sip(
            true,
            &request(
                "NOTIFY",
                "first",
                a,
                PHONE,
                3,
                "Event: refer\nContent-Type: message/sipfrag",
            )
            .replace(
                "Content-Length: 0",
                "Content-Length: 30\n\nSIP/2.0 500 Server Internal Error",
            ),
        )
        .wait(2000)
        .sip(true, &request("BYE", "consult", PHONE, c, 2, ""))
        .sip(true, &request("BYE", "first", PHONE, a, 3, ""));
    let (events, errors) = replay(t.text.as_bytes());
    assert!(errors.is_empty(), "{errors:?}");
    for call in ["consult", "first"] {
        let e = events
            .iter()
            .find(|e| e.call_id == call && e.kind == EventType::Ended)
            .unwrap();
        assert_eq!(e.ended_by, Some(EndedBy::Remote), "{call}");
    }
}

/// Black-box finding: the phone hangs up an outbound call that got no response yet
/// (PJSIP delays its CANCEL); for the user it was cancelled then, at log level 4 too.
#[test]
fn hang_up_before_any_response_is_cancelled_at_once() {
    let mut t = Trace::new();
    t.line("pjsua_call.c", "Making call with acc #0 to sip:5553@pbx")
        .line("pjsua_media.c", "Call 4: initializing media..")
        .sip(false, &invite("early", PHONE, "<sip:5553@pbx>", 1))
        .wait(1000)
        .line("pjsua_call.c", "Call 4 hanging up: code=0..")
        .line("pjsua_media.c", "Call 4: deinitializing media..");
    let (events, _) = replay(t.text.as_bytes());
    let e = ended(&events);
    assert_eq!(
        (e.outcome, e.status_code, e.ring_s),
        (Some(Outcome::Cancelled), Some(487), Some(1.0))
    );
}
