//! Splits a byte stream into lines, incrementally, with their positions.
//!
//! Takes chunks of any size (a read of a file, an append seen by the tailer) and hands
//! on complete lines, each with its 1-based number and byte offsets, without the line
//! ending (LF, CRLF, or the CR CR LF some loggers write). An unfinished last line stays
//! buffered until more bytes arrive ("need more"). A line longer than the limit is cut
//! to the limit and flagged, and the rest of it is skipped without being stored, so
//! memory stays bounded whatever the input.

/// One line of input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    /// The line without its line ending; at most the splitter's limit long.
    pub bytes: &'a [u8],
    /// Line number, from 1.
    pub number: u64,
    /// Byte offset of the line's first byte, from 0.
    pub start: u64,
    /// Byte offset just after the line's ending (where the next line starts).
    pub end: u64,
    /// The line was longer than the limit: `bytes` holds only its beginning.
    pub too_long: bool,
}

/// Incremental line splitter; see the module docs.
#[derive(Debug, Clone)]
pub struct LineSplitter {
    /// The unfinished line carried over from the previous chunk.
    pending: Vec<u8>,
    /// Offset of the first byte not yet handed on as part of a line.
    offset: u64,
    /// Number of the next line.
    number: u64,
    max_line: usize,
    /// Bytes of the current overlong line beyond the limit, which are dropped.
    skipped: u64,
}

/// Default longest line kept whole, in bytes. PJSIP entries are at most 4000 bytes.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;

impl LineSplitter {
    /// A splitter starting at byte `offset`, line `number` (1 for a file's start).
    pub fn new(offset: u64, number: u64, max_line: usize) -> LineSplitter {
        LineSplitter {
            pending: Vec::new(),
            offset,
            number,
            max_line: max_line.max(1),
            skipped: 0,
        }
    }

    /// Offset just after the last complete line handed on.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Number of the next line to be handed on.
    pub fn next_line_number(&self) -> u64 {
        self.number
    }

    /// Bytes buffered for an unfinished line (including skipped overlong bytes).
    pub(crate) fn pending_len(&self) -> u64 {
        self.pending.len() as u64 + self.skipped
    }

