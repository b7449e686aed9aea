//! `mirrorpush`: the master-side driver (DESIGN.md section 6). Parsing and logging set-up only;
//! the work is in `mirrorpush::fanout`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use mirrorpush::fanout::commands::{self, PushArgs};
use mirrorpush::fanout::registry::DEFAULT_REGISTRY;

#[derive(Parser)]
#[command(version, about = "Push sync requests to mirrors over SSH")]
struct Cli {
    /// The mirror registry.
    #[arg(long, global = true, env = "MIRRORPUSH_REGISTRY", default_value = DEFAULT_REGISTRY)]
    registry: PathBuf,
    /// Debug logging on stderr (-vv: also the SSH library's).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the registered mirrors and what they would be sent. Connects to nobody.
    List {
        /// Only mirrors carrying this module.
        #[arg(long)]
        module: Option<String>,
        /// Only mirrors with this tag (repeatable: any of them).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// JSON Lines output.
        #[arg(long)]
        json: bool,
    },
    /// Ask every selected mirror to sync MODULE (or only DIR within it).
    Push {
        /// Show what would be sent to whom; connect to nobody.
        #[arg(long)]
        dry_run: bool,
        /// JSON Lines report on stdout.
        #[arg(long)]
        json: bool,
        /// Only this mirror (repeatable).
        #[arg(long = "mirror")]
        mirrors: Vec<String>,
        /// Only mirrors with this tag (repeatable: any of them).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Most SSH sessions at once (default: the registry's `concurrency`).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=65536))]
        concurrency: Option<u32>,
        module: String,
        dir: Option<String>,
    },
    /// Validate the registry, key files and known_hosts entries. Connects to nobody.
    Check,
}

fn main() {
    let cli = Cli::parse();
    let filter = match cli.verbose {
        0 => "warn",
        1 => "mirrorpush=debug,warn",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    let code = match cli.command {
        Command::List { module, tags, json } => {
            commands::list(&cli.registry, module.as_deref(), &tags, json)
        }
        Command::Check => commands::check(&cli.registry),
        Command::Push {
            dry_run,
            json,
            mirrors,
            tags,
            concurrency,
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
