//! Builds `src/jpeg_rows.c` (row-by-row JPEG decoding on libjpeg's API) and links libjpeg, the
//! library of Debian's libjpeg62-turbo-dev (the same libjpeg-turbo as TurboJPEG's).
//!
//! The C file is compiled with `-Wall -Wextra` (cc's `warnings`, whatever `CFLAGS` holds) and
//! stays free of warnings: cc shows each one as a cargo warning of this crate. `-Wextra` brings
//! `-Wclobbered`, the check that matters around the file's `setjmp`s.

fn main() {
    println!("cargo:rerun-if-changed=src/jpeg_rows.c");
    cc::Build::new()
        .file("src/jpeg_rows.c")
        // -Wall -Wextra with gcc and clang.
        .warnings(true)
        .compile("arbiter_jpeg_rows");
    println!("cargo:rustc-link-lib=jpeg");
}
