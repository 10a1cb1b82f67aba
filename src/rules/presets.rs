//! Ready-made bodies for known receivers, each written from the receiver's own code or
//! documentation (cited at each function). Caller ID is hostile: every body is built by
//! a serializer (JSON, form encoding), never by pasting strings, and chat texts escape
//! what the chat would otherwise read as markup or mentions.

use serde::{Deserialize, Serialize};

use crate::event::{Direction, Event, EventType, Outcome};

/// `preset:` of a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// The event as JSON.
    Generic,
    /// Zammad's generic CTI API.
    ZammadCti,
    /// A Slack incoming webhook (`{"text": …}`, Slack's escaping).
    Slack,
    /// A Mattermost incoming webhook (Slack-compatible, plus Mattermost's mentions).
    Mattermost,
    /// A Microsoft Teams Workflows webhook: an Adaptive Card in a message.
    Teams,
    /// A Discord webhook (`{"content": …}`, no mentions allowed, Markdown escaped).
    Discord,
    /// ntfy: the text as a `text/plain` body.
    Ntfy,
}

impl Preset {
    /// Whether the receiver keeps state per call, so it must get a call whole or not at
    /// all (`scope: call` is its default).
    pub fn needs_whole_calls(self) -> bool {
        self == Preset::ZammadCti
    }

    /// Whether the preset sends a chat text (`text:` is its template).
    pub fn is_chat(self) -> bool {
        matches!(
            self,
            Preset::Slack | Preset::Mattermost | Preset::Teams | Preset::Discord | Preset::Ntfy
        )
    }

    /// How the values in its `text:` template are escaped.
    pub fn escape(self) -> ChatEscape {
        match self {
            Preset::Slack => ChatEscape::Slack,
            Preset::Mattermost => ChatEscape::Mattermost,
            // Discord renders Markdown in webhook messages, masked links
            // `[text](url)` included (discord.com developers docs, "Execute Webhook" and
            // "Message Formatting"): a caller's `[Pay](https://evil.example)` must not
            // become a link.
            Preset::Teams | Preset::Discord => ChatEscape::Markdown,
            _ => ChatEscape::Plain,
        }
    }
}

/// How values written into a chat text are made inert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatEscape {
    /// As is (ntfy shows the body as plain text unless told it is Markdown).
    Plain,
    Slack,
    Mattermost,
    Markdown,
}

impl ChatEscape {
    pub fn apply(self, value: &str) -> String {
        match self {
            ChatEscape::Plain => value.to_owned(),
            ChatEscape::Slack => slack_escape(value),
            ChatEscape::Mattermost => mattermost_escape(value),
            ChatEscape::Markdown => markdown_escape(value),
        }
    }
}

/// Default text of the chat presets: names the outcome. Each `{{ value }}` is escaped
/// for its chat as it is written (see [`Preset::escape`]), so a `text:` of one's own
/// may hold the chat's markup (links, bold) while caller values stay inert.
pub const CHAT_TEXT: &str = "{% if type == 'ringing' %}{{ 'Incoming' if direction == 'inbound' else 'Outgoing' }} call \
{{ 'from' if direction == 'inbound' else 'to' }}\
{% elif type == 'answered' %}Answered call {{ 'from' if direction == 'inbound' else 'to' }}\
{% elif outcome == 'missed' %}Missed call from\
{% elif outcome == 'completed' %}Call {{ 'from' if direction == 'inbound' else 'to' }}\
{% elif outcome == 'busy' %}Busy:\
{% elif outcome == 'declined' %}Declined: call {{ 'from' if direction == 'inbound' else 'to' }}\
{% elif outcome == 'cancelled' %}Cancelled: call to\
{% elif outcome == 'no_answer' %}No answer:\
{% elif outcome == 'failed' %}Failed: call {{ 'from' if direction == 'inbound' else 'to' }}\
{% else %}Call ended ({{ outcome }}) {{ 'from' if direction == 'inbound' else 'to' }}{% endif %} \
{{ remote_name ~ ' ' if remote_name else '' }}{{ remote_number }}\
{% if type == 'ended' and outcome == 'completed' %} ({{ talk_s | duration }}){% endif %}";

