//! Master-side fan-out: registry, SSH sessions, scheduler, report.
//!
//! - [`registry`]: `mirrors.toml` parsing and validation.
//! - [`known_hosts`]: strict host key verification against OpenSSH known_hosts.

pub mod known_hosts;
pub mod registry;
