//! A cell for plain (non-atomic) data whose use a protocol hands from one
//! thread or process to another, with loom's `with`/`with_mut` API in both
//! worlds (tokio's `loom::cell::UnsafeCell` shim is the model), and the byte
//! buffers of a shared region built from such cells.
//!
//! Outside loom [`UnsafeCell`] is std's, `#[repr(transparent)]`, and `with`
//! / `with_mut` just call the closure with the pointer (`#[inline]`: no
//! code beyond the access itself). Under `cfg(loom)` it is loom's cell,
//! which records each access: a read or write not ordered after the last
//! conflicting access (by the atomics that hand the data over) is a data
//! race, and fails the model.

/// A cell of plain data accessed through raw pointers in closures, so that
/// loom can see where each access starts and ends.
#[cfg_attr(not(loom), repr(transparent))]
pub struct UnsafeCell<T: ?Sized>(
    #[cfg(not(loom))] std::cell::UnsafeCell<T>,
    #[cfg(loom)] loom::cell::UnsafeCell<T>,
);

impl<T> UnsafeCell<T> {
    /// A cell holding `v`.
    // The same API in both worlds; outside loom the cells are views of
    // mapped bytes (SharedBufs::from_raw), so nothing builds one this way yet.
    #[allow(dead_code)]
    #[cfg(not(loom))]
    #[inline]
    pub const fn new(v: T) -> UnsafeCell<T> {
        UnsafeCell(std::cell::UnsafeCell::new(v))
    }

    /// A cell holding `v` (loom: not `const`).
    #[cfg(loom)]
    #[track_caller]
    pub fn new(v: T) -> UnsafeCell<T> {
        UnsafeCell(loom::cell::UnsafeCell::new(v))
    }
}

impl<T: ?Sized> UnsafeCell<T> {
    /// Calls `f` with a pointer for reading the value. The caller must
    /// know (by the protocol that hands the data over) that nobody writes
    /// it meanwhile; loom checks that.
    #[inline]
    #[cfg_attr(loom, track_caller)]
    pub fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        #[cfg(not(loom))]
        {
            f(self.0.get())
        }
        #[cfg(loom)]
        {
            self.0.with(f)
        }
    }

    /// Calls `f` with a pointer for writing the value. The caller must
    /// know (by the protocol) that nobody else reads or writes it
    /// meanwhile; loom checks that.
    #[inline]
    #[cfg_attr(loom, track_caller)]
    pub fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        #[cfg(not(loom))]
        {
            f(self.0.get())
        }
        #[cfg(loom)]
        {
            self.0.with_mut(f)
        }
    }
}

impl<T: ?Sized> std::fmt::Debug for UnsafeCell<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UnsafeCell { .. }")
    }
}

/// `count` byte buffers of `size` bytes each, every one an [`UnsafeCell`]:
/// the payload buffers of a shared region, each used by one party at a
/// time as the region's atomics hand it over (the request area's slot
/// buffers: the submitter writes a request, the worker that took the slot
/// reads it and writes the response, the submitter reads that).
///
/// Outside loom the buffers are raw memory of a mapping
/// ([`SharedBufs::from_raw`]); buffer `i` is viewed as an
/// `UnsafeCell<[u8]>` of `size` bytes, which has the layout of `[u8]`
/// (`#[repr(transparent)]` all the way down), so the view adds nothing
/// and [`with`](SharedBufs::with) compiles to the pointer arithmetic alone.
/// Under loom ([`SharedBufs::on_heap`]) each buffer is a loom cell of its
/// own, so every payload copy made through `with`/`with_mut` is checked for
/// data races against the hand-over.
///
/// Only the closures' accesses are seen by loom: a pointer kept after the
/// closure returns is an access loom checks where it starts only.
pub struct SharedBufs {
    #[cfg(not(loom))]
    base: *mut u8,
    #[cfg(loom)]
    cells: Box<[UnsafeCell<Box<[u8]>>]>,
    size: usize,
    count: usize,
}

// SAFETY: the buffers are plain bytes, reached only through `with` and
// `with_mut`, whose callers keep to the region's hand-over protocol (one
// writer, or readers, at a time per buffer); the memory is valid for the
// value's life (contract of `from_raw`, or owned under loom).
unsafe impl Send for SharedBufs {}
// SAFETY: as above.
unsafe impl Sync for SharedBufs {}

