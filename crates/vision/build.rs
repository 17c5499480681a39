//! Builds `src/jpeg_rows.c` (row-by-row JPEG decoding on libjpeg's API) and links libjpeg, the
//! library of Debian's libjpeg62-turbo-dev (the same libjpeg-turbo as TurboJPEG's).

fn main() {
    println!("cargo:rerun-if-changed=src/jpeg_rows.c");
    cc::Build::new()
        .file("src/jpeg_rows.c")
        .warnings(true)
        .compile("arbiter_jpeg_rows");
    println!("cargo:rustc-link-lib=jpeg");
}
