//! Phone numbers in E.164 form, for the `e164` template filter: Google's libphonenumber
//! rules through the maintained Rust port (`phonenumber`, metadata of libphonenumber
//! 9.x), so national numbers get their country's code the way that country dials
//! (`(212) 555-0123` in `US` → `+12125550123`, `030 1234567` in `DE` → `+49301234567`,
//! `020 7946 0018` in `GB` → `+442079460018`).
//!
//! Takes a number as the phone wrote it (caller ID: hostile text) and a region (the
//! configuration's `default_region`, or the filter's argument); hands back the E.164
//! form, or the text unchanged when it is not a valid number of any region
//! libphonenumber knows: internal extensions (`101`), service codes (`*97`),
//! `anonymous`, too-short or too-long digit runs. Never fails, never panics.

use phonenumber::country::Id;
use phonenumber::{Mode, metadata::DATABASE};

/// A region numbers without a country code are read in: an ISO 3166 code (`US`, `DE`,
/// `GB`) that libphonenumber has metadata for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region(Id);

/// Longest text handed to the parser: E.164 has at most 15 digits; with spaces,
/// brackets, dashes and a `00` prefix a real number stays far below this.
const MAX_LEN: usize = 40;

impl Region {
    /// `US`, `de` (any case), or a country calling code (`49`, `+1`), which stands for
    /// the main region of that code (`1` → `US`, `44` → `GB`). The error says what is
    /// accepted.
    pub fn parse(text: &str) -> Result<Region, String> {
        let trimmed = text.trim();
        let code = trimmed.strip_prefix('+').unwrap_or(trimmed);
        let id = if !code.is_empty() && code.len() <= 3 && code.bytes().all(|b| b.is_ascii_digit()) {
            code.parse::<u16>()
                .ok()
                .and_then(|code| DATABASE.region(&code))
                .and_then(|regions| regions.first().and_then(|id| id.parse::<Id>().ok()))
        } else {
            trimmed
                .to_ascii_uppercase()
                .parse::<Id>()
                .ok()
                .filter(|id| DATABASE.by_id(id.as_ref()).is_some())
        };
        id.map(Region).ok_or_else(|| {
            format!(
                "{text:?} is not a region: give a two-letter country code such as US, DE or GB \
                 (or a calling code such as 49)"
            )
        })
    }

    /// The ISO code (`US`).
    pub fn code(self) -> String {
        self.0.as_ref().to_owned()
    }
}

/// `number` in E.164 form (`+` and digits), read in `region` when it has no country
/// code of its own; `number` unchanged when it is no valid phone number (see the module
/// docs).
pub fn e164(number: &str, region: Option<Region>) -> String {
    let plausible = number.len() <= MAX_LEN
        && number.bytes().any(|b| b.is_ascii_digit())
        && number
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b' ' | b'-' | b'.' | b'(' | b')' | b'/'));
    if !plausible {
        return number.to_owned();
    }
    // The port has panicked on odd input in the past (rust-phonenumber issues #32,
    // #43); caller ID must never take the daemon down, so a panic counts as "no number".
    let parsed = std::panic::catch_unwind(|| {
        let parsed = phonenumber::parse(region.map(|r| r.0), number).ok()?;
        phonenumber::is_valid(&parsed).then(|| parsed.format().mode(Mode::E164).to_string())
    });
    parsed.ok().flatten().unwrap_or_else(|| number.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(code: &str) -> Option<Region> {
        Some(Region::parse(code).unwrap())
    }

    #[test]
    fn national_numbers_get_their_country_code() {
        // NANP: +1, whatever the punctuation
        assert_eq!(e164("(212) 555-0123", region("US")), "+12125550123");
        assert_eq!(e164("212.555.0123", region("US")), "+12125550123");
        assert_eq!(e164("1 212 555 0123", region("US")), "+12125550123");
        assert_eq!(e164("6135550123", region("CA")), "+16135550123");
        // US dialling out: 011 is its international prefix
        assert_eq!(e164("011 49 30 1234567", region("US")), "+49301234567");
        // Germany: trunk 0 dropped, 00 is the international prefix
        assert_eq!(e164("030 1234567", region("DE")), "+49301234567");
        assert_eq!(e164("0151 23456789", region("DE")), "+4915123456789");
        assert_eq!(e164("0049 30 1234567", region("DE")), "+49301234567");
        // United Kingdom
        assert_eq!(e164("020 7946 0018", region("GB")), "+442079460018");
        assert_eq!(e164("07400 123456", region("GB")), "+447400123456");
        // a number with its country code is read as such in any region
        assert_eq!(e164("+44 20 7946 0018", region("US")), "+442079460018");
        assert_eq!(e164("+1 212 555 0123", None), "+12125550123");
        assert_eq!(e164("+49 (0)30 1234567", region("DE")), "+49301234567");
    }

    #[test]
    fn what_is_no_number_stays_as_it_is() {
        for (number, region_code) in [
            ("101", "US"),                   // internal extension
            ("2001", "DE"),                  // internal extension
            ("*97", "US"),                   // service code
            ("anonymous", "DE"),             // withheld
            ("", "US"),                      // nothing
            ("12", "GB"),                    // too short
            ("030 1234567", "US"),           // a German number read as American: invalid
            ("+999 1234567", "DE"),          // no such country code
            ("123456789012345678901", "US"), // too long
            ("\u{202e}5551234", "US"),       // bidi trick
            ("<!channel> 030 1234", "DE"),   // hostile text
            ("  2 22#:", "US"),              // once panicked the port (issue #43)
        ] {
            assert_eq!(e164(number, region(region_code)), number, "{number:?} in {region_code}");
        }
        // without a region, a national number is not guessed at
        assert_eq!(e164("030 1234567", None), "030 1234567");
    }

    #[test]
    fn regions_by_code_or_calling_code() {
        assert_eq!(Region::parse("de").unwrap().code(), "DE");
        assert_eq!(Region::parse("49").unwrap().code(), "DE");
        assert_eq!(Region::parse("+1").unwrap().code(), "US");
        assert_eq!(Region::parse("44").unwrap().code(), "GB");
        for bad in ["XX", "", "Germany", "999", "1234"] {
            let error = Region::parse(bad).unwrap_err();
            assert!(error.contains("two-letter country code"), "{error}");
        }
    }

    #[test]
    fn random_punctuated_digits_never_panic() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let alphabet = b"0123456789+ -.()/#*";
        for _ in 0..2_000 {
            let mut text = String::new();
            for _ in 0..(state % 24) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                text.push(alphabet[(state % alphabet.len() as u64) as usize] as char);
            }
            for region_code in ["US", "DE", "GB", "CH"] {
                let out = e164(&text, region(region_code));
                assert!(out == text || out.starts_with('+'), "{text:?} → {out:?}");
            }
        }
    }
}
