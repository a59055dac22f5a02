//! What can go wrong in the read models.

use std::fmt;

/// Why a read or an apply failed.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("read model store: {0}")]
    Db(redb::Error),
    /// The batch does not start where the read models stopped.
    #[error("events must be applied in order: expected position {expected}, got {found}")]
    Gap { expected: u64, found: u64 },
    #[error("{0}")]
    Invalid(String),
    /// The request would cover more than a limit allows; it names the limit.
    #[error("{what}: more than {max}; ask for fewer (one account at a time)")]
    TooMany { what: &'static str, max: usize },
    #[error("read model files: {0}")]
    Io(std::io::Error),
    /// The database file itself is damaged (a page whose checksum fails, a file cut
    /// short): nothing in it can be read. Rebuild the read models from the log.
    #[error("the read-model database {path} is damaged: {reason}; rebuild the read models from the log")]
    Damaged { path: String, reason: String },
    /// The read models applied events up to `checkpoint`, and only durable events are
    /// ever applied, but the log ends at `head` and recovery cut no torn tail: the log
    /// lost durable events.
    #[error(
        "the read models applied the log up to position {checkpoint} but the log ends at {head}, with no torn tail \
         cut: the log lost durable events; restore it from a backup (or rebuild the read models to accept the loss)"
    )]
    LogShorter { checkpoint: u64, head: u64 },
    /// Stored data that does not decode, an event the read models contradict, or a
    /// figure that does not fit its type: never a value made up in its place.
    #[error(transparent)]
    ReadModel(#[from] ReadModelError),
}

impl ProjectionError {
    /// `Damaged` for redb's verdict that the file at `path` is corrupt, `Db` otherwise.
    pub(super) fn damaged_or_db(path: &std::path::Path, error: redb::Error) -> ProjectionError {
        match error {
            redb::Error::Corrupted(reason) => ProjectionError::Damaged { path: path.display().to_string(), reason },
            // redb's answer for a file that has bytes but not its magic number: a
            // power loss while the file was being created leaves exactly that.
            redb::Error::Io(error) if error.kind() == std::io::ErrorKind::InvalidData => ProjectionError::Damaged {
                path: path.display().to_string(),
                reason: "not a redb database (no magic number: its creation was cut short, or it is another file)"
                    .into(),
            },
            other => ProjectionError::Db(other),
        }
    }
}

impl<E: Into<redb::Error>> From<E> for ProjectionError {
    fn from(error: E) -> Self {
        ProjectionError::Db(error.into())
    }
}

/// The read models hold (or would come to hold) something they cannot stand behind.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadModelError {
    /// A stored row does not decode: the read-model database is damaged. Rebuilding
    /// the read models from the log repairs it.
    #[error("damaged read-model row in table {table}, {key}: {reason}; rebuild the read models")]
    Corrupt { table: &'static str, key: String, reason: String },
    /// An event does not fit the read models folded from the log before it (a movement
    /// on an account they do not know, a hold they have no row of, a balance that would
    /// go below zero or past u128): either the read models lost rows or the log is not
    /// one the ledger wrote.
    #[error("the read models contradict the event at log position {position}: {reason}; rebuild the read models")]
    Invariant { position: u64, reason: String },
    /// A figure derived from stored amounts does not fit its type (a net balance beyond
    /// the range of i128, say). The data may be sound; it cannot be shown as asked.
    #[error("{what} does not fit its type")]
    Overflow { what: String },
}

impl ReadModelError {
    /// Whether this error means the read models cannot be trusted (and raises their
    /// alarm), as opposed to a figure too large to show.
    pub fn is_corruption(&self) -> bool {
        matches!(self, ReadModelError::Corrupt { .. } | ReadModelError::Invariant { .. })
    }
}

/// A damaged row of `table` at `key`.
pub(super) fn corrupt(table: &'static str, key: impl fmt::Display, reason: String) -> ReadModelError {
    ReadModelError::Corrupt { table, key: key.to_string(), reason }
}

/// An event at `position` that the read models contradict.
pub(super) fn invariant(position: u64, reason: String) -> ReadModelError {
    ReadModelError::Invariant { position, reason }
}
