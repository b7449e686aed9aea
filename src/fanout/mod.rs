//! Master-side fan-out: registry, SSH sessions, scheduler, report.
//!
//! Listed lowest first: each module imports only modules listed before it, so no module imports
//! one that imports it back, and no lower module imports a higher one.
//! - [`output`]: what a mirror printed, bounded.
//! - [`json`]: JSON Lines that are safe on a terminal whatever a mirror sent.
//! - [`logging`]: stderr logging that a mirror cannot flood.
//! - [`known_hosts`]: strict host key verification against OpenSSH known_hosts.
//! - [`protocol`]: what each kind of mirror (mirrorpush handler, Debian's ftpsync) is sent, and
//!   what its answer means.
//! - [`registry`]: `mirrors.toml` parsing and validation.
//! - [`select`]: which mirrors a command applies to.
//! - [`session`]: one bounded SSH exchange with one mirror.
//! - [`bus_push`]: bus mirrors: one signed, confirmed publish per push, and their acks.
//! - [`transport`]: SSH or bus, behind one face for the scheduler.
//! - [`report`]: progress, per-mirror lines, JSON Lines, summary.
//! - [`scheduler`]: stages, concurrency, Ctrl-C.
//! - [`cli`]: the command line definitions.
//! - [`commands`]: `list`, `push`, `check`, returning exit codes.

pub mod bus_push;
pub mod cli;
pub mod commands;
pub mod json;
pub mod known_hosts;
pub mod logging;
pub mod output;
pub mod protocol;
pub mod registry;
pub mod report;
pub mod scheduler;
pub mod select;
pub mod session;
pub mod transport;
