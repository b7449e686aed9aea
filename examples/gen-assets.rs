//! Writes the master's man pages and shell completions from its clap definitions, for packaging:
//! `cargo run --example gen-assets [OUT_DIR]` (default `target/assets`). The package build runs
//! it as the workspace member `assets/` (`mirrorpush-assets`), which includes this file and
//! needs only the CLI's dependencies, not the test lab or proptest (`scripts/build-deb.sh`).
//!
//! `mirrorpush.1` is composed here: the parts that come from the command line (synopsis,
//! description, options, each command with its options, the environment variables, the exit
//! codes) are rendered from the clap definitions and constants, so they cannot drift from the
//! binary; the rest (files, the report, examples) is written below. One page per command
//! (`mirrorpush-push.1`, ...) follows clap_mangen, with a synopsis that shows option arguments.
//! `tests/fanout_manpage.rs` renders the pages and checks their sections.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Arg, ArgAction, CommandFactory};
use clap_complete::Shell;
use mirrorpush::fanout::cli::Cli;
use mirrorpush::fanout::commands::{EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE};
use mirrorpush::fanout::registry::{DEFAULT_HISTORY, DEFAULT_KNOWN_HOSTS, DEFAULT_REGISTRY};

pub fn main() -> std::io::Result<()> {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or("target/assets".into()));
    let (man_dir, completions_dir) = (out.join("man"), out.join("completions"));
    // Pages of commands that no longer exist must not be packaged: start from an empty dir.
    match std::fs::remove_dir_all(&man_dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::create_dir_all(&man_dir)?;
    std::fs::create_dir_all(&completions_dir)?;

    std::fs::write(man_dir.join("mirrorpush.1"), main_page())?;
    for (file, page) in command_pages() {
        std::fs::write(man_dir.join(file), page)?;
    }

    let mut cmd = Cli::command();
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

/// The built command: globals propagated, subcommands named `mirrorpush-<name>`.
fn built() -> clap::Command {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// `mirrorpush(1)`.
pub fn main_page() -> String {
    let cmd = built();
    let man = clap_mangen::Man::new(cmd.clone());
    let mut page = Vec::new();
    // The title, NAME, DESCRIPTION (the long about) and OPTIONS (the global ones) as clap_mangen
    // renders them; SYNOPSIS and COMMANDS here, with every option's argument shown.
    man.render_title(&mut page).expect("render to memory");
    man.render_name_section(&mut page)
        .expect("render to memory");
    let mut s = String::from_utf8(page).expect("roff is UTF-8");
    s.push_str(&synopsis(&cmd));
    let mut page = Vec::new();
    man.render_description_section(&mut page)
        .expect("render to memory");
    man.render_options_section(&mut page)
        .expect("render to memory");
    s.push_str(&String::from_utf8(page).expect("roff is UTF-8"));
    s.push_str(&commands_section(&cmd));
    s.push_str(&text_sections());
    s.push_str(BUS_SECTION);
    s.push_str(&propagation_section());
    s.push_str(&environment(&cmd));
    s.push_str(&exit_status());
    s.push_str(EXAMPLES);
    s.push_str(&see_also(&cmd, None));
    s
}

/// `mirrorpush-<command>(1)` for every command: (file name, page).
pub fn command_pages() -> Vec<(String, String)> {
    let cmd = built();
    cmd.get_subcommands()
        .filter(|c| !c.is_hide_set())
        .map(|sub| {
            let man = clap_mangen::Man::new(sub.clone());
            let mut page = Vec::new();
            man.render_title(&mut page).expect("render to memory");
            man.render_name_section(&mut page)
                .expect("render to memory");
            let mut s = String::from_utf8(page).expect("roff is UTF-8");
            s.push_str(".SH SYNOPSIS\n");
            s.push_str(&form(&cmd, sub));
            let mut page = Vec::new();
            man.render_description_section(&mut page)
                .expect("render to memory");
            man.render_options_section(&mut page)
                .expect("render to memory");
            s.push_str(&String::from_utf8(page).expect("roff is UTF-8"));
            s.push_str(&see_also(&cmd, Some(sub.get_name())));
            (man.get_filename(), s)
        })
        .collect()
}

/// Escapes text for roff: backslashes, and dashes so they stay ASCII hyphen-minus (options).
fn esc(text: &str) -> String {
    text.replace('\\', "\\e").replace('-', "\\-")
}

/// A text line for roff: escaped, and never starting with a control character.
fn line(text: &str) -> String {
    let e = esc(text);
    if e.starts_with('.') || e.starts_with('\'') {
        format!("\\&{e}\n")
    } else {
        format!("{e}\n")
    }
}

fn shown(arg: &Arg) -> bool {
    !arg.is_hide_set() && !matches!(arg.get_id().as_str(), "help" | "version")
}

fn value_name(arg: &Arg) -> String {
    arg.get_value_names()
        .map(|v| v.join(" "))
        .unwrap_or_else(|| arg.get_id().as_str().to_uppercase())
}

fn repeats(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append | ArgAction::Count)
}

/// `.RB [ \-\-tag` / `.IR TAG ]...`: one option of a synopsis form.
fn synopsis_arg(arg: &Arg) -> String {
    let dots = if repeats(arg) { "..." } else { "" };
    if arg.is_positional() {
        let v = esc(&value_name(arg));
        return if arg.is_required_set() {
            format!(".I {v}\n")
        } else {
            format!(".RI [ {v} ]{dots}\n")
        };
    }
    let takes_value = arg.get_num_args().is_some_and(|n| n.takes_values())
        && !matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::Count);
    // A counted flag is typed short (`-vv`); everything else by its long name.
    let flag = match (arg.get_long(), arg.get_short()) {
        (_, Some(short)) if matches!(arg.get_action(), ArgAction::Count) => format!("-{short}"),
        (Some(long), _) => format!("--{long}"),
        (None, Some(short)) => format!("-{short}"),
        (None, None) => return String::new(),
    };
    // `\%`: never hyphenate an option name across lines.
    if takes_value {
        format!(
            ".RB \\%[ {}\n.IR {} ]{dots}\n",
            esc(&flag),
            esc(&value_name(arg))
        )
    } else {
        format!(".RB \\%[ {} ]{dots}\n", esc(&flag))
    }
}