    /// Feeds `chunk`, handing each line it completes to `each`.
    pub fn push(&mut self, chunk: &[u8], each: impl FnMut(Line<'_>)) {
        self.push_split(chunk, LineFeeds::new(chunk), each);
    }

    /// [`LineSplitter::push`] with the positions of `chunk`'s line feeds found already
    /// (in order, each an index into `chunk`): replay finds them on the thread that
    /// reads, beside the one that parses.
    pub fn push_split(&mut self, chunk: &[u8], feeds: impl IntoIterator<Item = usize>, mut each: impl FnMut(Line<'_>)) {
        let mut feeds = feeds.into_iter();
        let mut start = 0;
        if !self.pending.is_empty() || self.skipped > 0 {
            match feeds.next() {
                Some(nl) => {
                    self.extend_pending(&chunk[..nl]);
                    start = nl + 1;
                    let pending = std::mem::take(&mut self.pending);
                    let length = pending.len() as u64 + self.skipped + 1;
                    self.emit(&pending, length, &mut each);
                    self.pending = pending;
                    self.pending.clear();
                }
                None => {
                    self.extend_pending(chunk);
                    return;
                }
            }
        }
        for nl in feeds {
            prefetch(chunk, nl + PREFETCH_AHEAD);
            let line = &chunk[start..nl];
            let length = (nl - start) as u64 + 1;
            if line.len() > self.max_line {
                self.skipped = (line.len() - self.max_line) as u64;
                self.emit(&line[..self.max_line], length, &mut each);
            } else {
                self.emit(line, length, &mut each);
            }
            start = nl + 1;
        }
        self.extend_pending(&chunk[start..]);
    }

    /// Hands on the unfinished last line, if any, as if it ended here. For input that is
    /// known to be complete (a replayed file, stdin at its end).
    pub fn finish(&mut self, mut each: impl FnMut(Line<'_>)) {
        if self.pending.is_empty() && self.skipped == 0 {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        let length = pending.len() as u64 + self.skipped;
        self.emit(&pending, length, &mut each);
    }

    fn extend_pending(&mut self, bytes: &[u8]) {
        let room = self.max_line.saturating_sub(self.pending.len());
        let keep = bytes.len().min(room);
        self.pending.extend_from_slice(&bytes[..keep]);
        self.skipped += (bytes.len() - keep) as u64;
    }

    /// Hands on one line of `length` bytes in the input (ending included).
    fn emit(&mut self, line: &[u8], length: u64, each: &mut impl FnMut(Line<'_>)) {
        let too_long = self.skipped > 0;
        let mut bytes = line;
        while let [head @ .., b'\r'] = bytes {
            bytes = head;
        }
        each(Line {
            bytes,
            number: self.number,
            start: self.offset,
            end: self.offset + length,
            too_long,
        });
        self.number += 1;
        self.offset += length;
        self.skipped = 0;
    }
}

/// How far past the line being handed on its bytes are asked for. Replay parses a chunk
/// on one core just after another core read it from the file and found its line feeds:
/// the bytes are in that core's cache, and fetching each line when it comes up was a
/// quarter of [`LineSplitter::emit`]'s time. 512 bytes are some eight lines ahead.
const PREFETCH_AHEAD: usize = 512;

/// Asks for the cache line holding `bytes[at]`, if any, to be fetched ahead of its use.
#[inline]
fn prefetch(bytes: &[u8], at: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(byte) = bytes.get(at) {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: every x86_64 processor has SSE; a prefetch is a hint that reads
        // nothing into the program, of an address inside `bytes`.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(byte).cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (bytes, at);
}

/// Bytes looked at in one step by [`LineFeeds`].
const BLOCK: usize = 64;

/// Positions of the line feeds in a slice, in order, found a 64-byte block at a time.
/// Trace lines are short (60 bytes on average), and a search started again for each
/// costs more than one pass that marks every line feed of a block in a bit mask.
pub(crate) struct LineFeeds<'a> {
    bytes: &'a [u8],
    /// Start of the block `mask` covers.
    block: usize,
    /// The block's line feeds not yet handed on, one bit each (bit 0: its first byte).
    mask: u64,
}

impl<'a> LineFeeds<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> LineFeeds<'a> {
        LineFeeds {
            bytes,
            block: 0,
            mask: block_mask(bytes, 0),
        }
    }
}

impl Iterator for LineFeeds<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        while self.mask == 0 {
            self.block += BLOCK;
            if self.block >= self.bytes.len() {
                return None;
            }
            self.mask = block_mask(self.bytes, self.block);
        }
        let at = self.block + self.mask.trailing_zeros() as usize;
        self.mask &= self.mask - 1;
        Some(at)
    }
}

/// Appends the positions of the line feeds of `bytes` (at most 4 GiB long) to `feeds`,
/// in order: what [`LineFeeds`] yields, in one pass that needs no iterator state, 32
/// bytes a compare where the processor has AVX2. Replay's reading thread runs it over
/// every byte of a trace, on top of its tracking (3 % of a replay's samples, 5 % with
/// [`LineFeeds`]).
pub(crate) fn find_line_feeds(bytes: &[u8], feeds: &mut Vec<u32>) {
    debug_assert!(u32::try_from(bytes.len()).is_ok());
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("popcnt") {
        // SAFETY: the processor has AVX2 and POPCNT, checked just above.
        unsafe { find_line_feeds_avx2(bytes, feeds) };
        return;
    }
    feeds.extend(LineFeeds::new(bytes).map(|at| at as u32));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt")]
fn find_line_feeds_avx2(bytes: &[u8], feeds: &mut Vec<u32>) {
    use std::arch::x86_64::{__m256i, _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_movemask_epi8, _mm256_set1_epi8};
    let newline = _mm256_set1_epi8(b'\n' as i8);
    let mut blocks = bytes.chunks_exact(BLOCK);
    let mut start = 0;
    for block in &mut blocks {
        // SAFETY: two unaligned 32-byte loads, both inside the 64-byte block.
        let (low, high) = unsafe {
            (
                _mm256_loadu_si256(block.as_ptr().cast::<__m256i>()),
                _mm256_loadu_si256(block.as_ptr().add(32).cast::<__m256i>()),
            )
        };
        let low = _mm256_movemask_epi8(_mm256_cmpeq_epi8(low, newline)) as u32;
        let high = _mm256_movemask_epi8(_mm256_cmpeq_epi8(high, newline)) as u32;
        push_positions(feeds, start, u64::from(low) | u64::from(high) << 32);
        start += BLOCK;
    }
    push_positions(feeds, start, block_mask(blocks.remainder(), 0));
}

/// Appends the position of each bit set in `mask` (bit 0: byte `start`), lowest first.
/// A block holds one or two line feeds as a rule: the first [`WRITTEN_ALWAYS`] slots are
/// written whatever their count, with no branch to mispredict (a `push` per line feed,
/// its check for room and its loop exit were most of the scan's time).
#[inline]
fn push_positions(feeds: &mut Vec<u32>, start: usize, mut mask: u64) {
    let count = mask.count_ones() as usize;
    feeds.reserve(BLOCK);
    let len = feeds.len();
    let mut write = |slot: &mut std::mem::MaybeUninit<u32>| {
        // Past the last bit: position `start + 64`, written but not counted below.
        slot.write((start + mask.trailing_zeros() as usize) as u32);
        mask &= mask.wrapping_sub(1);
    };
    let (always, rest) = feeds.spare_capacity_mut()[..BLOCK].split_at_mut(WRITTEN_ALWAYS);
    always.iter_mut().for_each(&mut write);
    if count > WRITTEN_ALWAYS {
        rest[..count - WRITTEN_ALWAYS].iter_mut().for_each(write);
    }
    // SAFETY: room for 64 more was reserved above, and the first `count` (at most 64)
    // spare slots were all written.
    unsafe { feeds.set_len(len + count) };
}

/// Slots [`push_positions`] writes for every block.
const WRITTEN_ALWAYS: usize = 4;

/// The line feeds among the (up to) 64 bytes of `bytes` from `start`, one bit each.
#[inline]
fn block_mask(bytes: &[u8], start: usize) -> u64 {
    let rest = bytes.get(start..).unwrap_or_default();
    match rest.first_chunk::<BLOCK>() {
        Some(block) => full_block_mask(block),
        None => rest
            .iter()
            .enumerate()
            .fold(0, |mask, (i, &b)| mask | u64::from(b == b'\n') << i),
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn full_block_mask(block: &[u8; BLOCK]) -> u64 {
    use std::arch::x86_64::{__m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8};
    let mut mask = 0;
    for part in 0..BLOCK / 16 {
        // SAFETY: every x86_64 processor has SSE2; the load reads 16 bytes of the
        // block's 64, unaligned loads allowed.
        let bits = unsafe {
            let bytes = _mm_loadu_si128(block.as_ptr().add(part * 16).cast::<__m128i>());
            _mm_movemask_epi8(_mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'\n' as i8)))
        };
        mask |= u64::from(bits as u16) << (part * 16);
    }
    mask
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn full_block_mask(block: &[u8; BLOCK]) -> u64 {
    block
        .iter()
        .enumerate()
        .fold(0, |mask, (i, &b)| mask | u64::from(b == b'\n') << i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Seen = (Vec<u8>, u64, u64, u64, bool);

    fn split(chunks: &[&[u8]], max: usize) -> Vec<Seen> {
        split_with(chunks, max, |s, c, each| s.push(c, each))
    }

    /// Lines of `chunks`, each chunk fed by `feed`.
    fn split_with(
        chunks: &[&[u8]],
        max: usize,
        feed: impl Fn(&mut LineSplitter, &[u8], &mut dyn FnMut(Line<'_>)),
    ) -> Vec<Seen> {
        let mut s = LineSplitter::new(0, 1, max);
        let mut out = Vec::new();
        for c in chunks {
            feed(&mut s, c, &mut |l| {
                out.push((l.bytes.to_vec(), l.number, l.start, l.end, l.too_long))
            });
        }
        s.finish(|l| out.push((l.bytes.to_vec(), l.number, l.start, l.end, l.too_long)));
        out
    }

    /// `data` cut at `cuts` (any order, clamped to its length).
    fn cut(data: &[u8], cuts: Vec<usize>) -> Vec<&[u8]> {
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
        cuts.sort();
        let mut chunks = Vec::new();
        let mut last = 0;
        for c in cuts {
            chunks.push(&data[last..c]);
            last = c;
        }
        chunks.push(&data[last..]);
        chunks
    }

    #[test]
    fn crlf_and_partial_lines() {
        let out = split(&[b"ab\r\ncd", b"e\nf\r\r\n", b"tail"], 100);
        assert_eq!(
            out,
            vec![
                (b"ab".to_vec(), 1, 0, 4, false),
                (b"cde".to_vec(), 2, 4, 8, false),
                (b"f".to_vec(), 3, 8, 12, false),
                (b"tail".to_vec(), 4, 12, 16, false),
            ]
        );
    }

    #[test]
    fn overlong_lines_are_cut_and_flagged() {
        let long = vec![b'x'; 50];
        let out = split(&[&long[..20], &long[20..], b"\nok\n"], 10);
        assert_eq!(out[0], (vec![b'x'; 10], 1, 0, 51, true));
        assert_eq!(out[1], (b"ok".to_vec(), 2, 51, 54, false));
        let mut s = LineSplitter::new(0, 1, 10);
        s.push(&long, |_| {});
        assert!(s.pending.len() <= 10, "memory stays bounded");
    }

    proptest! {
        #[test]
        fn line_feeds_are_all_found(data in proptest::collection::vec(
            prop_oneof![Just(b'\n'), Just(b'a'), any::<u8>()], 0..400), from in 0usize..70) {
            let data = &data[from.min(data.len())..];
            let found: Vec<usize> = LineFeeds::new(data).collect();
            let expected: Vec<usize> = memchr::memchr_iter(b'\n', data).collect();
            let mut in_one_pass = Vec::new();
            find_line_feeds(data, &mut in_one_pass);
            prop_assert_eq!(&found, &expected);
            prop_assert_eq!(in_one_pass.into_iter().map(|at| at as usize).collect::<Vec<_>>(), expected);
        }

        #[test]
        fn any_chunking_gives_the_same_lines(data in proptest::collection::vec(
            prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'a'), any::<u8>()], 0..300),
            cuts in proptest::collection::vec(0usize..300, 0..6), max in 1usize..40) {
            let whole = split(&[&data], max);
            let chunks = cut(&data, cuts);
            prop_assert_eq!(&split(&chunks, max), &whole);
            // offsets cover the input exactly
            let end = whole.last().map(|l| l.3).unwrap_or(0);
            prop_assert_eq!(end, data.len() as u64);
        }

        /// Replay's reading thread finds the line feeds; the lines are the same.
        #[test]
        fn line_feeds_found_beforehand_give_the_same_lines(data in proptest::collection::vec(
            prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'a'), any::<u8>()], 0..300),
            cuts in proptest::collection::vec(0usize..300, 0..6), max in 1usize..40) {
            let chunks = cut(&data, cuts);
            let given = split_with(&chunks, max, |s, c, each| {
                s.push_split(c, memchr::memchr_iter(b'\n', c), each)
            });
            prop_assert_eq!(given, split(&chunks, max));
        }
    }
}
