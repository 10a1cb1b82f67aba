//! Text encodings of a call-log file: raw file bytes in, UTF-8 text out.
//!
//! The encoding is sniffed from the first bytes (UTF-8 with or without BOM, UTF-16LE or
//! BE with BOM, UTF-16LE without BOM when an ASCII letter is followed by a zero byte);
//! UTF-16 is transcoded to UTF-8 chunk by chunk. [`StoredUnits::stored_len`] maps decoded
//! text back to its length in the file, so positions stay in file bytes whatever the
//! encoding.

use encoding_rs::{UTF_16BE, UTF_16LE};
use serde::{Deserialize, Serialize};

/// The text encoding of a call-log file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextEncoding {
    Utf8,
    Utf16Le,
    Utf16Be,
}

#[derive(Debug)]
enum State {
    /// Not known yet: the first bytes, kept until there are enough to tell.
    Sniffing(Vec<u8>),
    Utf8,
    Utf16 {
        decoder: encoding_rs::Decoder,
        big_endian: bool,
    },
}

/// How the stored length of decoded text is counted; see [`StoredUnits::stored_len`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoredUnits {
    /// One byte in the file for each byte of text (UTF-8, or not known yet).
    Bytes,
    /// Two bytes in the file for each UTF-16 code unit.
    Utf16,
}

impl StoredUnits {
    /// The stored length of `text` read from the file: the same in UTF-8, two bytes
    /// per UTF-16 code unit otherwise. Decoded text is valid UTF-8 and every unit
    /// (an unpaired surrogate too) decodes to one character, so this is exact.
    pub(crate) fn stored_len(self, text: &[u8]) -> u64 {
        match self {
            StoredUnits::Utf16 => {
                let units: usize = text
                    .iter()
                    .map(|&b| usize::from(b & 0xC0 != 0x80) + usize::from(b >= 0xF0))
                    .sum();
                units as u64 * 2
            }
            StoredUnits::Bytes => text.len() as u64,
        }
    }
}

/// Decoded text of one chunk, as [`Decoder::decode`] hands it on.
pub(crate) struct Decoded<'a> {
    /// Length of the byte order mark consumed by this chunk (0 but once).
    pub(crate) bom: usize,
    /// UTF-8 text, or the raw bytes of a file claiming to be UTF-8.
    pub(crate) text: &'a [u8],
    /// How that text is stored in the file.
    pub(crate) units: StoredUnits,
}

/// Turns the file's bytes, pushed in order, into UTF-8 text.
#[derive(Debug)]
pub(crate) struct Decoder {
    state: State,
    /// Text decoded from UTF-16, reused between chunks.
    decoded: Vec<u8>,
}

impl Decoder {
    /// A decoder for a file read from its first byte: sniffs the encoding.
    pub(crate) fn new() -> Decoder {
        Decoder {
            state: State::Sniffing(Vec::new()),
            decoded: Vec::new(),
        }
    }

    /// A decoder going on in a file whose encoding is known (past its BOM).
    pub(crate) fn resume(encoding: TextEncoding) -> Decoder {
        let state = match encoding {
            TextEncoding::Utf8 => State::Utf8,
            TextEncoding::Utf16Le => utf16(false),
            TextEncoding::Utf16Be => utf16(true),
        };
        Decoder {
            state,
            decoded: Vec::new(),
        }
    }

    /// The encoding, once known.
    pub(crate) fn encoding(&self) -> Option<TextEncoding> {
        match &self.state {
            State::Sniffing(_) => None,
            State::Utf8 => Some(TextEncoding::Utf8),
            State::Utf16 { big_endian: false, .. } => Some(TextEncoding::Utf16Le),
            State::Utf16 { big_endian: true, .. } => Some(TextEncoding::Utf16Be),
        }
    }

    /// How decoded text is stored in the file.
    pub(crate) fn units(&self) -> StoredUnits {
        match self.state {
            State::Utf16 { .. } => StoredUnits::Utf16,
            _ => StoredUnits::Bytes,
        }
    }

    /// Decodes the next bytes of the file; `last` says no more will come, so the
    /// encoding is settled with what arrived. `None` while too few bytes arrived to tell
    /// the encoding (they are kept).
    pub(crate) fn decode<'a>(&'a mut self, chunk: &'a [u8], last: bool) -> Option<Decoded<'a>> {
        if let State::Sniffing(head) = &mut self.state {
            head.extend_from_slice(chunk);
            let head = std::mem::take(head);
            let Some((state, bom)) = sniff_encoding(&head, last) else {
                self.state = State::Sniffing(head);
                return None;
            };
            self.state = state;
            let units = self.units();
            // The sniffed head is kept here, not in `chunk`: it goes through the buffer.
            let text = self.transcode(head.get(bom..).unwrap_or_default());
            return Some(Decoded { bom, text, units });
        }
        let units = self.units();
        let text = match self.state {
            State::Utf16 { .. } => self.transcode(chunk),
            _ => chunk,
        };
        Some(Decoded { bom: 0, text, units })
    }

