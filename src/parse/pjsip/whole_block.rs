//! A SIP message block read at once from the chunk that holds it (replay).
//!
//! Half a trace's lines are the lines of logged SIP messages, and read one at a time
//! each goes through the whole line path (resume ring, cut check, decoration, the
//! `--end msg--` compare, a copy into the block's bytes) before the message is scanned
//! again at its end. When the caller hands over the chunk and its line feeds
//! ([`Ahead`]), a block opened by the line just read is looked for whole in it instead:
//! its `--end msg--` found by one search, its lines counted from the line feeds, its
//! message scanned where it lies, no copy. What the parser keeps (line count, resume
//! ring, the block's end) is set as the line-by-line read sets it, so the items are the
//! same; where the two could differ (a decoration, a cut message waiting, a line that
//! could end a message the logger cut, a block running past the chunk) the block is
//! left to the line-by-line read.

use std::sync::LazyLock;

use memchr::memmem::Finder;

use super::{CONTEXT_LINES, MAX_BLOCK, ResumePoint, TraceItem, TraceParser};
use crate::parse::lines::Line;

/// The chunk a line was read from, with its line feeds: what lies after the line.
#[derive(Debug, Clone, Copy)]
pub struct Ahead<'a> {
    /// The chunk.
    pub chunk: &'a [u8],
    /// Positions of all of `chunk`'s line feeds, in order.
    pub feeds: &'a [u32],
    /// Index in `feeds` of the line feed that ended the line.
    pub index: usize,
}

/// The end of a block's message, with the line feed before it.
static END_OF_MESSAGE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\n--end msg--"));

/// The longest message read at once, line endings included. A block's kept bytes (its
/// lines with CRLF endings) are then at most twice as long, below [`MAX_BLOCK`]: the
/// line-by-line read would have kept all of it too. PJSIP cuts entries at 4000 bytes.
const LONGEST: usize = MAX_BLOCK / 2;

impl TraceParser {
    /// [`TraceParser::line`], for a line of `ahead`'s chunk. When the line opens a SIP
    /// message block that ends in the chunk, reads the block's other lines too and
    /// returns how many (else 0): the caller passes over them.
    pub fn line_ahead(&mut self, line: Line<'_>, ahead: Ahead<'_>, out: &mut impl FnMut(TraceItem)) -> usize {
        let (number, end) = (line.number, line.end);
        self.line(line, out);
        let opened = self.block.as_ref().is_some_and(|block| block.line == number);
        if !opened || !self.decoration.plain() || !self.cut.is_empty() {
            return 0;
        }
        match find_block(ahead, self.max_line) {
            Some(found) if !self.may_be_cut(ahead, &found) => {
                self.read_block(ahead, &found, number, end, out);
                found.lines
            }
            _ => 0,
        }
    }

    /// Whether a line of the message could end it as a message the logger cut: the
    /// line-by-line read asks that (a log line's timestamp) of each line whose text so
    /// far, `seen`, comes within 64 bytes of the size expected. `seen` never exceeds the
    /// line's distance from the message's start, so every line that far in is asked.
    fn may_be_cut(&mut self, ahead: Ahead<'_>, found: &Found) -> bool {
        let Some(block) = &self.block else {
            return false;
        };
        let from = found.message.start + block.expected.saturating_sub(64);
        let feeds = &ahead.feeds[ahead.index + 1..][..found.lines - 1];
        // The first message line starts after the block's opening line's line feed.
        let mut start = found.message.start;
        let first = feeds.partition_point(|&feed| (feed as usize) < from.saturating_sub(1));
        if first > 0 {
            start = feeds[first - 1] as usize + 1;
        }
        for &feed in &feeds[first..] {
            let mut line = &ahead.chunk[start..feed as usize];
            while let [head @ .., b'\r'] = line {
                line = head;
            }
            if self.timestamps.parse(line).is_some() {
                return true;
            }
            start = feed as usize + 1;
        }
        false
    }

    /// Reads the open block's lines as `found` (its message and `--end msg--`), the
    /// block opened by line `number`, which ended at byte `end`: counts and rings them
    /// as [`TraceParser::line`] would, and closes the block with its message as it lies
    /// in the chunk.
    fn read_block(&mut self, ahead: Ahead<'_>, found: &Found, number: u64, end: u64, out: &mut impl FnMut(TraceItem)) {
        let offset = |at: usize| end + (at - found.message.start) as u64;
        let date = self.now.date();
        self.stats.lines += found.lines as u64;
        // Only the last lines stay in the ring.
        let unrung = found.lines.saturating_sub(CONTEXT_LINES);
        self.recent_next = (self.recent_next + unrung) % CONTEXT_LINES;
        for line in unrung..found.lines {
            let start = match line {
                0 => found.message.start,
                _ => ahead.feeds[ahead.index + line] as usize + 1,
            };
            self.recent[self.recent_next] = ResumePoint {
                offset: offset(start),
                line: number + 1 + line as u64,
                date,
            };
            self.recent_next = (self.recent_next + 1) % CONTEXT_LINES;
        }
        if let Some(block) = &mut self.block {
            block.end = offset(found.end);
            block.complete = true;
        }
        self.close_block_with(Some(&ahead.chunk[found.message.clone()]), out);
    }
}

