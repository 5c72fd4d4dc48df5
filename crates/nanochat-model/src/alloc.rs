//! A caching global allocator for CPU tensors: large blocks (≥ 1 MiB) that are freed are kept
//! and handed back to the next allocation of the same rounded size, instead of going back to
//! the kernel and being faulted in again page by page.
//!
//! Every burn op on the CPU backend returns a fresh buffer, and a training step allocates the
//! same sizes in the same order every step. With the system allocator each large buffer is a
//! fresh `mmap` (glibc's threshold is at most 32 MiB): measured on a d4 step, 17 % of the
//! process's CPU time was the kernel zero-filling pages on first touch and unmapping them
//! again. With this allocator a steady-state step reuses its buffers (`nanochat bench train`
//! reports the page faults per step).
//!
//! Below 1 MiB the system allocator serves; on glibc its own thresholds are fixed at start-up
//! (blocks up to 1 MiB from the heap, freed heap kept) — left dynamic, glibc lowers its mmap
//! threshold back to 128 KiB once large blocks stop being returned to it, and every mid-sized
//! buffer becomes a fresh mapping again.
//!
//! Install it in a binary with `#[global_allocator] static A: CachingAllocator = CachingAllocator;`
//! (the `nanochat` command does). The cache holds at most half the machine's memory (or
//! `NANOCHAT_ALLOC_CACHE_MB` MiB; `0` turns caching off); beyond that the oldest cached block
//! is released. Small blocks go straight to the system allocator.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Blocks at least this large are cached.
const MIN_BYTES: usize = 1 << 20;
/// Sizes are rounded up to pages, so that equal tensor shapes share blocks.
const GRANULE: usize = 4096;
/// Alignment of the cached blocks (requests for more pass through): a page, so that the
/// 128-byte-aligned packing buffers of the matrix products are cached too.
const ALIGN: usize = 4096;
/// Cached blocks at most.
const SLOTS: usize = 512;
/// `usize::MAX`: the limit is not computed yet.
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);
/// Whether the system allocator's thresholds were set.
static TUNED: AtomicBool = AtomicBool::new(false);
static CACHE: Mutex<Cache> = Mutex::new(Cache {
    blocks: [(0, 0); SLOTS],
    len: 0,
    bytes: 0,
});

/// The cached blocks, oldest first: `(rounded size, address)`.
struct Cache {
    blocks: [(usize, usize); SLOTS],
    len: usize,
    bytes: usize,
}

impl Cache {
    fn take(&mut self, size: usize) -> Option<*mut u8> {
        let i = self.blocks[..self.len]
            .iter()
            .rposition(|&(s, _)| s == size)?;
        let (_, addr) = self.blocks[i];
        self.blocks.copy_within(i + 1..self.len, i);
        self.len -= 1;
        self.bytes -= size;
        Some(addr as *mut u8)
    }

    /// Caches the block; returns the blocks that must be released to make room.
    fn put(&mut self, size: usize, addr: usize, limit: usize, evicted: &mut Vec<(usize, usize)>) {
        while self.len > 0 && (self.len == SLOTS || self.bytes + size > limit) {
            let oldest = self.blocks[0];
            self.blocks.copy_within(1..self.len, 0);
            self.len -= 1;
            self.bytes -= oldest.0;
            evicted.push(oldest);
        }
        self.blocks[self.len] = (size, addr);
        self.len += 1;
        self.bytes += size;
    }
}

/// The caching allocator (see the module docs).
#[derive(Debug, Default, Clone, Copy)]
pub struct CachingAllocator;

fn limit() -> usize {
    let l = LIMIT.load(Ordering::Relaxed);
    if l != usize::MAX {
        return l;
    }
    // Computed once, outside the cache lock (reading the environment allocates).
    let l = match std::env::var("NANOCHAT_ALLOC_CACHE_MB") {
        Ok(v) => v.trim().parse::<usize>().map_or(0, |mb| mb << 20),
        Err(_) => physical_memory() / 2,
    };
    LIMIT.store(l, Ordering::Relaxed);
    l
}

fn physical_memory() -> usize {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        })
        .map_or(4 << 30, |kb| kb << 10)
}

/// glibc: serve up to `MIN_BYTES` from the heap and keep freed heap memory (256 MiB) instead of
/// trimming it, once, before the first allocation through this allocator.
#[inline]
fn tune_system_allocator() {
    if TUNED.load(Ordering::Relaxed) {
        return;
    }
    TUNED.store(true, Ordering::Relaxed);
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets allocator parameters; no allocator lock is held here.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MIN_BYTES as libc::c_int);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