impl std::fmt::Debug for SharedBufs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBufs")
            .field("size", &self.size)
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl SharedBufs {
    /// The `count` buffers of `size` bytes that follow each other from
    /// `base`.
    ///
    /// # Safety
    ///
    /// `base` must be valid for reads and writes of `count × size` bytes
    /// (which must not overflow `usize`) for as long as the value lives,
    /// and every access to those bytes, in any process, must go through
    /// this value's `with`/`with_mut` or keep to the same hand-over.
    #[cfg(not(loom))]
    pub unsafe fn from_raw(base: *mut u8, size: usize, count: usize) -> SharedBufs {
        assert!(size.checked_mul(count).is_some(), "buffer region overflows");
        SharedBufs { base, size, count }
    }

    /// Under loom: refused (a panic). Memory mapped from a file cannot be
    /// modelled, and code over a mapping does not run in loom models
    /// (which build their regions with [`SharedBufs::on_heap`]); this only
    /// lets that code compile under `cfg(loom)`.
    ///
    /// # Safety
    ///
    /// As outside loom.
    #[cfg(loom)]
    pub unsafe fn from_raw(_base: *mut u8, _size: usize, _count: usize) -> SharedBufs {
        panic!("SharedBufs::from_raw under loom: models use SharedBufs::on_heap")
    }

    /// `count` zeroed buffers of `size` bytes on the heap, one loom cell
    /// each (loom models).
    #[cfg(loom)]
    pub fn on_heap(size: usize, count: usize) -> SharedBufs {
        let cells = (0..count)
            .map(|_| UnsafeCell::new(vec![0u8; size].into_boxed_slice()))
            .collect();
        SharedBufs { cells, size, count }
    }

    /// The size of each buffer in bytes.
    // This and `count`: only the loom models' dispatcher checks them today.
    #[cfg_attr(not(loom), allow(dead_code))]
    #[inline]
    pub fn size(&self) -> usize {
        self.size
    }

    /// The number of buffers.
    #[cfg_attr(not(loom), allow(dead_code))]
    #[inline]
    pub fn count(&self) -> usize {
        self.count
    }

    /// Buffer `i` as a cell: `size` bytes of the mapping.
    #[cfg(not(loom))]
    #[inline]
    fn cell(&self, i: usize) -> &UnsafeCell<[u8]> {
        assert!(i < self.count, "buffer {i} of {}", self.count);
        // SAFETY: buffer i lies within the `count × size` bytes from `base`
        // (i < count; the product does not overflow, checked in
        // `from_raw`), valid while `self` lives (contract of `from_raw`).
        // `UnsafeCell<[u8]>` is `#[repr(transparent)]` over std's
        // `UnsafeCell<[u8]>`, itself transparent over `[u8]`, so a slice
        // pointer of `size` bytes is a valid pointer to it (same
        // metadata); the bytes are only reached through the cell, which
        // allows mutation behind `&`.
        unsafe {
            let p = std::ptr::slice_from_raw_parts_mut(self.base.add(i * self.size), self.size);
            &*(p as *const UnsafeCell<[u8]>)
        }
    }

    /// Calls `f` with a pointer to the first of the `size` bytes of buffer
    /// `i` (< count), for reading. The caller must own the buffer for
    /// reading by the region's protocol (nobody writes it meanwhile).
    #[inline]
    #[cfg_attr(loom, track_caller)]
    pub fn with<R>(&self, i: usize, f: impl FnOnce(*const u8) -> R) -> R {
        #[cfg(not(loom))]
        {
            self.cell(i).with(|p| f(p.cast::<u8>()))
        }
        #[cfg(loom)]
        {
            // SAFETY: `p` points to the cell's live box, read only here.
            self.cells[i].with(|p| f(unsafe { (*p).as_ptr() }))
        }
    }

    /// Calls `f` with a pointer to the first of the `size` bytes of buffer
    /// `i` (< count), for writing. The caller must own the buffer by the
    /// region's protocol (nobody else reads or writes it meanwhile).
    #[inline]
    #[cfg_attr(loom, track_caller)]
    pub fn with_mut<R>(&self, i: usize, f: impl FnOnce(*mut u8) -> R) -> R {
        #[cfg(not(loom))]
        {
            self.cell(i).with_mut(|p| f(p.cast::<u8>()))
        }
        #[cfg(loom)]
        {
            // SAFETY: `p` points to the cell's live box, which this write
            // access owns (loom checks that nobody else uses the cell).
            self.cells[i].with_mut(|p| f(unsafe { (*p).as_mut_ptr() }))
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// `UnsafeCell<[u8]>` has the layout of `[u8]`, which the view of
    /// mapped bytes as cells relies on.
    #[test]
    fn cell_of_bytes_has_the_layout_of_bytes() {
        let v = [0u8; 24];
        let c = std::ptr::slice_from_raw_parts(v.as_ptr(), v.len()) as *const UnsafeCell<[u8]>;
        // SAFETY: a valid pointer to 24 bytes; only sizes are read.
        let size = unsafe { std::mem::size_of_val(&*c) };
        assert_eq!(size, 24);
        assert_eq!(std::mem::align_of::<UnsafeCell<[u8; 3]>>(), 1);
        assert_eq!(std::mem::size_of::<UnsafeCell<u64>>(), 8);
    }

    /// Each buffer is its own `size` bytes of the region, in order.
    #[test]
    fn buffers_follow_each_other_in_the_region() {
        let mut region = vec![0u8; 3 * 8];
        // SAFETY: 24 bytes, valid while `bufs` lives; only used through it.
        let bufs = unsafe { SharedBufs::from_raw(region.as_mut_ptr(), 8, 3) };
        assert_eq!((bufs.size(), bufs.count()), (8, 3));
        for i in 0..3 {
            // SAFETY: 8 bytes into buffer i, which nobody else uses.
            bufs.with_mut(i, |p| unsafe { std::ptr::write_bytes(p, i as u8 + 1, 8) });
        }
        let mut second = [0u8; 8];
        // SAFETY: 8 bytes of buffer 1.
        bufs.with(1, |p| unsafe {
            std::ptr::copy_nonoverlapping(p, second.as_mut_ptr(), 8)
        });
        assert_eq!(second, [2; 8]);
        assert_eq!(&region[..8], &[1; 8]);
        assert_eq!(&region[16..], &[3; 8]);
    }

    /// A buffer index past the region is refused.
    #[test]
    #[should_panic(expected = "buffer 3 of 3")]
    fn buffer_past_the_region_is_refused() {
        let mut region = vec![0u8; 3 * 8];
        // SAFETY: as above.
        let bufs = unsafe { SharedBufs::from_raw(region.as_mut_ptr(), 8, 3) };
        bufs.with(3, |_| ());
    }
}
