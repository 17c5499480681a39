//! Spare pixel buffers. A 12-megapixel photo decodes into 36 MB; allocating that afresh for
//! every image maps new pages that the kernel must fault in and zero one by one (a tenth of the
//! decoding threads' time in a profile of 12-megapixel traffic). A server that decodes image
//! after image instead reuses the buffers of the images it [`recycle`]d, at most
//! [`keep_spare_buffers`] of them (one per decoding thread keeps the memory to what the decodes
//! in flight hold anyway). None are kept unless asked for.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use crate::RgbImage;

/// Largest buffer kept: room for an RGB image of about 40 megapixels.
const MAX_KEPT: usize = 128 << 20;

static KEEP: AtomicUsize = AtomicUsize::new(0);
static SPARES: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// Keeps up to `n` recycled buffers for the next decodes (0, the default, keeps none and drops
/// those kept).
pub fn keep_spare_buffers(n: usize) {
    KEEP.store(n, Relaxed);
    let mut spares = SPARES.lock().unwrap_or_else(|e| e.into_inner());
    spares.truncate(n);
}

/// A zeroed buffer of `len` bytes: a kept spare large enough, else a new one.
pub(crate) fn take(len: usize) -> Vec<u8> {
    let found = {
        let mut spares = SPARES.lock().unwrap_or_else(|e| e.into_inner());
        spares
            .iter()
            .position(|b| b.capacity() >= len)
            .map(|i| spares.swap_remove(i))
    };
    match found {
        Some(mut buffer) => {
            buffer.clear();
            buffer.resize(len, 0);
            buffer
        }
        None => vec![0; len],
    }
}

/// Hands a decoded image's buffer back for a later decode (when spares are kept).
pub fn recycle(image: RgbImage) {
    let data = image.data;
    let keep = KEEP.load(Relaxed);
    if keep == 0 || data.capacity() > MAX_KEPT {
        return;
    }
    let mut spares = SPARES.lock().unwrap_or_else(|e| e.into_inner());
    if spares.len() < keep {
        spares.push(data);
    } else if let Some(smallest) = spares.iter_mut().min_by_key(|b| b.capacity())
        && smallest.capacity() < data.capacity()
    {
        *smallest = data;
    }
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
        keep_spare_buffers(0);
        assert!(SPARES.lock().unwrap().is_empty());
    }
}