    /// UTF-16 → UTF-8 into the reused buffer; UTF-8 is copied as is.
    fn transcode(&mut self, chunk: &[u8]) -> &[u8] {
        self.decoded.clear();
        match &mut self.state {
            // Never `last`: a decoder is not usable after it, and a lone trailing byte
            // is no character anyway.
            State::Utf16 { decoder, .. } => {
                let room = decoder
                    .max_utf8_buffer_length(chunk.len())
                    .unwrap_or(chunk.len().saturating_mul(3).saturating_add(16));
                self.decoded.resize(room, 0);
                let (_, _, written, _) = decoder.decode_to_utf8(chunk, &mut self.decoded, false);
                self.decoded.truncate(written);
            }
            _ => self.decoded.extend_from_slice(chunk),
        }
        &self.decoded
    }
}

fn utf16(big_endian: bool) -> State {
    State::Utf16 {
        decoder: if big_endian {
            UTF_16BE.new_decoder_without_bom_handling()
        } else {
            UTF_16LE.new_decoder_without_bom_handling()
        },
        big_endian,
    }
}

/// The encoding from the first bytes and the BOM's length, or `None` when more bytes
/// are needed to tell.
fn sniff_encoding(head: &[u8], last: bool) -> Option<(State, usize)> {
    match head {
        [0xEF, 0xBB, 0xBF, ..] => Some((State::Utf8, 3)),
        [0xFF, 0xFE, ..] => Some((utf16(false), 2)),
        [0xFE, 0xFF, ..] => Some((utf16(true), 2)),
        // UTF-16LE without a BOM: an ASCII letter then a zero byte.
        [a, 0, ..] if *a != 0 => Some((utf16(false), 0)),
        [0xEF] | [0xEF, 0xBB] | [0xFF] | [0xFE] | [] if !last => None,
        [_] if !last => None,
        _ => Some((State::Utf8, 0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `chunks` in order (the last one with `last`) into text and BOM length.
    fn decode_all(chunks: &[&[u8]]) -> (Option<TextEncoding>, usize, Vec<u8>) {
        let mut decoder = Decoder::new();
        let (mut bom, mut text) = (0, Vec::new());
        for (i, chunk) in chunks.iter().enumerate() {
            if let Some(decoded) = decoder.decode(chunk, i + 1 == chunks.len()) {
                bom += decoded.bom;
                text.extend_from_slice(decoded.text);
            }
        }
        (decoder.encoding(), bom, text)
    }

    #[test]
    fn encodings_are_sniffed_from_the_first_bytes() {
        let utf8 = (Some(TextEncoding::Utf8), 0, b"a,b\n".to_vec());
        assert_eq!(decode_all(&[b"a,b\n"]), utf8);
        assert_eq!(
            decode_all(&[b"\xEF", b"\xBB", b"\xBFa,b\n"]),
            (Some(TextEncoding::Utf8), 3, b"a,b\n".to_vec())
        );
        assert_eq!(
            decode_all(&[b"\xFF", b"\xFEa\0,", b"\0b\0"]),
            (Some(TextEncoding::Utf16Le), 2, b"a,b".to_vec())
        );
        assert_eq!(
            decode_all(&[b"\xFE\xFF\0a\0", b",\0b"]),
            (Some(TextEncoding::Utf16Be), 2, b"a,b".to_vec())
        );
        assert_eq!(
            decode_all(&[b"a\0,\0"]),
            (Some(TextEncoding::Utf16Le), 0, b"a,".to_vec()),
            "UTF-16LE without a BOM"
        );
        // One byte cannot tell, unless nothing more comes.
        let mut decoder = Decoder::new();
        assert!(decoder.decode(b"\xEF", false).is_none());
        assert_eq!(decoder.encoding(), None);
        assert_eq!(decode_all(&[b"x"]), (Some(TextEncoding::Utf8), 0, b"x".to_vec()));
    }

    #[test]
    fn stored_length_counts_utf16_units() {
        let text = "Jörg 😀,\r\n";
        assert_eq!(StoredUnits::Bytes.stored_len(text.as_bytes()), text.len() as u64);
        let units = text.encode_utf16().count() as u64;
        assert_eq!(StoredUnits::Utf16.stored_len(text.as_bytes()), units * 2);
        let resumed = Decoder::resume(TextEncoding::Utf16Be);
        assert_eq!(resumed.encoding(), Some(TextEncoding::Utf16Be));
        assert_eq!(resumed.units(), StoredUnits::Utf16);
    }
}
