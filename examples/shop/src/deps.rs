//! What every part of the shop reaches for: its database, its SMTP server, its data folder.

use std::path::PathBuf;

use crate::db::Db;

/// The shop's dependencies, shared by the HTTP side and the tasks (cheap to clone).
#[derive(Clone, Debug)]
pub struct Deps {
    /// The shop's own database (SQLite or PostgreSQL).
    pub db: Db,
    /// The SMTP server confirmation e-mails go to, as `smtp://host:port`.
    pub smtp: String,
    /// Where product photos and their resized variants are kept (shared by every process on
    /// the machine).
    pub data_dir: PathBuf,
}
