//! The bus transport (feature `bus`): signed triggers and acks, and the AMQP 0-9-1 client that
//! carries them. Shared by the master (publishes triggers, collects acks) and the listener
//! (`mirrorpush-listen`: consumes triggers, hands them to the handler, publishes acks).
//!
//! - [`envelope`]: the trigger and ack payloads, the JSON envelope, SSHSIG sign and verify.
//! - [`signers`]: OpenSSH `allowed_signers` files.
//! - [`amqp`]: connecting, publishing with confirms, consuming with manual acks.
//! - [`topic`]: AMQP topic patterns (`*`, `#`), as the broker matches routing keys.
//!
//! None of this is in the handler: its build stays free of tokio and of the AMQP client.

pub mod amqp;
pub mod envelope;
pub mod signers;
pub mod topic;
