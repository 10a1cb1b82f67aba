//! A chunk of a SIP trace on its way to the parser thread, read into a buffer of 2 MiB
//! on a 2 MiB boundary, which Linux backs with one huge page when it can.
//!
//! Why: the kernel's copy of the file into the chunk was the reading thread's largest
//! item (10–24 % of a replay's samples), and much of it was the processor looking up
//! the 4 KiB pages it wrote to, each lookup a walk of two page tables in this virtual
//! machine. A test program reading the 203 MB bench trace in 1 MiB pieces spent 45–48 ms
//! in `read` with 4 KiB pages and 22–28 ms with a huge page under the buffer. The parser
//! thread, which reads every chunk after it, looks up one page instead of 512 too.
//! Where huge pages are off (or on other systems) the buffer is plain memory.

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::io::{self, Read};
use std::ptr::NonNull;

/// Up to [`CHUNK_BUFFER`] bytes of a trace, in file order.
pub(super) struct Chunk {
    buffer: ChunkBuffer,
    /// Bytes of `buffer` read.
    len: usize,
}

impl Chunk {
    pub(super) fn new() -> Chunk {
        Chunk {
            buffer: ChunkBuffer::new(),
            len: 0,
        }
    }

    /// The bytes read.
    pub(super) fn bytes(&self) -> &[u8] {
        &self.buffer.bytes()[..self.len]
    }

    /// Fills the chunk with the next bytes of `input`, as many as fit; empty at its end.
    pub(super) fn read_from(&mut self, input: &mut dyn Read) -> io::Result<()> {
        self.len = 0;
        let buffer = self.buffer.bytes_mut();
        while self.len < buffer.len() {
            match input.read(&mut buffer[self.len..]) {
                Ok(0) => break,
                Ok(n) => self.len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Bytes of a buffer, and its alignment: one huge page on x86-64 Linux.
pub(super) const CHUNK_BUFFER: usize = 2 << 20;

/// A zeroed buffer of [`CHUNK_BUFFER`] bytes, aligned to its size; see the module docs.
struct ChunkBuffer {
    start: NonNull<u8>,
}

// SAFETY: the buffer is owned memory, reached only through `&self`/`&mut self`.
unsafe impl Send for ChunkBuffer {}

impl ChunkBuffer {
    fn new() -> ChunkBuffer {
        let layout = layout();
        // SAFETY: the layout's size is not zero.
        let Some(start) = NonNull::new(unsafe { alloc(layout) }) else {
            handle_alloc_error(layout)
        };
        advise_huge_page(start);
        // SAFETY: `start` holds `CHUNK_BUFFER` writable bytes; zeroing them (after the
        // advice, so the first touch takes a huge page) makes them initialized.
        unsafe { start.as_ptr().write_bytes(0, CHUNK_BUFFER) };
        ChunkBuffer { start }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `CHUNK_BUFFER` initialized bytes, owned by `self`.
        unsafe { std::slice::from_raw_parts(self.start.as_ptr(), CHUNK_BUFFER) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, borrowed mutably through `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.start.as_ptr(), CHUNK_BUFFER) }
    }
}

impl Drop for ChunkBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.start.as_ptr(), layout()) };
    }
}

fn layout() -> Layout {
    Layout::from_size_align(CHUNK_BUFFER, CHUNK_BUFFER).expect("2 MiB is a power of two")
}

/// Asks Linux to back the buffer at `start` with a huge page (transparent huge pages
/// set to `madvise`, as here, give them only where asked). A refusal leaves the buffer
/// on ordinary pages, as fast as before.
#[cfg(target_os = "linux")]
fn advise_huge_page(start: NonNull<u8>) {
    // SAFETY: the range is this buffer's, untouched so far; the advice changes how it
    // is backed, not its contents.
    let _ = unsafe { libc::madvise(start.as_ptr().cast(), CHUNK_BUFFER, libc::MADV_HUGEPAGE) };
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_page(_start: NonNull<u8>) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_is_zeroed_aligned_and_writable() {
        let mut buffer = ChunkBuffer::new();
        assert_eq!(buffer.bytes().as_ptr() as usize % CHUNK_BUFFER, 0);
        assert!(buffer.bytes().iter().all(|&b| b == 0));
        buffer.bytes_mut()[CHUNK_BUFFER - 1] = 7;
        assert_eq!(buffer.bytes()[CHUNK_BUFFER - 1], 7);
    }

    #[test]
    fn a_chunk_takes_what_fits_and_is_empty_at_the_end() {
        let input = vec![b'x'; CHUNK_BUFFER + 10];
        let mut input = io::Cursor::new(input);
        let mut chunk = Chunk::new();
        chunk.read_from(&mut input).unwrap();
        assert_eq!(chunk.bytes().len(), CHUNK_BUFFER);
        chunk.read_from(&mut input).unwrap();
        assert_eq!(chunk.bytes(), &[b'x'; 10]);
        chunk.read_from(&mut input).unwrap();
        assert!(chunk.bytes().is_empty());
    }
}
