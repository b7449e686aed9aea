//! Runs the handler's file-list planner once, for `benches/filelist.sh`:
//!
//! ```text
//! filelist-plan BASELINE FETCHED OUTDIR [SCOPE]
//! ```
//! Writes OUTDIR/transfer and OUTDIR/delete and prints
//! `unchanged=.. transfer=.. delete=.. entries=.. ms=..`; exit 1 with the planner's error.

use std::path::{Path, PathBuf};
use std::time::Instant;

use mirrorpush::filelist::plan::{plan, PlanRequest};
use mirrorpush::request::RelDir;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !(3..=4).contains(&args.len()) {
        eprintln!("usage: filelist-plan BASELINE FETCHED OUTDIR [SCOPE]");
        std::process::exit(2);
    }
    let scope = args.get(3).map(|s| {
        RelDir::parse(s).unwrap_or_else(|e| {
            eprintln!("error: scope {e}");
            std::process::exit(2)
        })
    });
    let out = PathBuf::from(&args[2]);
    let start = Instant::now();
    let result = plan(&PlanRequest {
        baseline: Path::new(&args[0]),
        fetched: Path::new(&args[1]),
        scope: scope.as_ref(),
        max_delete: u64::MAX,
        skip_restricted: false,
        transfer_out: &out.join("transfer"),
        delete_out: &out.join("delete"),
        kinds_out: None,
    });
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(p) => println!(
            "unchanged={} transfer={} delete={} entries={} ms={ms:.1}",
            p.unchanged, p.transfer, p.delete, p.entries
        ),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
