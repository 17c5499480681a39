//! The one place with unsafe code: an anonymous `MAP_SHARED` mapping and the casts that view it as
//! the scoreboard's `#[repr(C)]` structures.
//!
//! Soundness rests on three facts, checked here once:
//! - the mapping is page-aligned and at least `size_of::<Header>() + capacity * size_of::<Slot>()`
//!   bytes long, and `Header`'s size is a multiple of `Slot`'s alignment, so every slot is aligned;
//! - the kernel zero-fills anonymous memory, and all-zero bytes are a valid value of every type in
//!   the layout (they contain only atomics and arrays of atomics);
//! - the layout is only ever accessed through shared references to atomics, so concurrent access
//!   from threads and from forked processes is data-race free.
#![allow(unsafe_code)]

use std::num::NonZeroUsize;
use std::ptr::NonNull;

use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous, munmap};

use crate::ScoreboardError;
use crate::layout::{Header, Slot};

/// An anonymous shared mapping holding one `Header` followed by `capacity` slots.
#[derive(Debug)]
pub(crate) struct Mapping {
    base: NonNull<u8>,
    len: usize,
    capacity: usize,
}

// SAFETY: the mapping is only accessed through shared references to atomics (see the module doc),
// so moving the handle to another thread or sharing it between threads cannot cause a data race.
unsafe impl Send for Mapping {}
// SAFETY: as above: every access goes through `&Header` / `&Slot`, whose fields are all atomics.
unsafe impl Sync for Mapping {}

const _: () = assert!(size_of::<Header>().is_multiple_of(align_of::<Slot>()));
const _: () = assert!(align_of::<Slot>() <= 4096 && align_of::<Header>() <= 4096);

impl Mapping {
    /// Maps zeroed shared memory for a header and `capacity` slots.
    pub(crate) fn create(capacity: usize) -> Result<Mapping, ScoreboardError> {
        let len = capacity
            .checked_mul(size_of::<Slot>())
            .and_then(|s| s.checked_add(size_of::<Header>()))
            .ok_or(ScoreboardError::TooLarge { slots: capacity })?;
        let nonzero =
            NonZeroUsize::new(len).ok_or(ScoreboardError::TooLarge { slots: capacity })?;
        // SAFETY: an anonymous mapping at a kernel-chosen address aliases no existing Rust memory;
        // the returned pointer is checked by nix and owned by this `Mapping` until `Drop`.
        let ptr = unsafe {
            mmap_anonymous(
                None,
                nonzero,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }
        .map_err(ScoreboardError::Mmap)?;
        Ok(Mapping {
            base: ptr.cast::<u8>(),
            len,
            capacity,
        })
    }

    /// Number of slots.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// The header at the start of the mapping.
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: the mapping starts page-aligned with at least `size_of::<Header>()` bytes, zeroed
        // or written only through atomics, which is a valid `Header`; it lives as long as `self`.
        unsafe { &*self.base.as_ptr().cast::<Header>() }
    }

    /// Slot `index`; the caller has checked `index < capacity`.
    pub(crate) fn slot(&self, index: usize) -> &Slot {
        assert!(index < self.capacity, "slot index {index} out of range");
        let offset = size_of::<Header>() + index * size_of::<Slot>();
        // SAFETY: `offset + size_of::<Slot>() <= len` because `index < capacity`; the address is
        // aligned for `Slot` (page-aligned base, header size a multiple of the slot alignment, see
        // the const assertions above); the bytes are a valid `Slot` (all atomics, zero-initialised)
        // and live as long as `self`.
        unsafe { &*self.base.as_ptr().add(offset).cast::<Slot>() }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly what mmap returned, and no reference into the mapping can
        // outlive `self` (they all borrow it). Unmapping affects this process only; a forked child
        // or parent keeps its own mapping of the shared pages.
        let _ = unsafe { munmap(self.base.cast(), self.len) };
    }
}
