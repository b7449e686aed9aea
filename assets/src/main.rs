//! `mirrorpush-assets [OUT_DIR]`: the master's man pages and shell completions, for the
//! package. The generator is `examples/gen-assets.rs`; this crate only builds it without the
//! library's dev-dependencies (the test lab, proptest), and in release beside the binaries the
//! package ships, so that it reuses their build (`scripts/build-deb.sh`).

#[path = "../../examples/gen-assets.rs"]
mod gen_assets;

fn main() -> std::io::Result<()> {
    gen_assets::main()
}
