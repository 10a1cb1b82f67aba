//! Patterns from PJSIP logs users posted in public bug reports of other PJSIP
//! applications, rebuilt with the test trace writer: what the log shows must be read
//! right even when a message is missing from it.

mod common;

use common::{Trace, invite, replay, request, response};

const PHONE: &str = "<sip:101@pbx>";
const PEER: &str = "<sip:5551234@pbx>";

/// An outbound call whose 200 OK is not in the log (cut, or logged elsewhere), ended by
/// a BYE from the far end: only a callee in a confirmed dialog can send BYE, so the call
/// was answered; it is not a cancelled call with a 487 the log never had.
#[test]
fn a_bye_from_the_callee_means_answered_even_without_its_200() {
    let id = "lost-200@pbx";
    let mut trace = Trace::new();
    trace
        .at("10:00:00")
        .sip(false, &invite(id, PHONE, PEER, 1))
        .at("10:00:01")
        .sip(true, &response(180, id, PHONE, PEER, 1, "INVITE"))
        .at("10:00:30")
        .sip(true, &request("BYE", id, PEER, PHONE, 1, ""));
    let (events, errors) = replay(trace.text.as_bytes());
    assert!(errors.is_empty(), "{errors:?}");
    let types: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(types, ["ringing", "answered", "ended"], "{events:#?}");
    let ended = &events[2];
    assert_eq!(ended.outcome.map(|o| o.as_str()), Some("completed"));
    assert_eq!(ended.status_code, Some(200));
    assert_eq!(ended.ended_by.map(|b| b.as_str()), Some("remote"));
}

/// The caller's BYE before any answer is still the caller giving up.
#[test]
fn a_bye_from_the_caller_before_an_answer_is_still_a_cancel() {
    let id = "early-bye@pbx";
    let mut trace = Trace::new();
    trace
        .at("10:00:00")
        .sip(false, &invite(id, PHONE, PEER, 1))
        .at("10:00:01")
        .sip(true, &response(180, id, PHONE, PEER, 1, "INVITE"))
        .at("10:00:05")
        .sip(false, &request("BYE", id, PHONE, PEER, 2, ""));
    let (events, _) = replay(trace.text.as_bytes());
    let ended = events.last().unwrap();
    assert_eq!(ended.outcome.map(|o| o.as_str()), Some("cancelled"), "{events:#?}");
}

/// What a replay reported of each call, by remote number: direction, event types, and
/// the ended event's outcome.
fn calls_by_number(
    events: &[callhook::event::Event],
) -> std::collections::BTreeMap<String, (String, Vec<String>, String)> {
    let mut calls = std::collections::BTreeMap::new();
    for event in events {
        let entry = calls
            .entry(event.remote_number.clone())
            .or_insert_with(|| (event.direction.as_str().to_owned(), Vec::new(), String::new()));
        entry.1.push(event.kind.as_str().to_owned());
        if let Some(outcome) = event.outcome {
            entry.2 = outcome.as_str().to_owned();
        }
    }
    calls
}

/// The `mid-call` fixture (four calls recorded with the generator: inbound answered,
/// outbound answered, outbound busy, inbound missed) from the first log line holding
/// `marker` on, as a log switched on there (or cut before it) would be.
fn mid_call_log_from(marker: &str) -> Vec<u8> {
    let log = String::from_utf8(common::fixture("mid-call")).unwrap();
    let at = log
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} not in the fixture"));
    let line_start = log[..at].rfind('\n').map_or(0, |n| n + 1);
    log.as_bytes()[line_start..].to_vec()
}

/// Calls whose INVITE is not in the log (issue 19) are reported from their responses,
/// ACK, CANCEL and in-dialog requests, with direction, numbers and outcome.
#[test]
fn calls_whose_invite_is_not_in_the_log() {
    let all = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let answered = all(&["ringing", "answered", "ended"]);
    let unanswered = all(&["ringing", "ended"]);
    /// Remote number, direction (`None`: not knowable), event types, outcome.
    type Want<'a> = (&'a str, Option<&'a str>, &'a [String], &'a str);
    let cases: &[(&str, &[Want])] = &[
        // Every INVITE's answer is still in the log.
        (
            "Response msg 100/INVITE",
            &[
                ("5552001", Some("inbound"), &answered, "completed"),
                ("5551003", Some("outbound"), &answered, "completed"),
                ("5551004", Some("outbound"), &unanswered, "busy"),
                ("5552002", Some("inbound"), &unanswered, "missed"),
            ],
        ),
        // No INVITE left; final answers, the CANCEL and the BYEs are.
        (
            "Response msg 200/INVITE",
            &[
                ("5552001", Some("inbound"), &answered, "completed"),
                ("5551003", Some("outbound"), &answered, "completed"),
                ("5551004", Some("outbound"), &unanswered, "busy"),
                ("5552002", Some("inbound"), &unanswered, "missed"),
            ],
        ),
        // Only the CANCEL of the missed call and the BYEs of the answered ones; the
        // busy call left nothing. The BYE of the callee alone cannot tell who called.
        (
            "Request msg CANCEL",
            &[
                ("5552001", Some("inbound"), &answered, "completed"),
                ("5551003", None, &answered, "completed"),
                ("5552002", Some("inbound"), &unanswered, "missed"),
            ],
        ),
        (
            "Request msg BYE",
            &[
                ("5552001", Some("inbound"), &answered, "completed"),
                ("5551003", None, &answered, "completed"),
            ],
        ),
    ];
    for (marker, want) in cases {
        let (events, errors) = replay(&mid_call_log_from(marker));
        assert!(errors.is_empty(), "{marker}: {errors:?}");
        let got = calls_by_number(&events);
        assert_eq!(got.len(), want.len(), "{marker}: {got:#?}");
        for (number, direction, types, outcome) in want.iter() {
            let call = got
                .get(*number)
                .unwrap_or_else(|| panic!("{marker}: {number} not reported: {got:#?}"));
            if let Some(direction) = direction {
                assert_eq!(call.0, *direction, "{marker}: {number}");
            }
            assert_eq!(&call.1, types, "{marker}: {number}");
            assert_eq!(call.2, *outcome, "{marker}: {number}");
        }
        for event in &events {
            assert_eq!(
                event.ended_by.map(|b| b.as_str()).unwrap_or("remote"),
                "remote",
                "{marker}: {event:?}"
            );
        }
    }
}

