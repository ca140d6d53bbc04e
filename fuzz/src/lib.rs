//! What every fuzz target checks besides "no panic": memory bounded by the input, and output
//! that is valid JSON, line by line.
//!
//! Invariants: the allocation bound is on live bytes of the Rust heap during one input, so a
//! length field trusted before it is checked (a petabyte request, or a gigabyte touched for a
//! 239-byte file) fails the run at once instead of depending on the machine's memory. Time is
//! bounded by libFuzzer's `-timeout`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Live heap bytes allowed per input: a fixed allowance (read buffers, decompression state)
/// plus this many bytes per input byte (tables and rows built from it).
const BASE_ALLOWANCE: usize = 32 << 20;
const PER_INPUT_BYTE: usize = 256;

pub struct BoundedAlloc {
    live: AtomicUsize,
    limit: AtomicUsize,
}

impl BoundedAlloc {
    pub const fn new() -> Self {
        BoundedAlloc { live: AtomicUsize::new(0), limit: AtomicUsize::new(usize::MAX) }
    }
}

impl Default for BoundedAlloc {
    fn default() -> Self {
        Self::new()
    }
}

unsafe impl GlobalAlloc for BoundedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !self.reserve(layout.size()) {
            // Rust reports "memory allocation of N bytes failed" and aborts: a finding.
            return std::ptr::null_mut();
        }
        let p = System.alloc(layout);
        if p.is_null() {
            self.live.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        self.live.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        if new_size > old && !self.reserve(new_size - old) {
            return std::ptr::null_mut();
        }
        let p = System.realloc(ptr, layout, new_size);
        if p.is_null() {
            if new_size > old {
                self.live.fetch_sub(new_size - old, Ordering::Relaxed);
            }
        } else if new_size < old {
            self.live.fetch_sub(old - new_size, Ordering::Relaxed);
        }
        p
    }
}

impl BoundedAlloc {
    fn reserve(&self, size: usize) -> bool {
        let live = self.live.fetch_add(size, Ordering::Relaxed).saturating_add(size);
        if live > self.limit.load(Ordering::Relaxed) {
            self.live.fetch_sub(size, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Runs `f` with the heap bounded in proportion to `input_len`.
    pub fn bounded<T>(&self, input_len: usize, f: impl FnOnce() -> T) -> T {
        let allowance = BASE_ALLOWANCE.saturating_add(input_len.saturating_mul(PER_INPUT_BYTE));
        let before = self.live.load(Ordering::Relaxed);
        self.limit.store(before.saturating_add(allowance), Ordering::Relaxed);
        // Lifted again however `f` ends, so a panic's report is not cut short by the bound.
        let _unbound = Unbound(&self.limit);
        f()
    }
}

struct Unbound<'a>(&'a AtomicUsize);

impl Drop for Unbound<'_> {
    fn drop(&mut self) {
        self.0.store(usize::MAX, Ordering::Relaxed);
    }
}

/// A writer that checks every line written to it is one valid JSON value, and keeps nothing
/// but the line being written.
#[derive(Default)]
pub struct JsonLines {
    line: Vec<u8>,
    pub lines: usize,
}

impl Write for JsonLines {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for part in buf.split_inclusive(|&b| b == b'\n') {
            self.line.extend_from_slice(part);
            if self.line.last() == Some(&b'\n') {
                if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&self.line) {
                    panic!("emitted line is not JSON ({e}): {}", String::from_utf8_lossy(&self.line));
                }
                self.lines += 1;
                self.line.clear();
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        assert!(self.line.is_empty(), "output ends inside a line: {}", String::from_utf8_lossy(&self.line));
        Ok(())
    }
}

/// Errors must say where: the file and offset of the event (or, before any event, that the
/// bytes are not a binlog file).
pub fn assert_error_names_place(err: &anyhow::Error, file: &str) {
    let text = format!("{err:#}");
    assert!(
        text.contains(&format!("{file}:")) || text.contains("offset") || text.contains("not a binlog file"),
        "error does not name the place: {text}"
    );
}
