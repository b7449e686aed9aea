//! Mirror-side handler: config, queue/lock, rsync runner, status.