/// One synopsis form: `mirrorpush` with the global options, then the command and its own.
fn form(top: &clap::Command, sub: &clap::Command) -> String {
    let mut s = format!(".B {}\n", top.get_name());
    for arg in top
        .get_arguments()
        .filter(|a| shown(a) && a.is_global_set())
    {
        s.push_str(&synopsis_arg(arg));
    }
    let _ = writeln!(s, ".B {}", sub.get_name());
    for arg in sub
        .get_arguments()
        .filter(|a| shown(a) && !a.is_global_set() && !a.is_positional())
    {
        s.push_str(&synopsis_arg(arg));
    }
    for arg in sub.get_positionals().filter(|a| shown(a)) {
        s.push_str(&synopsis_arg(arg));
    }
    s
}

fn synopsis(cmd: &clap::Command) -> String {
    let mut s = String::from(".SH SYNOPSIS\n");
    for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
        s.push_str(&form(cmd, sub));
        s.push_str(".br\n");
    }
    let _ = writeln!(
        s,
        ".B {}\n.RB [ \\-h | \\-\\-help | \\-V | \\-\\-version ]",
        cmd.get_name()
    );
    s
}

/// COMMANDS: each command's synopsis form, what it does and its own options.
fn commands_section(cmd: &clap::Command) -> String {
    let mut s = String::from(".SH COMMANDS\n");
    for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
        let _ = writeln!(s, ".SS {}", esc(sub.get_name()));
        s.push_str(&form(cmd, sub));
        s.push_str(".PP\n");
        let about = sub
            .get_long_about()
            .or(sub.get_about())
            .map(|a| a.to_string())
            .unwrap_or_default();
        for paragraph in about.split("\n\n") {
            s.push_str(&line(paragraph.trim()));
            s.push_str(".PP\n");
        }
        for arg in sub
            .get_arguments()
            .filter(|a| shown(a) && !a.is_global_set())
        {
            let head = if arg.is_positional() {
                format!("\\fI{}\\fR", esc(&value_name(arg)))
            } else {
                let mut h = String::new();
                if let Some(short) = arg.get_short() {
                    let _ = write!(h, "\\fB\\-{short}\\fR, ");
                }
                if let Some(long) = arg.get_long() {
                    let _ = write!(h, "\\fB\\-\\-{}\\fR", esc(long));
                }
                if synopsis_arg(arg).contains(".IR ") {
                    let _ = write!(h, " \\fI{}\\fR", esc(&value_name(arg)));
                }
                h
            };
            let help = arg
                .get_long_help()
                .or(arg.get_help())
                .map(|h| h.to_string())
                .unwrap_or_default();
            let _ = write!(s, ".TP\n{head}\n{}", line(&help));
        }
    }
    s
}

