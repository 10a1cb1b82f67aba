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
