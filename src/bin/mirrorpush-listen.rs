//! `mirrorpush-listen`: the mirror's bus listener. All logic lives in `mirrorpush::listen`.
fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    std::process::exit(mirrorpush::listen::main(&args));
}
