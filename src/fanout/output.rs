//! What a mirror printed during one exchange, bounded so that a mirror that streams forever
//! cannot exhaust the master's memory. The lowest module of the fan-out: it imports nothing.

/// Output kept per mirror; a mirror that streams forever cannot exhaust memory.
pub const OUTPUT_LIMIT: usize = 64 * 1024;

/// stdout and stderr of the mirror's forced command, together at most [`OUTPUT_LIMIT`] bytes.
#[derive(Debug, Clone, Default)]
pub struct Captured {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub truncated: bool,
}

impl Captured {
    pub(crate) fn push(&mut self, stderr: bool, data: &[u8]) {
        let room = OUTPUT_LIMIT.saturating_sub(self.stdout.len() + self.stderr.len());
        if data.len() > room {
            self.truncated = true;
        }
        let kept = &data[..data.len().min(room)];
        if stderr {
            self.stderr.extend_from_slice(kept);
        } else {
            self.stdout.extend_from_slice(kept);
        }
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
        assert_eq!(c.stdout.len() + c.stderr.len(), OUTPUT_LIMIT);
        assert!(c.truncated);
    }
}
