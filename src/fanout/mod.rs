//! Master-side fan-out: registry, SSH sessions, scheduler, report.