/// The body of a chat preset for `text` (the rendered template, its values escaped
/// already): (content type, body).
pub fn chat_body(preset: Preset, text: &str) -> (&'static str, String) {
    match preset {
        Preset::Slack | Preset::Mattermost => ("application/json", serde_json::json!({ "text": text }).to_string()),
        Preset::Discord => (
            "application/json",
            // Discord's Execute Webhook JSON params (discord.com developers docs,
            // resources/webhook "Execute Webhook"): `content`, "the message contents (up
            // to 2000 characters)", longer is refused with 400, so it is cut;
            // `allowed_mentions` with `parse: []` turns off every mention (`@everyone`,
            // `@here`, roles, users) whatever the text holds ("Allowed Mentions Object").
            serde_json::json!({ "content": cut_chars(text, DISCORD_MAX), "allowed_mentions": { "parse": [] } })
                .to_string(),
        ),
        Preset::Teams => ("application/json", teams_card(text).to_string()),
        Preset::Ntfy => ("text/plain; charset=utf-8", text.to_owned()),
        Preset::Generic | Preset::ZammadCti => unreachable!("not a chat preset"),
    }
}

/// Discord's longest `content`, in characters.
const DISCORD_MAX: usize = 2000;

/// `text` cut to at most `max` characters (an ellipsis marks the cut).
fn cut_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some(_) => text.chars().take(max - 1).chain(['…']).collect(),
    }
}

/// Headers a preset sends unless the rule's `headers:` name them too (which replace
/// these): ntfy's publish headers (docs.ntfy.sh, "Publishing": `Title`, `Tags` as
/// emoji short codes, `Priority` 1-5 with 3 the default), each made from the event's
/// type and outcome only, never from caller values, so they stay ASCII; a missed call
/// is sent with priority 4 ("high").
pub fn default_headers(preset: Preset, event: &Event) -> Vec<(&'static str, &'static str)> {
    if preset != Preset::Ntfy {
        return Vec::new();
    }
    let inbound = event.direction == Direction::Inbound;
    let title = match (event.kind, event.outcome) {
        (EventType::Ringing, _) if inbound => "Incoming call",
        (EventType::Ringing, _) => "Outgoing call",
        (EventType::Answered, _) => "Answered call",
        (_, Some(Outcome::Missed)) => "Missed call",
        (_, Some(Outcome::Busy)) => "Busy",
        (_, Some(Outcome::Declined)) => "Declined",
        (_, Some(Outcome::Cancelled)) => "Cancelled",
        (_, Some(Outcome::NoAnswer)) => "No answer",
        (_, Some(Outcome::Failed)) => "Failed call",
        _ => "Call ended",
    };
    let mut headers = vec![("Title", title)];
    if event.outcome == Some(Outcome::Missed) {
        headers.push(("Tags", "telephone_receiver,warning"));
        headers.push(("Priority", "4"));
    } else {
        headers.push(("Tags", "telephone_receiver"));
    }
    headers
}

/// Slack's message formatting: "there are three characters you must convert to HTML
/// entities": `&` → `&amp;`, `<` → `&lt;`, `>` → `&gt;` (api.slack.com, "Formatting text
/// for app surfaces", Escaping text). With `<` escaped, `<!channel>`, `<!here>`,
/// `<@U…>` and `<url|label>` links are plain text; bare `@here`/`@channel` words are
/// not mentions in Slack's markup (only the `<!…>` forms are).
pub fn slack_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Mattermost reads the same `&`/`<`/`>` escapes for Slack-compatible webhooks, and
/// also takes plain `@here`, `@channel`, `@all` and `@username` as mentions
/// (docs.mattermost.com, "Incoming webhooks" and "Mention people"): a zero-width joiner
/// after every `@` keeps the text as it reads but is no mention any more.
pub fn mattermost_escape(text: &str) -> String {
    slack_escape(text).replace('@', "@\u{2060}")
}

/// A Teams Workflows message: one Adaptive Card with the text as a TextBlock, in the
/// shape Microsoft documents for webhooks ("Send Adaptive Cards using an Incoming
/// Webhook", MicrosoftDocs/msteams-docs `webhooks-and-connectors/how-to/connectors-using.md`:
/// `"type"` must be `"message"`, `"attachments"` holds the cards, each with
/// `"contentType": "application/vnd.microsoft.card.adaptive"`, `"contentUrl": null` and
/// the card as `"content"`), which the Workflows template "Post to a channel when a
/// webhook request is received" reads (it posts each attachment's `content`; Workflows
/// take Adaptive Cards only). Version 1.4, the newest that Teams renders everywhere.
/// A TextBlock renders a Markdown subset, so the text's values were backslash-escaped
/// as they were written ([`ChatEscape::Markdown`]) and the text is put in as it is (the
/// rule's own markup stays); Adaptive Cards have no mentions unless an
/// `msteams.entities` mention is declared, which this card never has.
fn teams_card(text: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [{ "type": "TextBlock", "text": text, "wrap": true }]
            }
        }]
    })
}