/// ENVIRONMENT: every variable a clap argument reads, then the agent socket.
fn environment(cmd: &clap::Command) -> String {
    let mut s = String::from(".SH ENVIRONMENT\n");
    for arg in cmd.get_arguments().filter(|a| a.get_env().is_some()) {
        let var = arg
            .get_env()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let long = arg.get_long().unwrap_or_default();
        let _ = write!(
            s,
            ".TP\n.B {}\nUsed as \\fB\\-\\-{}\\fR when that option is not given.\n",
            esc(&var),
            esc(long)
        );
    }
    s.push_str(concat!(
        ".TP\n.B SSH_AUTH_SOCK\n",
        "The ssh\\-agent whose keys authenticate to mirrors that have no \\fBidentity\\fR in the registry.\n",
    ));
    s
}

fn exit_status() -> String {
    format!(
        ".SH EXIT STATUS\n.TP\n.B {EXIT_OK}\nEvery selected mirror succeeded (answered \\fBaccepted\\fR, \
         \\fBqueued\\fR or \\fBsynced\\fR; for \\fBlist\\fR, \\fBcheck\\fR and \\fB\\-\\-dry\\-run\\fR: \
         nothing wrong). Completion warnings do not change it.\n\
         .TP\n.B {EXIT_FAILED}\nAt least one mirror failed (\\fBpush\\fR), or \\fBcheck\\fR found a problem.\n\
         .TP\n.B {EXIT_USAGE}\nUsage or configuration error: a bad option, a request the grammar refuses, \
         an unreadable or invalid registry, key or known_hosts file, or no mirror selected. \
         Nothing was sent.\n\
         .TP\n.B {EXIT_INTERRUPTED}\nInterrupted (Ctrl\\-C): no new sessions were started, the open ones \
         were closed, and the report so far was printed.\n"
    )
}

fn see_also(cmd: &clap::Command, this: Option<&str>) -> String {
    let mut refs: Vec<String> = Vec::new();
    if this.is_some() {
        refs.push(format!(".BR {} (1)", cmd.get_name()));
    }
    for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
        if Some(sub.get_name()) != this {
            refs.push(format!(
                ".BR {}\\-{} (1)",
                cmd.get_name(),
                esc(sub.get_name())
            ));
        }
    }
    refs.push(".BR mirrorpush\\-handler (8)".into());
    refs.push(".BR mirrorpush\\-listen (1)".into());
    refs.push(".BR ftpsync (1)".into());
    refs.push(".BR ssh\\-keyscan (1)".into());
    refs.push(".BR sshd_config (5)".into());
    refs.push(".BR rsync (1)".into());
    let mut s = String::from(".SH SEE ALSO\n");
    let last = refs.len() - 1;
    for (i, r) in refs.iter().enumerate() {
        s.push_str(r);
        s.push_str(if i < last { " ,\n" } else { "\n" });
    }
    s.push_str(
        ".PP\nThe README (/usr/share/doc/mirrorpush/README.md) sets up masters and mirrors \
         step by step; docs/master.md beside it documents every registry key.\n",
    );
    s
}

