//! The push history (README, "Propagation"): an SQLite database that admins may query with
//! `sqlite3` (tables `push`, `push_proof`, `push_mirror`; see [`schema`]).
//!
//! One owner: every statement that touches the database is in this module. Writers take the
//! write lock at the start of their transaction (`BEGIN IMMEDIATE`), the journal is a WAL and
//! every connection waits up to [`BUSY_TIMEOUT`] for a lock, so two pushes, a push and a
//! `verify`, or a `report` reading meanwhile, never fail on "database is locked". A push writes
//! its row and one row per selected mirror in one transaction when it starts, then each mirror's
//! answer as it arrives, then the end: a push killed at any point leaves a consistent database
//! (the push with `ended` NULL, the answers recorded so far).

pub mod recorder;
pub mod schema;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

/// How long a connection waits for another one's write lock before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// A history problem, with the database's path.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryError {
    pub path: PathBuf,
    pub message: String,
}

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "history {}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for HistoryError {}

/// An open history database.
pub struct History {
    conn: Connection,
    path: PathBuf,
}

/// What a push records when it starts.
#[derive(Debug, Clone, Default)]
pub struct NewPush {
    pub module: String,
    pub dir: Option<String>,
    pub started_ms: i64,
    pub who: String,
    /// The master's value of the proof most mirrors use.
    pub serial: Option<String>,
    /// Every proof in use: its value, or why the master could not take it.
    pub proofs: Vec<(String, Result<String, String>)>,
    pub mirrors: Vec<NewMirror>,
}

#[derive(Debug, Clone, Default)]
pub struct NewMirror {
    pub name: String,
    pub transport: String,
    /// The mirror's `verify` setting, e.g. `file:repodata/repomd.xml`.
    pub proof: Option<String>,
}

/// One mirror's answer to a push.
#[derive(Debug, Clone, Default)]
pub struct Answered {
    pub mirror: String,
    pub ok: bool,
    pub answer: Option<String>,
    pub error: Option<String>,
    pub error_class: Option<String>,
    pub answered_ms: i64,
}

/// A `push` row.
#[derive(Debug, Clone, PartialEq)]
pub struct PushRow {
    pub id: i64,
    pub module: String,
    pub dir: Option<String>,
    pub serial: Option<String>,
    pub started: i64,
    pub ended: Option<i64>,
    pub who: String,
    pub outcome: Option<String>,
}

/// A `push_mirror` row.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MirrorRow {
    pub mirror: String,
    pub transport: String,
    pub answer: Option<String>,
    pub ok: Option<bool>,
    pub error_class: Option<String>,
    pub error: Option<String>,
    pub answered: Option<i64>,
    pub synced: Option<i64>,
    pub verified: Option<i64>,
    pub verified_serial: Option<String>,
    pub proof: Option<String>,
    pub state: Option<String>,
    pub checked: Option<i64>,
}

/// What one `verify` fetch found for one mirror.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub mirror: String,
    pub state: String,
    pub error_class: Option<String>,
    pub checked_ms: i64,
    /// Set when the proof matched: the value it served (the first match is kept).
    pub verified_serial: Option<String>,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().try_into().unwrap_or(i64::MAX))
}

