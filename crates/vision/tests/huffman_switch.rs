//! The switch that turns Arbiter's own Huffman decoder off (`server.own_huffman_decoder`): off,
//! libjpeg reads every scan and the pixels are the same. Its own test binary, since the switch is
//! process-wide.

use std::path::Path;

use arbiter_vision::{
    Limits, Resize, decode_resized_with, own_huffman_scans, use_own_huffman_decoder,
};

fn fixture(name: &str) -> Vec<u8> {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"));
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn decode(bytes: &[u8]) -> Vec<u8> {
    let resized = decode_resized_with(bytes, &Limits::default(), 8, 8, &Resize::SEED, false)
        .expect("decodes");
    assert!(resized.banded, "decoded a band at a time");
    resized.image.data
}

#[test]
fn off_leaves_every_scan_to_libjpeg_with_the_same_pixels() {
    let baseline = fixture("jpeg_444.jpg");
    let before = own_huffman_scans();
    let ours = decode(&baseline);
    assert_eq!(
        own_huffman_scans(),
        before + 1,
        "the own decoder read the baseline scan"
    );

    assert!(!use_own_huffman_decoder(false));
    let theirs = decode(&baseline);
    assert_eq!(
        own_huffman_scans(),
        before + 1,
        "the own decoder ran while off"
    );
    assert_eq!(ours, theirs);

    assert!(
        use_own_huffman_decoder(true),
        "built against libjpeg-turbo 2.1"
    );
    assert_eq!(decode(&baseline), ours);
    assert_eq!(own_huffman_scans(), before + 2);
}
