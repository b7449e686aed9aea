//! `mirrorpush-handler`: the mirror-side forced command. All logic lives in `mirrorpush::handler`.
fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    std::process::exit(mirrorpush::handler::main(&args));
}
