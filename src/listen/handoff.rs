//! Handing a request to the handler, as a program: `mirrorpush-handler --config <handler_config>
//! sync [--by-mode] <module> [dir]`, as an admin's local run. The handler keeps its own queue:
//! it coalesces, never runs a module twice at once and never loses a request. The one place
//! that starts a child process.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::request::Request;

/// The handler's answer to one hand-off, by its exit code (the handler's contract).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandoffAnswer {
    /// Exit 0, `synced`: the run covering the request ended well.
    Synced(String),
    /// Exit 0, `accepted` or `queued`.
    Accepted(String),
    /// Exit 1: the run covering the request failed.
    Failed(String),
    /// Exit 64 or 77: the handler refuses this request; retrying cannot help.
    Refused(i32, String),
    /// Exit 75, 78, a signal or no handler: try again later (the delivery stays unacked).
    Retry(String),
}

impl HandoffAnswer {
    pub fn word(&self) -> &'static str {
        match self {
            HandoffAnswer::Synced(_) => "synced",
            HandoffAnswer::Accepted(_) => "accepted",
            HandoffAnswer::Failed(_) => "failed",
            HandoffAnswer::Refused(..) => "refused",
            HandoffAnswer::Retry(_) => "retry",
        }
    }

    pub fn detail(&self) -> &str {
        match self {
            HandoffAnswer::Synced(d)
            | HandoffAnswer::Accepted(d)
            | HandoffAnswer::Failed(d)
            | HandoffAnswer::Refused(_, d)
            | HandoffAnswer::Retry(d) => d,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Handler {
    pub program: PathBuf,
    pub config: PathBuf,
}

impl Handler {
    /// The configured handler, or `mirrorpush-handler` beside this binary.
    pub fn new(program: Option<&Path>, config: &Path) -> Handler {
        let program = program.map(Path::to_path_buf).unwrap_or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(|d| d.join("mirrorpush-handler")))
                .unwrap_or_else(|| PathBuf::from("/usr/bin/mirrorpush-handler"))
        });
        Handler {
            program,
            config: config.to_owned(),
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.arg("--config")
            .arg(&self.config)
            // A local run: the request comes from argv, never from an SSH session that may
            // have started this listener.
            .env_remove("SSH_ORIGINAL_COMMAND")
            .env_remove("SSH_CONNECTION")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `sync <module> [dir]` and maps the exit code. Blocks until the handler answers.
    /// With `by_mode` the handler answers as it answers a push: a `detach` module says
    /// `accepted` or `queued` at once (a detached runner syncs), a `wait` module `synced` or
    /// the failure once the covering run ended. Without it the handler always waits.
    pub fn sync(&self, request: &Request, by_mode: bool) -> HandoffAnswer {
        let mut cmd = self.command();
        cmd.arg("sync");
        if by_mode {
            cmd.arg("--by-mode");
        }
        cmd.arg(request.module.as_str());
        if let Some(dir) = &request.dir {
            cmd.arg(dir.as_str());
        }
        let out = match cmd.output() {
            Ok(o) => o,
            Err(e) => {
                return HandoffAnswer::Retry(format!("cannot run {}: {e}", self.program.display()))
            }
        };
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        let text = if stderr.is_empty() {
            stdout.clone()
        } else {
            stderr
        };
        match out.status.code() {
            Some(0) if stdout.starts_with("synced") => HandoffAnswer::Synced(stdout),
            Some(0) => HandoffAnswer::Accepted(stdout),
            Some(1) => HandoffAnswer::Failed(text),
            Some(code @ (64 | 77)) => HandoffAnswer::Refused(code, text),
            Some(code) => HandoffAnswer::Retry(format!("handler exit {code}: {text}")),
            None => HandoffAnswer::Retry(format!("handler killed: {}", out.status)),
        }
    }

    /// The kinds of the targets the module's last run synced that cover `request`
    /// (`null`, `filelist`, `full`, ...), from `mirrorpush-handler status --json`.
    pub fn last_run_kinds(&self, request: &Request) -> Result<Vec<String>, String> {
        let out = self
            .command()
            .args(["status", "--json"])
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.program.display()))?;
        if !out.status.success() {
            return Err(format!(
                "status failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| format!("status is not JSON: {e}"))?;
        Ok(covering_kinds(&v, request))
    }
}

/// From `status --json`: the kinds of the last run's targets that cover `request` (the module
/// as `(all)`, or the dir or one of its parents).
fn covering_kinds(status: &serde_json::Value, request: &Request) -> Vec<String> {
    let module = request.module.as_str();
    let Some(m) = status["modules"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["module"] == module))
    else {
        return Vec::new();
    };
    let dir = request.dir.as_ref().map(|d| d.as_str().to_owned());
    m["last_run"]["runs"]
        .as_array()
        .map(|runs| {
            runs.iter()
                .filter(|r| {
                    let t = r["target"].as_str().unwrap_or("");
                    t == "(all)"
                        || dir.as_deref().is_some_and(|d| {
                            d == t || d.strip_prefix(t).is_some_and(|rest| rest.starts_with('/'))
                        })
                })
                .filter_map(|r| r["kind"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kinds_covering_a_request_come_from_the_last_run() {
        let v = serde_json::json!({"modules": [
            {"module": "epel", "last_run": {"runs": [{"target": "(all)", "kind": "full"}]}},
            {"module": "fedora", "last_run": {"runs": [
                {"target": "updates", "kind": "null"},
                {"target": "releases", "kind": "filelist"}
            ]}}
        ]});
        let kinds = |r: &str| covering_kinds(&v, &Request::parse(r.as_bytes()).unwrap());
        assert_eq!(kinds("sync fedora updates/41"), vec!["null"]);
        assert_eq!(kinds("sync fedora updates"), vec!["null"]);
        assert!(kinds("sync fedora updatesx").is_empty());
        assert_eq!(kinds("sync epel"), vec!["full"]);
        assert!(kinds("sync other").is_empty());
    }
}
