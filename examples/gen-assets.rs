//! Writes the master's man page and shell completions from its clap definitions, for packaging:
//! `cargo run --example gen-assets [OUT_DIR]` (default `target/assets`), then `cargo deb`.

use clap::CommandFactory;
use clap_complete::Shell;
use mirrorpush::fanout::cli::Cli;
use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or("target/assets".into()));
    let (man_dir, completions_dir) = (out.join("man"), out.join("completions"));
    std::fs::create_dir_all(&man_dir)?;
    std::fs::create_dir_all(&completions_dir)?;

    let mut cmd = Cli::command();
    // mirrorpush.1 plus one page per subcommand (mirrorpush-push.1, ...), which it refers to.
    clap_mangen::generate_to(cmd.clone(), &man_dir)?;

    for (shell, file) in [
        (Shell::Bash, "mirrorpush.bash"),
        (Shell::Zsh, "_mirrorpush"),
        (Shell::Fish, "mirrorpush.fish"),
    ] {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut cmd, "mirrorpush", &mut script);
        std::fs::write(completions_dir.join(file), script)?;
    }
    println!(
        "wrote {} and {}",
        man_dir.display(),
        completions_dir.display()
    );
    Ok(())
}
