//! The ways a push reaches a mirror, behind the one face the scheduler and the report see:
//! which mirror a target is, what it is sent, whether it holds a connection of its own (and so
//! counts against `concurrency`), and how it ended. SSH mirrors are reached by a session each
//! ([`session`]); bus mirrors share one signed publish and answer with acks ([`bus_push`]).

use std::time::Instant;

use super::bus_push;
use super::protocol::Exec;
use super::registry::Mirror;
use super::session;

/// One mirror of a push, with what reaching it needs.
#[derive(Clone)]
pub enum Target {
    Ssh(session::SshTarget),
    Bus(bus_push::BusTarget),
}

pub use super::session::Done;

impl Target {
    pub fn mirror(&self) -> &Mirror {
        match self {
            Target::Ssh(t) => &t.mirror,
            Target::Bus(t) => &t.mirror,
        }
    }

    /// Exactly what this mirror is sent.
    pub fn command(&self) -> &Exec {
        match self {
            Target::Ssh(t) => &t.command,
            Target::Bus(t) => &t.command,
        }
    }

    /// An SSH session holds a connection (and file descriptors) for its whole exchange, so
    /// `concurrency` bounds how many run at once; a bus mirror only waits for an ack that
    /// arrives over the push's one broker connection, so any number may wait together.
    pub fn holds_connection(&self) -> bool {
        matches!(self, Target::Ssh(_))
    }

    pub async fn push(&self) -> Done {
        match self {
            Target::Ssh(t) => {
                let begun = Instant::now();
                let outcome = session::push(t).await;
                Done {
                    outcome,
                    begun,
                    elapsed: begun.elapsed(),
                }
            }
            Target::Bus(t) => t.push().await,
        }
    }
}
