//! mirrorpush: push-triggered mirror syncing.
//!
//! - [`request`]: the wire grammar, shared by master and handler.
//! - [`handler`]: the mirror-side forced command (synchronous; no tokio, no russh).
//! - [`filelist`]: per-module file lists: format, generator (master) and sync planner (handler).
//! - [`fanout`]: the master-side SSH fan-out (feature `master`).
//! - [`bus`]: signed triggers and acks over AMQP 0-9-1 (feature `bus`), for `mirrorpush-listen`
//!   and the master's bus transport.
//! - [`listen`]: the mirror-side bus listener `mirrorpush-listen` (feature `bus`).
//! - [`history`], [`verify`], [`propagation`]: the push history, proof from outside that mirrors
//!   carry a push, and the propagation report (feature `master`).
//! - [`rlimit`]: raising the open-file limit for many concurrent sessions.

mod atomic;
mod config_text;
pub mod filelist;
pub mod handler;
mod private_dir;
pub mod request;
pub mod rlimit;

#[cfg(feature = "master")]
pub mod fanout;
#[cfg(feature = "master")]
pub mod history;
#[cfg(feature = "master")]
pub mod propagation;
#[cfg(feature = "master")]
pub mod verify;

#[cfg(feature = "bus")]
pub mod bus;
#[cfg(feature = "bus")]
pub mod listen;
