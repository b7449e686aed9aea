//! What a mirror printed during one exchange, bounded so that a mirror that streams forever
//! cannot exhaust the master's memory. The lowest module of the fan-out: it imports nothing.

/// Output kept per stream and mirror; a mirror that streams forever cannot exhaust memory.
/// stdout and stderr have a bound each, so noise on stderr (a login shell's profile, a flood)
/// can never crowd out the answer on stdout.
pub const OUTPUT_LIMIT: usize = 64 * 1024;

/// stdout and stderr of the mirror's forced command, each at most [`OUTPUT_LIMIT`] bytes.
#[derive(Debug, Clone, Default)]
pub struct Captured {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub truncated: bool,
}

impl Captured {
    pub(crate) fn push(&mut self, stderr: bool, data: &[u8]) {
        let stream = if stderr {
            &mut self.stderr
        } else {
            &mut self.stdout
        };
        let room = OUTPUT_LIMIT.saturating_sub(stream.len());
        if data.len() > room {
            self.truncated = true;
        }
        stream.extend_from_slice(&data[..data.len().min(room)]);
    }

    /// Both streams as text (stdout first), for reports.
    pub fn text(&self) -> String {
        let mut s = String::from_utf8_lossy(&self.stdout).into_owned();
        s.push_str(&String::from_utf8_lossy(&self.stderr));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_bounded() {
        let mut c = Captured::default();
        for _ in 0..100 {
            c.push(false, &[b'x'; 1000]);
            c.push(true, &[b'y'; 1000]);
        }
        assert_eq!(
            (c.stdout.len(), c.stderr.len()),
            (OUTPUT_LIMIT, OUTPUT_LIMIT)
        );
        assert!(c.truncated);
    }

    #[test]
    fn stderr_noise_cannot_crowd_out_the_answer() {
        let mut c = Captured::default();
        c.push(true, &vec![b'n'; 3 * OUTPUT_LIMIT]);
        c.push(false, b"synced\n");
        assert_eq!(c.stdout, b"synced\n");
        assert!(c.truncated);
    }
}
