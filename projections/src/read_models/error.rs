//! What can go wrong in the read models.

use std::fmt;

#[derive(Debug)]
pub enum ProjectionError {
    Db(redb::Error),
    /// The batch does not start where the read models stopped.
    Gap {
        expected: u64,
        found: u64,
    },
    Invalid(String),
    Io(std::io::Error),
}

impl fmt::Display for ProjectionError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            ProjectionError::Db(error) => write!(f, "read model store: {error}"),
            ProjectionError::Gap { expected, found } => {
                write!(f, "events must be applied in order: expected position {expected}, got {found}")
            }
            ProjectionError::Invalid(message) => f.write_str(message),
            ProjectionError::Io(error) => write!(f, "read model files: {error}"),
        }
    }
}

impl std::error::Error for ProjectionError {}

impl<E: Into<redb::Error>> From<E> for ProjectionError {
    fn from(error: E) -> Self {
        ProjectionError::Db(error.into())
    }
}