impl History {
    /// Opens (creating it, its directory and its schema when missing) the database at `path`.
    pub fn open(path: &Path) -> Result<History, HistoryError> {
        let fail = |message: String| HistoryError {
            path: path.to_owned(),
            message,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            refuse_root_in_foreign_dir(dir).map_err(fail)?;
            if !dir.exists() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
            }
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags)
            .map_err(|e| fail(format!("cannot open: {e}")))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| fail(e.to_string()))?;
        // WAL: readers never block the writer; NORMAL sync is durable across a killed process
        // (only a power loss may lose the last commits, never consistency).
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| fail(format!("cannot use WAL: {e}")))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| fail(e.to_string()))?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(|e| fail(e.to_string()))?;
        schema::migrate(&mut conn).map_err(fail)?;
        Ok(History {
            conn,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn fail(&self, e: impl fmt::Display) -> HistoryError {
        HistoryError {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// Records a push that starts, with every selected mirror; returns its id.
    pub fn begin_push(&mut self, p: &NewPush) -> Result<i64, HistoryError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| fail_with(&self.path, e))?;
        let id = (|| {
            tx.execute(
                "INSERT INTO push (module, dir, serial, started, who) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![p.module, p.dir, p.serial, p.started_ms, p.who],
            )?;
            let id = tx.last_insert_rowid();
            {
                let mut proof = tx.prepare(
                    "INSERT INTO push_proof (push_id, proof, value, error) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for (spec, value) in &p.proofs {
                    let (v, e) = match value {
                        Ok(v) => (Some(v.as_str()), None),
                        Err(e) => (None, Some(e.as_str())),
                    };
                    proof.execute(params![id, spec, v, e])?;
                }
                let mut mirror = tx.prepare(
                    "INSERT INTO push_mirror (push_id, mirror, transport, proof) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for m in &p.mirrors {
                    mirror.execute(params![id, m.name, m.transport, m.proof])?;
                }
            }
            Ok::<i64, rusqlite::Error>(id)
        })()
        .map_err(|e| fail_with(&self.path, e))?;
        tx.commit().map_err(|e| fail_with(&self.path, e))?;
        Ok(id)
    }

    /// Records one mirror's answer (its own transaction: a push killed later keeps it).
    pub fn record_answer(&mut self, push: i64, a: &Answered) -> Result<(), HistoryError> {
        let synced = (a.ok && a.answer.as_deref() == Some("synced")).then_some(a.answered_ms);
        self.conn
            .execute(
                "UPDATE push_mirror SET ok = ?3, answer = ?4, error = ?5, error_class = ?6,
                     answered = ?7, synced = ?8
                 WHERE push_id = ?1 AND mirror = ?2",
                params![
                    push,
                    a.mirror,
                    a.ok,
                    a.answer,
                    a.error,
                    a.error_class,
                    a.answered_ms,
                    synced
                ],
            )
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    /// Records the end of a push: `outcome` is `ok`, `failed` or `interrupted`.
    pub fn end_push(
        &mut self,
        push: i64,
        ended_ms: i64,
        outcome: &str,
    ) -> Result<(), HistoryError> {
        self.conn
            .execute(
                "UPDATE push SET ended = ?2, outcome = ?3 WHERE id = ?1",
                params![push, ended_ms, outcome],
            )
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    /// Records what a round of `verify` found, in one transaction. A mirror verified once stays
    /// verified at its first time and serial.
    pub fn record_checks(&mut self, push: i64, checks: &[Checked]) -> Result<(), HistoryError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| fail_with(&self.path, e))?;
        (|| {
            let mut st = tx.prepare(
                "UPDATE push_mirror SET state = ?3, error_class = ?4, checked = ?5,
                     verified = CASE WHEN ?6 IS NOT NULL THEN coalesce(verified, ?5) ELSE verified END,
                     verified_serial = CASE WHEN ?6 IS NOT NULL THEN coalesce(verified_serial, ?6)
                                            ELSE verified_serial END
                 WHERE push_id = ?1 AND mirror = ?2 AND verified IS NULL",
            )?;
            for c in checks {
                st.execute(params![
                    push,
                    c.mirror,
                    c.state,
                    c.error_class,
                    c.checked_ms,
                    c.verified_serial
                ])?;
            }
            Ok::<(), rusqlite::Error>(())
        })()
        .map_err(|e| fail_with(&self.path, e))?;
        tx.commit().map_err(|e| fail_with(&self.path, e))
    }

    /// The newest push (of `module`, when given).
    pub fn latest(&self, module: Option<&str>) -> Result<Option<i64>, HistoryError> {
        Ok(self.last(1, module)?.into_iter().next())
    }

    /// The newest `n` pushes (of `module`, when given), newest first.
    pub fn last(&self, n: usize, module: Option<&str>) -> Result<Vec<i64>, HistoryError> {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT id FROM push WHERE ?1 IS NULL OR module = ?1 ORDER BY id DESC LIMIT ?2",
            )
            .map_err(|e| self.fail(e))?;
        let rows = st
            .query_map(params![module, n], |r| r.get(0))
            .map_err(|e| self.fail(e))?;
        rows.collect::<Result<Vec<i64>, _>>()
            .map_err(|e| self.fail(e))
    }

    pub fn push(&self, id: i64) -> Result<Option<PushRow>, HistoryError> {
        self.conn
            .query_row(
                "SELECT id, module, dir, serial, started, ended, who, outcome FROM push WHERE id = ?1",
                [id],
                |r| {
                    Ok(PushRow {
                        id: r.get(0)?,
                        module: r.get(1)?,
                        dir: r.get(2)?,
                        serial: r.get(3)?,
                        started: r.get(4)?,
                        ended: r.get(5)?,
                        who: r.get(6)?,
                        outcome: r.get(7)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.fail(e))
    }

    /// Every mirror of a push, by name.
    pub fn mirrors(&self, push: i64) -> Result<Vec<MirrorRow>, HistoryError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT mirror, transport, answer, ok, error_class, error, answered, synced,
                        verified, verified_serial, proof, state, checked
                 FROM push_mirror WHERE push_id = ?1 ORDER BY mirror",
            )
            .map_err(|e| self.fail(e))?;
        let rows = st
            .query_map([push], |r| {
                Ok(MirrorRow {
                    mirror: r.get(0)?,
                    transport: r.get(1)?,
                    answer: r.get(2)?,
                    ok: r.get(3)?,
                    error_class: r.get(4)?,
                    error: r.get(5)?,
                    answered: r.get(6)?,
                    synced: r.get(7)?,
                    verified: r.get(8)?,
                    verified_serial: r.get(9)?,
                    proof: r.get(10)?,
                    state: r.get(11)?,
                    checked: r.get(12)?,
                })
            })
            .map_err(|e| self.fail(e))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.fail(e))
    }

    /// The master's proof values recorded with a push: proof → value or why there is none.
    pub fn proofs(
        &self,
        push: i64,
    ) -> Result<BTreeMap<String, Result<String, String>>, HistoryError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT proof, value, error FROM push_proof WHERE push_id = ?1")
            .map_err(|e| self.fail(e))?;
        let rows = st
            .query_map([push], |r| {
                let proof: String = r.get(0)?;
                let value: Option<String> = r.get(1)?;
                let error: Option<String> = r.get(2)?;
                Ok((
                    proof,
                    value.ok_or_else(|| error.unwrap_or_else(|| "not recorded".into())),
                ))
            })
            .map_err(|e| self.fail(e))?;
        rows.collect::<Result<BTreeMap<_, _>, _>>()
            .map_err(|e| self.fail(e))
    }

    /// Bulk insert for the benchmark and tests: whole pushes with their mirrors, in one
    /// transaction, as a push would have recorded them.
    pub fn insert_finished(
        &mut self,
        pushes: &[(PushRow, Vec<MirrorRow>)],
    ) -> Result<(), HistoryError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| fail_with(&self.path, e))?;
        (|| {
            let mut p = tx.prepare_cached(
                "INSERT INTO push (module, dir, serial, started, ended, who, outcome)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut m = tx.prepare_cached(
                "INSERT INTO push_mirror (push_id, mirror, transport, answer, ok, error_class,
                     error, answered, synced, verified, verified_serial, proof, state, checked)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )?;
            for (push, mirrors) in pushes {
                p.execute(params![
                    push.module,
                    push.dir,
                    push.serial,
                    push.started,
                    push.ended,
                    push.who,
                    push.outcome
                ])?;
                let id = tx.last_insert_rowid();
                for r in mirrors {
                    m.execute(params![
                        id,
                        r.mirror,
                        r.transport,
                        r.answer,
                        r.ok,
                        r.error_class,
                        r.error,
                        r.answered,
                        r.synced,
                        r.verified,
                        r.verified_serial,
                        r.proof,
                        r.state,
                        r.checked
                    ])?;
                }
            }
            Ok::<(), rusqlite::Error>(())
        })()
        .map_err(|e| fail_with(&self.path, e))?;
        tx.commit().map_err(|e| fail_with(&self.path, e))
    }
}