/// A whole block found after its opening line.
struct Found {
    /// The message's bytes in the chunk (its lines, line feeds included).
    message: std::ops::Range<usize>,
    /// Just after the line feed of the `--end msg--` line.
    end: usize,
    /// The block's lines after its opening one, `--end msg--` included.
    lines: usize,
}

/// The message and `--end msg--` line that follow line `ahead.index` in its chunk, when
/// they lie in it, no line of them longer than `max_line` and the message at most
/// [`LONGEST`] bytes.
fn find_block(ahead: Ahead<'_>, max_line: usize) -> Option<Found> {
    let opening_feed = *ahead.feeds.get(ahead.index)? as usize;
    let start = opening_feed + 1;
    let limit = ahead.chunk.len().min(start + LONGEST.min(max_line));
    // From the opening line's line feed: a message may have no line at all.
    let at = END_OF_MESSAGE.find(ahead.chunk.get(opening_feed..limit)?)?;
    let end_line = opening_feed + at + 1;
    let feeds = ahead.feeds.get(ahead.index + 1..)?;
    let message_lines = feeds.partition_point(|&feed| (feed as usize) < end_line);
    let end_feed = *feeds.get(message_lines)? as usize;
    // The line is `--end msg--` once the line splitter took its carriage returns off.
    let after = ahead.chunk.get(end_line + b"--end msg--".len()..end_feed)?;
    if after.iter().any(|&b| b != b'\r') || end_feed - end_line > max_line {
        return None;
    }
    Some(Found {
        message: start..end_line,
        end: end_feed + 1,
        lines: message_lines + 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::lines::{LineSplitter, find_line_feeds};
    use crate::parse::pjsip::TraceStats;
    use jiff::civil::date;

    /// What a parser made of a log, and what it kept.
    #[derive(Debug, PartialEq)]
    struct Read {
        items: Vec<TraceItem>,
        message_bytes: Vec<u8>,
        stats: TraceStats,
        recent: [ResumePoint; CONTEXT_LINES],
        recent_next: usize,
        resume: ResumePoint,
    }

    /// Reads `log` cut in chunks at `cuts`, line by line, or with each chunk's line
    /// feeds (the blocks read whole where they can); also how many lines were read whole.
    fn read(log: &[u8], cuts: &[usize], whole: bool) -> (Read, usize) {
        let mut splitter = LineSplitter::new(0, 1, 65536);
        let mut parser = TraceParser::new(date(2026, 11, 23), 65536);
        parser.defer_messages();
        let mut items = Vec::new();
        let mut out = |i| items.push(i);
        let mut read_whole = 0;
        let mut last = 0;
        for at in cuts.iter().map(|&c| c.min(log.len())).chain([log.len()]) {
            let chunk = &log[last..at.max(last)];
            last = at.max(last);
            if whole {
                let mut feeds = Vec::new();
                find_line_feeds(chunk, &mut feeds);
                let at = feeds.iter().map(|&f| f as usize);
                splitter.push_split(chunk, at, |line, index| {
                    let read = parser.line_ahead(
                        line,
                        Ahead {
                            chunk,
                            feeds: &feeds,
                            index,
                        },
                        &mut out,
                    );
                    read_whole += read;
                    read
                });
            } else {
                splitter.push(chunk, |line| parser.line(line, &mut out));
            }
        }
        splitter.finish(|line| parser.line(line, &mut out));
        parser.finish(&mut out);
        let read = Read {
            items,
            message_bytes: parser.take_message_bytes(Vec::new()),
            stats: parser.stats(),
            recent: parser.recent,
            recent_next: parser.recent_next,
            resume: parser.resume_point(),
        };
        (read, read_whole)
    }

    /// Checks both reads agree; how many lines the whole-block read took at once.
    fn lines_read_whole(log: &str, cuts: &[usize]) -> usize {
        let (by_line, _) = read(log.as_bytes(), cuts, false);
        let (whole, read_whole) = read(log.as_bytes(), cuts, true);
        assert_eq!(whole, by_line, "cuts {cuts:?}");
        read_whole
    }

    const INVITE: &str = "INVITE sip:101@h SIP/2.0\r\nFrom: \"A\" <sip:555@h>;tag=1\r\nTo: <sip:101@h>\r\nCall-ID: c1\r\nCSeq: 5 INVITE\r\nContent-Length: 0\r\n\r\n";

    fn block(message: &str) -> String {
        format!(
            "08:00:00.000 pjsua_core.c  .RX {} bytes Request msg INVITE/cseq=5 (rdata0x1) from UDP 1.2.3.4:5:\n{message}--end msg--\n",
            message.len()
        )
    }

    fn log() -> String {
        format!(
            "08:00:00.000 inv0x55aa  ..Sending Request msg INVITE/cseq=5 (tdta0x77)\n{}\
             08:00:01.000 pjsua_core.c  .TX 5 bytes Request msg BYE/cseq=6 (tdta0x78) to UDP 1.2.3.4:5:\n\
             BYE sip:1@h SIP/2.0\r\nCall-ID: c1\r\nCSeq: 6 BYE\r\nFrom: <sip:1@h>;tag=1\r\nTo: <sip:2@h>;tag=2\r\n\r\n--end msg--\n\
             08:00:02.000 pjsua_core.c  .RX 0 bytes Request msg OPTIONS/cseq=7 (rdata0x2) from UDP 1.2.3.4:5:\n--end msg--\n\
             08:00:33.000 inv0x55aa  .State changed from CALLING to DISCONNECTED, event=TSX_STATE\n",
            block(INVITE)
        )
    }

    #[test]
    fn blocks_in_one_chunk_are_read_whole() {
        // 7 + 1, 6 + 1 and 0 + 1 lines after the three blocks' opening lines.
        assert_eq!(lines_read_whole(&log(), &[]), 16);
    }

    #[test]
    fn a_block_ending_at_the_chunk_end_is_read_whole() {
        let log = log();
        let first_end = log.find("--end msg--\n").unwrap() + "--end msg--\n".len();
        assert_eq!(lines_read_whole(&log, &[first_end, first_end + 30]), 16);
        // Its last line feed in the next chunk: read line by line.
        assert_eq!(lines_read_whole(&log, &[first_end - 1]), 8);
    }

    #[test]
    fn a_block_across_chunks_is_read_line_by_line() {
        let log = log();
        let invite = log.find("INVITE sip").unwrap();
        assert_eq!(lines_read_whole(&log, &[invite + 40]), 8);
        // Cut in its opening line: its message is read whole from the next chunk.
        assert_eq!(lines_read_whole(&log, &[invite - 10]), 16);
    }

    #[test]
    fn crlf_and_cr_cr_lf_logs() {
        let crlf = log().replace('\n', "\r\n");
        assert_eq!(lines_read_whole(&crlf, &[]), 16);
        let doubled = log().replace("\r\n", "\r\r\n").replace('\n', "\r\n");
        assert_eq!(lines_read_whole(&doubled, &[]), 16);
        assert_eq!(lines_read_whole(&log().replace("--end msg--", "--end msg--x"), &[]), 0);
    }

    #[test]
    fn a_message_cut_by_the_logger_is_read_line_by_line() {
        let filler = "X-Filler: ".to_owned() + &"y".repeat(200) + "\r\n";
        let long = INVITE.replace("Content-Length: 0\r\n", &filler.repeat(30));
        let cut = format!(
            "08:00:00.000 pjsua_core.c  .RX 6400 bytes Request msg INVITE/cseq=5 (rdata0x1) from UDP 1.2.3.4:5:\n{}\n\
             08:00:00.001 pjsua_core.c  .next line\n{}",
            &long[..3800],
            log()
        );
        // The cut message's end found in the next block: a log line in between.
        assert_eq!(lines_read_whole(&cut, &[]), 16);
        // A message with no Call-ID waits for a line naming its call: no block is
        // read whole meanwhile.
        let untied = cut.replacen("Call-ID: c1\r\n", "", 1);
        assert_eq!(lines_read_whole(&untied, &[]), 0);
    }

    #[test]
    fn a_log_line_in_a_message_is_looked_at_only_where_it_could_end_it() {
        let body =
            "08:00:00.000 pjsua_core.c  .RX 10 bytes Request msg INVITE/cseq=1 (rdata0x9) from UDP 1.2.3.4:5:\r\n";
        let message = format!(
            "MESSAGE sip:101@h SIP/2.0\r\nCall-ID: m1\r\nCSeq: 1 MESSAGE\r\nFrom: <sip:1@h>\r\nTo: <sip:2@h>\r\n\r\n{body}"
        );
        // At the message's end: a cut there is possible, the line-by-line read decides.
        assert_eq!(lines_read_whole(&block(&message), &[]), 0);
        // Far from its end: content.
        let early = format!("{message}{}", "more text\r\n".repeat(20));
        assert_eq!(lines_read_whole(&block(&early), &[]), 28);
    }

    #[test]
    fn a_decorated_log_is_read_line_by_line() {
        let logcat: String = log()
            .lines()
            .map(|l| format!("01-24 16:45:14.699  7619  7941 I PJSIP   : {l}\n"))
            .collect();
        assert_eq!(lines_read_whole(&logcat, &[]), 0);
    }

    proptest::proptest! {
        #[test]
        fn any_chunking_reads_as_line_by_line(cuts in proptest::collection::vec(0usize..1200, 0..5)) {
            let mut cuts = cuts;
            cuts.sort();
            let log = log() + &log().replace('\n', "\r\n");
            lines_read_whole(&log, &cuts);
        }
    }
}
