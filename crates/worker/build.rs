//! Converts `docs/openapi.yaml`, the one description of the API, into the JSON that
//! `GET /openapi.json` serves and the `/docs` page renders, so a browser needs no YAML parser.

use std::path::PathBuf;

fn main() {
    let spec = PathBuf::from("../../docs/openapi.yaml");
    println!("cargo::rerun-if-changed={}", spec.display());
    let yaml = std::fs::read_to_string(&spec).expect("docs/openapi.yaml is readable");
    let value: serde_json::Value =
        serde_yaml_ng::from_str(&yaml).expect("docs/openapi.yaml is valid YAML");
    let json = serde_json::to_string(&value).expect("the spec serializes as JSON");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("openapi.json"), json).expect("OUT_DIR is writable");
}