/// The report and FILES: what no clap definition holds.
fn text_sections() -> String {
    format!(
        r#".SH REPORT
Each mirror answers on the first line of its output (a bus mirror, in its ack; see BUS MIRRORS):
.B accepted
(detach mode: a sync started in the background),
.B queued
(a sync was running and will run again to cover this push) or
.B synced
(wait mode, and Debian's ftpsync: a run covering the push has ended; the content is on the mirror).
.B push
prints one line per mirror, then a summary and a propagation line such as
.PP
.RS
41 of 45 mirror(s) synced within 3m12s; 4 accepted without reporting completion
.RE
.PP
Stage N+1 starts when every mirror of stage N has answered. A mirror of a stage that has later
stages which answers only
.B accepted
or
.BR queued ,
or one the registry marks
.B wait = true
that does, gets a warning: the later stages may pull from it before it has the content.
.B check
warns about such mirrors before any push.
When a mirror of an earlier stage failed, a later stage starts with a warning that names it;
with \fBafter_failed_stage = "hold"\fR in the registry's \fB[defaults]\fR no later stage starts,
and its mirrors are reported held back (failed).
.PP
With
.BR \-\-json ,
one JSON object per mirror as it finishes (\fBmirror\fR, \fBhost\fR, \fBport\fR, \fBstage\fR,
\fBtransport\fR, \fBok\fR, \fBexit_status\fR, \fBerror\fR, \fBanswer\fR, \fBelapsed_ms\fR, \fBstarted_ms\fR,
\fBprotocol\fR, \fBrequest\fR, \fBnote\fR, \fBmessage\fR, \fBwarning\fR, \fBattempts\fR,
\fBoutput\fR, \fBoutput_truncated\fR, \fBheld\fR), then one \fB{{"summary": ...}}\fR object with the counts
(\fBsynced\fR, \fBaccepted\fR, \fBqueued\fR, \fBfailed\fR, ...), \fBslowest_synced_ms\fR,
\fBsynced_within_ms\fR, \fBstage_warnings\fR and \fBpropagation\fR. Control characters, DEL, C1
controls, bidi overrides and marks and the line separators U+2028 and U+2029 in any string are
written as \e\fBu\fR escapes. \fBmessage\fR and \fBerror\fR are cut to 300 bytes with a mark;
\fBoutput\fR keeps up to 64 KiB of each stream.
.PP
While a session waits for its answer, SSH keepalives go out every \fBkeepalive_interval\fR
(default 15s); a mirror that answers none of three is given up. The mirror's \fBtimeout\fR bounds
the whole exchange: for a mirror in wait mode, set it above the longest sync it may wait for.
.SH FILES
.TP
.I {registry}
The registry of mirrors (\fB\-\-registry\fR or \fBMIRRORPUSH_REGISTRY\fR override it):
where each mirror is, its modules, stage, tags, protocol (\fBmirrorpush\fR or \fBftpsync\fR),
timeouts and keys.
.TP
.I {known_hosts}
OpenSSH known_hosts (plain and hashed entries, \fB[host]:port\fR for other ports). A mirror
whose host key is missing or different is refused. The registry's \fBknown_hosts\fR key moves it.
.TP
.I /etc/mirrorpush/id_ed25519
The private key the master authenticates with, as the README sets it up; the registry's
\fBidentity\fR key names it (without one, the keys of ssh\-agent are used).
.TP
.I /usr/share/doc/mirrorpush/examples/mirrors.toml
A registry with every key explained.
.TP
.I {history}
The push history (SQLite; \fB\-\-history\fR, \fBMIRRORPUSH_HISTORY\fR or the registry's
\fBhistory\fR move it): every push, what each mirror answered and when verify proved it.
.TP
.I /var/lib/mirrorpush/trigger/MODULE
Touched by a publish script, starts \fBmirrorpush\-push@MODULE.service\fR through its path unit.
"#,
        registry = esc(DEFAULT_REGISTRY),
        known_hosts = esc(DEFAULT_KNOWN_HOSTS),
        history = esc(DEFAULT_HISTORY),
    )
}

/// PROPAGATION: the history, verify and report, and their exit codes.
fn propagation_section() -> String {
    format!(
        r#".SH PROPAGATION
Every
.B push
is recorded in the history (tables \fBpush\fR, \fBpush_proof\fR and \fBpush_mirror\fR, for
.BR sqlite3 (1);
times are milliseconds since the epoch): the push when it starts, with the master's proof
values, each mirror's answer as it arrives, and the end. Its report ends with the line
.BR "push ID" ,
and the JSON summary carries \fB"push"\fR. A push killed midway keeps what it had recorded.
.PP
.B verify
proves from outside that mirrors carry a push: for each mirror with a \fBurl\fR (its public tree
of the module: https, http or rsync; \fB{{module}}\fR is replaced) it fetches the file its
\fBverify\fR setting names (\fBtrace:\fIpath\fR, \fBfilelist:\fIname\fR or
\fBfile:\fIpath\fR) and compares it with the master's tree (\fB[verify] tree\fR or
\fB[verify.trees]\fR) as it was when the push started. A mirror that answered \fBsynced\fR but
serves other content is \fBstale\fR: self\-reports never count. Each fetch reads at most 1 MiB,
follows at most 5 redirects and is bounded by the mirror's \fBconnect_timeout\fR and
\fBtimeout\fR.
.B "push \-\-verify"
runs \fBverify \-\-watch\fR after the last stage.
.PP
.B report
shows per mirror the answer, when it synced and was verified, and its lag, then
.RS
.PP
37 of 40 verified within 1m05s; lag p50 21.4s, p90 48.0s, p99 \-; stragglers: ...
.RE
.PP
and with \fB\-\-html\fR writes one self\-contained page plotting the share of mirrors synced and
verified against the time since the push.
.PP
Exit status of \fBverify\fR: {ok} every selected mirror verified, {failed} not all, {usage}
usage, registry or history error. Of \fBreport\fR: {ok}, or {usage} when there is no such push.
"#,
        ok = EXIT_OK,
        failed = EXIT_FAILED,
        usage = EXIT_USAGE,
    )
}