fn cached_layout(layout: Layout) -> Option<Layout> {
    if layout.size() < MIN_BYTES || layout.align() > ALIGN {
        return None;
    }
    let size = layout.size().checked_add(GRANULE - 1)? / GRANULE * GRANULE;
    Layout::from_size_align(size, ALIGN).ok()
}

fn lock() -> std::sync::MutexGuard<'static, Cache> {
    CACHE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Returns every cached block to the system (for example after training, before a long
/// evaluation of other shapes).
pub fn release_cached() {
    let blocks: Vec<(usize, usize)> = {
        let mut c = lock();
        let v = c.blocks[..c.len].to_vec();
        c.len = 0;
        c.bytes = 0;
        v
    };
    for (size, addr) in blocks {
        // SAFETY: cached blocks were allocated by `System` with exactly this layout and are
        // owned by the cache alone.
        unsafe {
            System.dealloc(
                addr as *mut u8,
                Layout::from_size_align_unchecked(size, ALIGN),
            )
        };
    }
}

// SAFETY: every block handed out is either the system allocator's own (small or unusual
// layouts) or a block of `cached_layout(layout)` — allocated by `System` with that layout,
// owned by exactly one user at a time (the cache removes it before returning it), and given
// back to `System` with that same layout.
unsafe impl GlobalAlloc for CachingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        tune_system_allocator();
        let Some(big) = cached_layout(layout) else {
            // SAFETY: forwarded unchanged.
            return unsafe { System.alloc(layout) };
        };
        if let Some(p) = lock().take(big.size()) {
            return p;
        }
        // SAFETY: `big` has a non-zero size.
        unsafe { System.alloc(big) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        tune_system_allocator();
        let Some(big) = cached_layout(layout) else {
            // SAFETY: forwarded unchanged.
            return unsafe { System.alloc_zeroed(layout) };
        };
        if let Some(p) = lock().take(big.size()) {
            // SAFETY: the block is at least `layout.size()` bytes and ours alone.
            unsafe { std::ptr::write_bytes(p, 0, layout.size()) };
            return p;
        }
        // SAFETY: `big` has a non-zero size.
        unsafe { System.alloc_zeroed(big) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(big) = cached_layout(layout) else {
            // SAFETY: forwarded unchanged.
            return unsafe { System.dealloc(ptr, layout) };
        };
        let limit = limit();
        if big.size() > limit {
            // SAFETY: allocated by `System` with `big`.
            return unsafe { System.dealloc(ptr, big) };
        }
        let mut evicted = Vec::new();
        lock().put(big.size(), ptr as usize, limit, &mut evicted);
        for (size, addr) in evicted {
            // SAFETY: evicted blocks were allocated by `System` with this layout.
            unsafe {
                System.dealloc(
                    addr as *mut u8,
                    Layout::from_size_align_unchecked(size, ALIGN),
                )
            };
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `layout.align()` and a non-zero `new_size` form a
        // valid layout.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if cached_layout(layout).is_none() && cached_layout(new).is_none() {
            // SAFETY: forwarded unchanged; neither side is a cached block.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: `new` is valid (above); both blocks are live and distinct.
        unsafe {
            let p = self.alloc(new);
            if !p.is_null() {
                std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            p
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_reuses_exact_sizes_and_evicts_oldest_first() {
        let mut c = Cache {
            blocks: [(0, 0); SLOTS],
            len: 0,
            bytes: 0,
        };
        let mut ev = Vec::new();
        c.put(8192, 1, 21_000, &mut ev);
        c.put(4096, 2, 21_000, &mut ev);
        c.put(8192, 3, 21_000, &mut ev);
        assert!(ev.is_empty());
        // Over the limit: the oldest goes.
        c.put(4096, 4, 21_000, &mut ev);
        assert_eq!(ev, [(8192, 1)]);
        assert_eq!(c.take(8192), Some(3 as *mut u8));
        assert_eq!(c.take(8192), None);
        assert_eq!(
            c.take(4096),
            Some(4 as *mut u8),
            "the newest block of a size first"
        );
        assert_eq!(c.bytes, 4096);
    }

    #[test]
    fn only_large_plainly_aligned_blocks_are_cached() {
        assert!(cached_layout(Layout::from_size_align(1000, 8).unwrap()).is_none());
        assert!(cached_layout(Layout::from_size_align(MIN_BYTES, 8192).unwrap()).is_none());
        assert!(cached_layout(Layout::from_size_align(MIN_BYTES, 128).unwrap()).is_some());
        let l = cached_layout(Layout::from_size_align(MIN_BYTES + 1, 16).unwrap()).unwrap();
        assert_eq!((l.size(), l.align()), (MIN_BYTES + GRANULE, ALIGN));
    }
}
