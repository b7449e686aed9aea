//! `mirrorpush`: the master-side driver (README, "Using mirrorpush"). Parsing and logging set-up
//! only; the work is in `mirrorpush::fanout`.

use clap::Parser;
use mirrorpush::fanout::cli::{Cli, Command};
use mirrorpush::fanout::commands::{self, PushArgs};
use mirrorpush::filelist::generate;

fn main() {
    let cli = Cli::parse();
    // Bounded whatever a mirror sends: the SSH library's own log is off below -vv.
    mirrorpush::fanout::logging::init(cli.verbose);
    let code = match cli.command {
        Command::List { module, tags, json } => {
            commands::list(&cli.registry, module.as_deref(), &tags, json)
        }
        Command::Check => commands::check(&cli.registry),
        Command::Verify {
            push,
            module,
            watch,
            until,
            json,
            mirrors,
            tags,
        } => {
            let args = mirrorpush::verify::VerifyArgs {
                push,
                module,
                watch,
                until,
                json,
                mirrors,
                tags,
            };
            match tokio::runtime::Runtime::new() {
                Ok(rt) => rt.block_on(commands::verify(
                    &cli.registry,
                    cli.history.as_deref(),
                    args,
                )),
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    commands::EXIT_USAGE
                }
            }
        }
        Command::Report {
            push,
            last,
            module,
            json,
            html,
        } => {
            let args = mirrorpush::propagation::ReportArgs {
                push,
                last: last.map(|n| n as usize),
                module,
                json,
                html,
            };
            commands::report(&cli.registry, cli.history.as_deref(), &args)
        }
        Command::Filelist {
            output,
            checksums,
            changed,
            tree,
        } => {
            use std::os::unix::ffi::OsStringExt;
            let opts = generate::Options {
                tree,
                output,
                checksum_names: checksums.into_iter().map(OsStringExt::into_vec).collect(),
                changed: changed.into_iter().map(OsStringExt::into_vec).collect(),
            };
            generate::main(&opts)
        }
        Command::Push {
            dry_run,
            json,
            mirrors,
            tags,
            concurrency,
            verify,
            until,
            module,
            dir,
        } => {
            let args = PushArgs {
                module,
                dir,
                mirrors,
                tags,
                concurrency: concurrency.map(|c| c as usize),
                dry_run,
                json,
                history: cli.history.clone(),
                verify,
                until,
            };
            match tokio::runtime::Runtime::new() {
                Ok(rt) => rt.block_on(commands::push(&cli.registry, args)),
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    commands::EXIT_USAGE
                }
            }
        }
    };
    std::process::exit(code);
}