fn fail_with(path: &Path, e: impl fmt::Display) -> HistoryError {
    HistoryError {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// Root never opens a history in a directory another account owns (the package's
/// `/var/lib/mirrorpush` belongs to the `mirrorpush` account, whose pushes the systemd units
/// run): that account could put a symlink where SQLite creates its `-wal` and `-shm` files and
/// have root write through it, and a database root created there would be one the account's
/// pushes can no longer write. The error says how to run it instead.
fn refuse_root_in_foreign_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    if !rustix::process::geteuid().is_root() {
        return Ok(());
    }
    let Ok(meta) = std::fs::metadata(dir) else {
        return Ok(());
    };
    if meta.uid() == 0 {
        return Ok(());
    }
    let owner = account_name(meta.uid()).unwrap_or_else(|| format!("uid {}", meta.uid()));
    Err(format!(
        "not opened as root: {} belongs to {owner}; run as that account (runuser -u {owner} -- mirrorpush ...) or give --history / [defaults] history a root-owned place",
        dir.display()
    ))
}

/// The name of `uid` from /etc/passwd (enough for a message; no NSS lookup).
fn account_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id = f.nth(1)?;
        (id.parse() == Ok(uid)).then(|| name.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_push(mirrors: &[&str]) -> NewPush {
        NewPush {
            module: "fedora".into(),
            dir: None,
            started_ms: 1_000,
            who: "root@master".into(),
            serial: Some("2026113001".into()),
            proofs: vec![
                ("trace:project/trace/m".into(), Ok("2026113001".into())),
                ("file:x".into(), Err("cannot read".into())),
            ],
            mirrors: mirrors
                .iter()
                .map(|m| NewMirror {
                    name: (*m).into(),
                    transport: "ssh".into(),
                    proof: Some("trace:project/trace/m".into()),
                })
                .collect(),
        }
    }

    #[test]
    fn a_push_is_recorded_from_start_to_verification() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/history.db");
        let mut h = History::open(&path).unwrap();
        let id = h.begin_push(&new_push(&["b", "a"])).unwrap();
        assert_eq!(h.latest(None).unwrap(), Some(id));
        assert_eq!(h.latest(Some("debian")).unwrap(), None);
        h.record_answer(
            id,
            &Answered {
                mirror: "a".into(),
                ok: true,
                answer: Some("synced".into()),
                answered_ms: 1_500,
                ..Answered::default()
            },
        )
        .unwrap();
        // Killed here: the push has no end, a has its answer, b none.
        drop(h);
        let mut h = History::open(&path).unwrap();
        let p = h.push(id).unwrap().unwrap();
        assert_eq!((p.ended, p.outcome.as_deref()), (None, None));
        let rows = h.mirrors(id).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].mirror.as_str(), rows[0].synced, rows[0].ok),
            ("a", Some(1_500), Some(true))
        );
        assert_eq!((rows[1].ok, rows[1].answered), (None, None));
        let proofs = h.proofs(id).unwrap();
        assert_eq!(proofs["trace:project/trace/m"], Ok("2026113001".to_owned()));
        assert!(proofs["file:x"].is_err());
        h.end_push(id, 2_000, "ok").unwrap();
        let check = |state: &str, at: i64, serial: Option<&str>| Checked {
            mirror: "a".into(),
            state: state.into(),
            error_class: None,
            checked_ms: at,
            verified_serial: serial.map(str::to_owned),
        };
        h.record_checks(id, &[check("stale", 2_100, None)]).unwrap();
        h.record_checks(id, &[check("verified", 2_500, Some("s1"))])
            .unwrap();
        // Verified once: later rounds do not move the first time.
        h.record_checks(id, &[check("verified", 9_000, Some("s2"))])
            .unwrap();
        let a = &h.mirrors(id).unwrap()[0];
        assert_eq!(
            (a.verified, a.verified_serial.as_deref()),
            (Some(2_500), Some("s1"))
        );
        assert_eq!(a.state.as_deref(), Some("verified"));
    }

    #[test]
    fn the_schema_version_is_set_and_a_newer_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        drop(History::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, schema::VERSION);
        conn.pragma_update(None, "user_version", schema::VERSION + 1)
            .unwrap();
        drop(conn);
        let e = History::open(&path).err().unwrap();
        assert!(e.to_string().contains("newer"), "{e}");
    }

    #[test]
    fn root_does_not_open_a_history_in_a_dir_another_account_owns() {
        let dir = tempfile::tempdir().unwrap();
        let theirs = dir.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        let path = theirs.join("history.db");
        let root = rustix::process::geteuid().is_root();
        if root {
            std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
            let e = History::open(&path).err().expect("refused as root");
            assert!(e.to_string().contains("not opened as root"), "{e}");
            assert!(e.to_string().contains("runuser -u "), "{e}");
            assert!(!path.exists(), "nothing created");
            std::os::unix::fs::chown(&theirs, Some(0), Some(0)).unwrap();
        }
        // Its owner (here: root's own dir, or the caller's when not root) opens it.
        drop(History::open(&path).unwrap());
        assert!(path.exists());
    }
}