/// Backslash before every Markdown punctuation character.
pub fn markdown_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(
            c,
            '\\' | '`'
                | '*'
                | '_'
                | '{'
                | '}'
                | '['
                | ']'
                | '('
                | ')'
                | '#'
                | '+'
                | '-'
                | '.'
                | '!'
                | '<'
                | '>'
                | '|'
                | '~'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Zammad's generic CTI API (`/api/v1/cti/TOKEN`): newCall / answer / hangup,
/// form-encoded.
///
/// From Zammad's `app/models/cti/log.rb` (`Cti::Log.process`): `newCall` of a known
/// `callId` raises "call_id … already exists!" (HTTP 500); `answer` and `hangup` of an
/// unknown one raise "No such call_id" (500), so a call must be sent whole (see
/// `scope: call`); an inbound `hangup` of a call still in state `newCall` is marked
/// not done (a missed call) unless its cause is `forwarded`. From
/// `lib/cti/driver/base.rb` (`push_open_ticket_screen_recipient`): with an
/// `answeringNumber` that matches no agent, Zammad calls `params[:user].downcase`,
/// which fails on the array that `user[]` makes, so `user` is sent plain, as the API
/// docs show (zammad-documentation `api/generic-cti/hangup-event.rst`).
pub fn zammad_cti(event: &Event, user: Option<&str>) -> String {
    let (from, to) = match event.direction {
        Direction::Inbound => (&event.remote_number, &event.local_number),
        Direction::Outbound => (&event.local_number, &event.remote_number),
    };
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    let kind = match event.kind {
        EventType::Ringing => "newCall",
        EventType::Answered => "answer",
        EventType::Ended => "hangup",
    };
    let direction = if event.direction == Direction::Inbound {
        "in"
    } else {
        "out"
    };
    form.append_pair("event", kind)
        .append_pair("from", from)
        .append_pair("to", to)
        .append_pair("direction", direction)
        .append_pair("callId", &event.call_id);
    if let Some(user) = user.filter(|u| !u.is_empty()) {
        form.append_pair("user", user);
    }
    if event.kind == EventType::Answered && event.direction == Direction::Inbound {
        form.append_pair("answeringNumber", &event.local_number);
    }
    if event.kind == EventType::Ended
        && let Some(cause) = zammad_cause(event)
    {
        form.append_pair("cause", cause);
    }
    form.finish()
}

/// The hangup `cause` for an ended call, from the causes Zammad documents
/// (zammad-documentation `api/generic-cti/hangup-event.rst`): `normalClearing` (hung up
/// after the call was established), `busy`, `cancel` (the caller hung up before the
/// called party picked up), `noAnswer` (the called party rejected the call, e.g. DND),
/// `congestion` (could not be reached), `notFound` (does not exist or is offline),
/// `forwarded` (the only cause that keeps Zammad from marking an unanswered inbound
/// call missed, `app/models/cti/log.rb`). `None` when the outcome is unknown: Zammad
/// then keeps the hangup without a reason.
pub fn zammad_cause(event: &Event) -> Option<&'static str> {
    let inbound = event.direction == Direction::Inbound;
    let status = event.status_code.unwrap_or(0);
    Some(match event.outcome? {
        Outcome::Completed => "normalClearing",
        // An inbound call the phone redirected (3xx sent): forwarded, not missed.
        _ if inbound && (300..400).contains(&status) => "forwarded",
        Outcome::Missed | Outcome::Cancelled => "cancel",
        Outcome::Busy => "busy",
        Outcome::Declined => "noAnswer",
        // 480 Temporarily Unavailable or no final answer (408): offline / unreachable.
        Outcome::NoAnswer => "notFound",
        Outcome::Failed if matches!(status, 404 | 410 | 484 | 604) => "notFound",
        Outcome::Failed => "congestion",
        Outcome::Unknown => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_inert_in_chat_texts() {
        let name = "<!channel> <https://x.example|y> & @here";
        assert_eq!(
            slack_escape(name),
            "&lt;!channel&gt; &lt;https://x.example|y&gt; &amp; @here"
        );
        assert_eq!(
            mattermost_escape(name),
            "&lt;!channel&gt; &lt;https://x.example|y&gt; &amp; @\u{2060}here"
        );
        assert_eq!(markdown_escape("[a](b) *c*"), "\\[a\\]\\(b\\) \\*c\\*");
    }
}