/// A log cut before a call's end reports what it shows: the call rang and was
/// answered, and it stays open (a live source ends it as `unknown` once idle).
#[test]
fn a_log_cut_mid_call_leaves_the_call_open() {
    let log = String::from_utf8(common::fixture("mid-call")).unwrap();
    let cut = log.find("Request msg BYE").unwrap();
    let head = &log[..log[..cut].rfind('\n').unwrap() + 1];
    let (events, _) = replay(head.as_bytes());
    let got = calls_by_number(&events);
    assert_eq!(got["5552001"].1, ["ringing", "answered"]);
    assert_eq!(got["5551004"].2, "busy");
}

/// `log` with every SIP message naming `name` naming `long` instead, each log entry
/// then cut at 4000 bytes as PJSIP's logger does (`PJ_LOG_MAX_SIZE`): the rest of the
/// message and its `--end msg--` line are lost.
fn with_long_name(log: &str, name: &str, long: &str) -> String {
    let mut out = String::new();
    let mut entry: Option<String> = None;
    for line in log.split_inclusive('\n') {
        if let Some(text) = &mut entry {
            text.push_str(line);
            if line.trim_end() == "--end msg--" {
                let text = entry.take().unwrap().replace(name, long);
                if text.len() > 4000 {
                    out.push_str(&text[..4000]);
                    out.push('\n');
                } else {
                    out.push_str(&text);
                }
            }
        } else if line.contains(" bytes Request msg ") || line.contains(" bytes Response msg ") {
            entry = Some(line.to_owned());
        } else {
            out.push_str(line);
        }
    }
    out
}

/// A caller name of ~3.8 KB makes PJSIP cut the logged INVITE (and its ACK and BYE)
/// before `Call-ID` (issue 19: 3 calls reported of 4). The dialog and transaction lines
/// that handle those messages tie them to the call, which is reported whole.
#[test]
fn messages_cut_before_their_call_id_are_tied_to_their_call() {
    let long = "Z".repeat(3800);
    let log = with_long_name(
        &String::from_utf8(common::fixture("basic")).unwrap(),
        "Alice Example",
        &long,
    );
    let (events, errors) = replay(log.as_bytes());
    assert!(errors.is_empty(), "{errors:?}");
    let calls: std::collections::BTreeSet<&str> = events.iter().map(|e| e.call_id.as_str()).collect();
    assert_eq!(calls.len(), 4, "{events:#?}");
    let alice: Vec<_> = events
        .iter()
        .filter(|e| e.call_id == "Ms4y0Y55NYDBdj0AqHpTPOGHGTr-WPRo")
        .collect();
    let types: Vec<&str> = alice.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(types, ["ringing", "answered", "ended"]);
    assert_eq!(alice[0].direction.as_str(), "inbound");
    assert!(alice[0].remote_name.as_deref().unwrap_or_default().starts_with("ZZZZ"));
    let ended = alice[2];
    assert_eq!(ended.outcome.map(|o| o.as_str()), Some("completed"));
    assert_eq!(ended.ended_by.map(|b| b.as_str()), Some("remote"));
}

/// A cut message that no line ties to a call is reported with its line, not dropped
/// silently; the rest of the log reads on.
#[test]
fn a_cut_message_no_line_names_is_reported_with_its_line() {
    let long = "Z".repeat(3800);
    let log = with_long_name(
        &String::from_utf8(common::fixture("basic")).unwrap(),
        "Alice Example",
        &long,
    );
    // Only the INVITE's own block: the lines that handle it are gone.
    let start = log.find("RX 1229 bytes").unwrap();
    let start = log[..start].rfind('\n').unwrap() + 1;
    let end = start + log[start..].find("\n08:").unwrap() + 1;
    let (events, errors) = replay(&log.as_bytes()[start..end]);
    assert!(events.is_empty());
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].line, 1);
    assert!(
        errors[0].to_string().contains("cut before its Call-ID"),
        "{}",
        errors[0]
    );
}
