//! The history database's schema, one migration per version. `PRAGMA user_version` holds the
//! version a database has; [`migrate`] applies the missing steps in one write transaction, so two
//! masters opening a new database at once cannot both apply a step. Steps are append-only:
//! a released step is never edited, a change is a new step.

use rusqlite::{Connection, TransactionBehavior};

/// Each entry takes the database from version `index` to `index + 1`.
const STEPS: &[&str] = &[
    // 1: pushes and what each mirror did. Times are milliseconds since the Unix epoch (UTC), so
    // `datetime(started / 1000, 'unixepoch')` shows them in sqlite3.
    "CREATE TABLE push (
        id INTEGER PRIMARY KEY,
        module TEXT NOT NULL,
        dir TEXT,
        -- the master's proof value taken when the push started (Archive serial or sha256)
        serial TEXT,
        started INTEGER NOT NULL,
        -- NULL while it runs, and forever for a push that was killed
        ended INTEGER,
        who TEXT NOT NULL,
        -- ok, failed or interrupted; NULL while it runs or when it was killed
        outcome TEXT
    );
    CREATE INDEX push_by_module ON push (module, id);
    -- every proof value the master recorded for a push (one per `verify` setting in use)
    CREATE TABLE push_proof (
        push_id INTEGER NOT NULL REFERENCES push (id) ON DELETE CASCADE,
        proof TEXT NOT NULL,
        value TEXT,
        error TEXT,
        PRIMARY KEY (push_id, proof)
    ) WITHOUT ROWID;
    CREATE TABLE push_mirror (
        push_id INTEGER NOT NULL REFERENCES push (id) ON DELETE CASCADE,
        mirror TEXT NOT NULL,
        transport TEXT NOT NULL,
        -- accepted, queued, synced, unreported; NULL: no answer recorded
        answer TEXT,
        -- 1 ok, 0 failed, NULL no answer recorded
        ok INTEGER,
        -- why the mirror is not (yet) verified; NULL once verified
        error_class TEXT,
        -- the push's error message for this mirror
        error TEXT,
        answered INTEGER,
        -- when it answered synced
        synced INTEGER,
        -- when verify first saw the proof match
        verified INTEGER,
        verified_serial TEXT,
        -- the mirror's `verify` setting when the push started
        proof TEXT,
        -- verify's last state: verified, stale, pending, error
        state TEXT,
        checked INTEGER,
        PRIMARY KEY (push_id, mirror)
    ) WITHOUT ROWID;",
];

/// The version this build writes.
pub const VERSION: i64 = STEPS.len() as i64;

/// Brings `conn` to [`VERSION`]. A database from a newer mirrorpush is refused, not touched.
pub fn migrate(conn: &mut Connection) -> Result<(), String> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| format!("cannot lock the database: {e}"))?;
    let have: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| format!("cannot read its schema version: {e}"))?;
    if have > VERSION {
        return Err(format!(
            "schema version {have} is newer than this mirrorpush knows ({VERSION}); upgrade mirrorpush"
        ));
    }
    for (i, step) in STEPS.iter().enumerate().skip(have.max(0) as usize) {
        tx.execute_batch(step)
            .map_err(|e| format!("migration to schema version {} failed: {e}", i + 1))?;
    }
    if have < VERSION {
        tx.pragma_update(None, "user_version", VERSION)
            .map_err(|e| format!("cannot set the schema version: {e}"))?;
    }
    tx.commit()
        .map_err(|e| format!("cannot commit the schema: {e}"))
}
