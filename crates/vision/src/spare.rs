//! Spare pixel buffers. A 12-megapixel photo decodes into 36 MB; allocating that afresh for
//! every image maps new pages that the kernel must fault in and zero one by one, a cost paid on
//! every request (docs/vision.md has the profile that showed it). A server that decodes image
//! after image instead reuses the buffers of the images it [`recycle`]d, at most
//! [`keep_spare_buffers`] of them (one per decoding thread keeps the memory to what the decodes
//! in flight hold anyway). None are kept unless asked for.
//!
//! Each decoding thread also keeps its own [`scratch`] buffers, when spares are kept: the band of
//! rows a JPEG decodes into and the rows a resize keeps for its vertical pass (403 KB for a
//! 512 x 600 photo, 2 MB for a 12-megapixel one), which allocated per image would be faulted in
//! afresh on every request too.

use std::cell::RefCell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use crate::rgb_image::RgbImage;

/// Largest buffer kept: room for an RGB image of about 40 megapixels.
const MAX_KEPT: usize = 128 << 20;

/// Largest scratch buffer a thread keeps.
const MAX_SCRATCH: usize = 16 << 20;
/// Scratch buffers a thread keeps: as many as one decode uses at once.
const SCRATCH_PER_THREAD: usize = 2;

static KEEP: AtomicUsize = AtomicUsize::new(0);
static SPARES: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

thread_local! {
    static SCRATCH: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Keeps up to `n` recycled buffers for the next decodes (0, the default, keeps none and drops
/// those kept).
pub fn keep_spare_buffers(n: usize) {
    KEEP.store(n, Relaxed);
    let mut spares = SPARES.lock().unwrap_or_else(|e| e.into_inner());
    spares.truncate(n);
}

/// A zeroed buffer of `len` bytes: the smallest kept spare large enough, else a new one.
pub(crate) fn take(len: usize) -> Vec<u8> {
    let found = best_fit(&mut SPARES.lock().unwrap_or_else(|e| e.into_inner()), len);
    zeroed(found, len)
}

/// Takes the smallest of `kept` that holds `len` bytes, if any.
fn best_fit(kept: &mut Vec<Vec<u8>>, len: usize) -> Option<Vec<u8>> {
    let best = kept
        .iter()
        .enumerate()
        .filter(|(_, b)| b.capacity() >= len)
        .min_by_key(|(_, b)| b.capacity())
        .map(|(i, _)| i)?;
    Some(kept.swap_remove(best))
}

/// Adds `buffer` to `kept`, which holds at most `n`: when full, in place of a smaller one.
fn keep_largest(kept: &mut Vec<Vec<u8>>, buffer: Vec<u8>, n: usize) {
    if kept.len() < n {
        kept.push(buffer);
    } else if let Some(smallest) = kept.iter_mut().min_by_key(|b| b.capacity())
        && smallest.capacity() < buffer.capacity()
    {
        *smallest = buffer;
    }
}

/// `buffer` cleared and zeroed to `len` bytes, or a new zeroed buffer.
fn zeroed(buffer: Option<Vec<u8>>, len: usize) -> Vec<u8> {
    match buffer {
        Some(mut buffer) => {
            buffer.clear();
            buffer.resize(len, 0);
            buffer
        }
        None => vec![0; len],
    }
}

/// A zeroed buffer of `len` bytes for this thread's work on one image: the smallest large enough
/// of those this thread gave back, else a new one. Give it back with [`give_back`].
pub(crate) fn scratch(len: usize) -> Vec<u8> {
    let keep = KEEP.load(Relaxed) > 0;
    let found = SCRATCH.with_borrow_mut(|kept| {
        if !keep {
            kept.clear();
            return None;
        }
        best_fit(kept, len)
    });
    zeroed(found, len)
}

/// Keeps a [`scratch`] buffer for this thread's next image (when spares are kept and it is not
/// too big), replacing a smaller one when the thread already keeps enough.
pub(crate) fn give_back(buffer: Vec<u8>) {
    if KEEP.load(Relaxed) == 0 || buffer.capacity() > MAX_SCRATCH {
        return;
    }
    SCRATCH.with_borrow_mut(|kept| keep_largest(kept, buffer, SCRATCH_PER_THREAD));
}

/// Hands a decoded image's buffer back for a later decode (when spares are kept).
pub fn recycle(image: RgbImage) {
    let data = image.data;
    let keep = KEEP.load(Relaxed);
    if keep == 0 || data.capacity() > MAX_KEPT {
        return;
    }
    keep_largest(
        &mut SPARES.lock().unwrap_or_else(|e| e.into_inner()),
        data,
        keep,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(data: Vec<u8>) -> RgbImage {
        RgbImage {
            width: 1,
            height: 1,
            data,
        }
    }

    #[test]
    fn recycled_buffers_are_reused_zeroed_and_bounded() {
        // One test touches the process-wide pool, so the steps run in order.
        keep_spare_buffers(0);
        recycle(image(take(1000)));
        // (Not by address: the allocator may well hand the freed block out again.)
        assert!(
            SPARES.lock().unwrap().is_empty(),
            "kept a spare while asked for none"
        );

        keep_spare_buffers(1);
        let mut first = take(1000);
        first.fill(7);
        let address = first.as_ptr();
        recycle(image(first));
        let second = take(300);
        assert_eq!(second.as_ptr(), address, "the spare was not reused");
        assert!(second.len() == 300 && second.iter().all(|&b| b == 0));
        recycle(image(second));
        recycle(image(vec![0; 10]));
        assert_eq!(
            SPARES.lock().unwrap().len(),
            1,
            "more spares than asked for"
        );
        assert_eq!(take(5000).len(), 5000, "a bigger image gets its own buffer");

        // A thread's scratch buffers: the smallest that fits comes back zeroed, at most
        // SCRATCH_PER_THREAD are kept, none too big, and none once spares are not kept.
        let mut small = scratch(100);
        small.fill(9);
        let mut big = scratch(4000);
        big.fill(9);
        let (small_at, big_at) = (small.as_ptr(), big.as_ptr());
        give_back(big);
        give_back(small);
        let again = scratch(50);
        assert_eq!(
            again.as_ptr(),
            small_at,
            "not the smallest scratch that fits"
        );
        assert!(again.len() == 50 && again.iter().all(|&b| b == 0));
        let again_big = scratch(2000);
        assert_eq!(
            again_big.as_ptr(),
            big_at,
            "the bigger scratch was not reused"
        );
        assert!(again_big.iter().all(|&b| b == 0));
        for b in [
            again,
            again_big,
            vec![0; 10],
            Vec::with_capacity(MAX_SCRATCH + 1),
        ] {
            give_back(b);
        }
        let kept: Vec<usize> = SCRATCH.with_borrow(|k| k.iter().map(Vec::capacity).collect());
        assert_eq!(kept.len(), SCRATCH_PER_THREAD, "{kept:?}");
        assert!(
            kept.iter().all(|&c| (100..=MAX_SCRATCH).contains(&c)),
            "{kept:?}"
        );

        keep_spare_buffers(0);
        assert!(SPARES.lock().unwrap().is_empty());
        let _ = scratch(10);
        assert!(
            SCRATCH.with_borrow(Vec::is_empty),
            "kept scratch while asked for none"
        );
        give_back(vec![0; 10]);
        assert!(
            SCRATCH.with_borrow(Vec::is_empty),
            "kept scratch while asked for none"
        );
    }
}
