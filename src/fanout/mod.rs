//! Master-side fan-out: registry, SSH sessions, scheduler, report.
//!
//! - [`registry`]: `mirrors.toml` parsing and validation.
//! - [`protocol`]: what each kind of mirror (mirrorpush handler, Debian's ftpsync) is sent, and
//!   what its answer means.
//! - [`select`]: which mirrors a command applies to.
//! - [`known_hosts`]: strict host key verification against OpenSSH known_hosts.
//! - [`session`]: one bounded SSH exchange with one mirror.
//! - [`bus_push`]: bus mirrors: one signed, confirmed publish per push, and their acks.
//! - [`transport`]: SSH or bus, behind one face for the scheduler.
//! - [`scheduler`]: stages, concurrency, Ctrl-C.
//! - [`report`]: progress, per-mirror lines, JSON Lines, summary.
//! - [`json`]: JSON Lines that are safe on a terminal whatever a mirror sent.
//! - [`logging`]: stderr logging that a mirror cannot flood.
//! - [`cli`]: the command line definitions.
//! - [`commands`]: `list`, `push`, `check`, returning exit codes.

pub mod bus_push;
pub mod cli;
pub mod commands;
pub mod json;
pub mod known_hosts;
pub mod logging;
pub mod protocol;
pub mod registry;
pub mod report;
pub mod scheduler;
pub mod select;
pub mod session;
pub mod transport;
