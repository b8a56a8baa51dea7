//! Generates the protocol's Rust types from `docs/cinder.proto`, so the schema has one source.
//!
//! protox parses the schema in Rust, so a build needs no `protoc` binary; prost-build turns the
//! descriptors into the prost structs `src/protocol/messages.rs` includes.

use std::path::PathBuf;

/// The file prost-build writes for the schema's `package cinder.v1`.
const GENERATED: &str = "cinder.v1.rs";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // compile_fds does not emit rerun hints itself (only compile_protos does).
    println!("cargo:rerun-if-changed=docs/cinder.proto");
    println!("cargo:rerun-if-changed=build.rs");
    let descriptors = protox::compile(["cinder.proto"], ["docs"])?;
    prost_build::Config::new().compile_fds(descriptors)?;

    // prost-build derives `Copy` for every message whose fields are all scalars (today `Policy`,
    // `Ok`, `Ping`, ...). The schema evolves by adding fields, and adding a `bytes` or `string`
    // field would then silently drop `Copy` and break every caller that relied on it; so
    // messages are `Clone` only, as they were when they were written by hand. Enums keep `Copy`.
    let path = PathBuf::from(std::env::var("OUT_DIR")?).join(GENERATED);
    let code = std::fs::read_to_string(&path)?;
    let mut out = String::with_capacity(code.len());
    for line in code.lines() {
        let is_message_derive = line.trim_start().starts_with("#[derive(")
            && (line.contains("::prost::Message") || line.contains("::prost::Oneof"));
        if is_message_derive {
            out.push_str(&line.replacen("Copy, ", "", 1));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    std::fs::write(&path, out)?;
    Ok(())
}
