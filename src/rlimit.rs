//! The open-file limit. A push holds one socket per concurrent session, and the usual soft limit
//! (1024, also under systemd) is far below what `concurrency` may ask for; sessions past it would
//! fail with "Too many open files". The hard limit is normally much higher, so raise towards it.

/// Raises the soft `RLIMIT_NOFILE` towards `want`, never above the hard limit and never lowering
/// it. Returns the soft limit now in force (0 if it cannot be read).
pub fn raise_open_files(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid resource and a pointer to a live rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur >= want {
            return lim.rlim_cur;
        }
        let raised = libc::rlimit {
            rlim_cur: want.min(lim.rlim_max),
            rlim_max: lim.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            return raised.rlim_cur;
        }
    }
    lim.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raises_within_the_hard_limit_and_never_lowers() {
        let now = raise_open_files(0);
        assert!(now > 0);
        // Asking for less keeps what is there.
        assert_eq!(raise_open_files(1), now);
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        // Asking for more than the hard limit stops at the hard limit.
        assert_eq!(raise_open_files(u64::MAX), lim.rlim_max);
    }
}
