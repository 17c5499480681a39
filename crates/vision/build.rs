//! Builds `src/jpeg_rows.c` (JPEG decoding on libjpeg's API, row by row) and `src/jpeg_write.c`
//! (the tests' JPEG encoder), and links libjpeg, the library of Debian's libjpeg62-turbo-dev.
//!
//! The C files are compiled with `-Wall -Wextra` (cc's `warnings`, whatever `CFLAGS` holds) and
//! stay free of warnings: cc shows each one as a cargo warning of this crate. `-Wextra` brings
//! `-Wclobbered`, the check that matters around the file's `setjmp`s.

fn main() {
    println!("cargo:rerun-if-changed=src/jpeg_rows.c");
    println!("cargo:rerun-if-changed=src/jpeg_write.c");
    cc::Build::new()
        .file("src/jpeg_rows.c")
        // The tests' JPEG encoder; nothing else calls it, so the linker leaves it out.
        .file("src/jpeg_write.c")
        // -Wall -Wextra with gcc and clang.
        .warnings(true)
        .compile("arbiter_jpeg_rows");
    println!("cargo:rustc-link-lib=jpeg");
}