/// BUS MIRRORS: mirrors that no SSH session reaches (the registry's `[bus]`, `transport = "bus"`).
const BUS_SECTION: &str = r#".SH BUS MIRRORS
A mirror with
.B transport = \(dqbus\(dq
in the registry is not connected to: it runs
.BR mirrorpush\-listen ,
which follows a RabbitMQ (AMQP 0\-9\-1) broker. For every push that selects bus mirrors the
master publishes one signed trigger, however many bus mirrors there are, when the first stage
holding bus mirrors starts: it connects to the broker of the registry's
.B [bus]
table, binds a private queue to
.B ack_topic
first, then publishes to
.B exchange
with the routing key
.IB topic_prefix mirrorpush.sync. MODULE
and waits for the broker's confirm. An unconfirmed publish (broker down, exchange missing, no
permission) fails every bus mirror of the push; the SSH mirrors go on.
.PP
The trigger's payload holds the request, a fresh id, the time and
.BR origin ,
signed with
.B signing_key
(an OpenSSH signature, namespace \fBmirrorpush\-trigger\fR; mirrors check it against their
allowed_signers). Each listener answers with a signed ack that the master checks against the
mirror's
.BR ack_key .
A verified ack makes the mirror's answer
.B synced
or
.B accepted
(a
.B failed
ack fails the mirror). Without one in time the answer is
.BR unreported :
the trigger waits in the mirror's queue, but the master cannot tell whether it ran. An ack that
does not verify is ignored (and said so), never counted. The master waits for a bus mirror's ack
up to its
.B timeout
where its completion matters (\fBwait = true\fR, or later stages follow it), otherwise up to
its
.BR connect_timeout ;
a bus mirror without
.B ack_key
is not waited for. Bus mirrors hold no connection of their own, so
.B \-\-concurrency
does not count them.
.PP
.B list
and
.B push \-\-dry\-run
show each bus mirror's topic and the payload;
.B check
loads the signing key and connects to the broker. In the report and JSON, bus mirrors have
.B \(dqtransport\(dq: \(dqbus\(dq
and null \fBhost\fR and \fBport\fR. The README's "Push over a message bus" section sets up
the broker, the master and the listeners.
"#;

const EXAMPLES: &str = r#".SH EXAMPLES
The last step of a publish script: write the file list, then push the module to every mirror
that carries it:
.PP
.RS
.nf
mirrorpush filelist /srv/pub/fedora && mirrorpush push fedora
.fi
.RE
.PP
Show who would be sent what, connecting to nobody (a dir typed with a trailing slash, as a
shell completes it, is sent without it):
.PP
.RS
.nf
mirrorpush push \-\-dry\-run fedora updates/41/
.fi
.RE
.PP
Push one dir to the tier\-1 mirrors only and list the mirrors that failed:
.PP
.RS
.nf
mirrorpush push \-\-json \-\-tag tier1 fedora updates/41 |
    jq \-r 'select(.ok == false) | "\e(.mirror): \e(.error)"'
.fi
.RE
.PP
How many mirrors have the content, from the summary object:
.PP
.RS
.nf
mirrorpush push \-\-json fedora | jq \-r '.summary | select(.) | .propagation'
.fi
.RE
.PP
Push, watch the mirrors' public trees until they serve it (at most 30 minutes), and write the
report with its plot:
.PP
.RS
.nf
mirrorpush push \-\-verify \-\-until 30m fedora
mirrorpush report \-\-html /var/www/propagation.html
.fi
.RE
.PP
Check the registry, keys and host keys before the first push:
.PP
.RS
.nf
mirrorpush check && mirrorpush list \-\-module fedora
.fi
.RE
"#;
