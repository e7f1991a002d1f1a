//! Where hosts come from. Each source yields an annuaire [`annuaire::Answer`]; a source error
//! is a reason to keep what is in force, never an empty list.

pub mod annuaire;
pub mod https;
pub mod imap;
pub mod mail;
pub mod maildir;
pub mod schedule;

use std::io::Read;
use std::path::{Path, PathBuf};

/// Why a source could not be read. Nothing is planned from a source error.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The file could not be opened or read.
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The body is larger than `annuaire.max_body_bytes`: an annuaire answer is a few hundred
    /// kilobytes, so this is something else.
    #[error("{input} is larger than the limit of {limit} bytes")]
    TooLarge { input: String, limit: u64 },
    /// A FIFO, a device, a directory: reading it could block forever or never end.
    #[error("{} is not a regular file", path.display())]
    NotAFile { path: PathBuf },
    /// The body is not an annuaire answer.
    #[error("{input} is not an annuaire answer")]
    Answer {
        input: String,
        #[source]
        source: annuaire::AnswerError,
    },
}

/// The most a certificate, a key, a CA bundle or a secret file may hold.
pub const SMALL_FILE: u64 = 1024 * 1024;

/// A certificate, key, CA bundle or secret: a regular file of at most [`SMALL_FILE`] bytes. A
/// FIFO there would block a check (and `ExecStartPre=` with it), `/dev/zero` would never end.
pub fn read_small(path: &Path) -> std::io::Result<Vec<u8>> {
    if !std::fs::metadata(path)?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut body = Vec::new();
    std::fs::File::open(path)?.take(SMALL_FILE + 1).read_to_end(&mut body)?;
    if body.len() as u64 > SMALL_FILE {
        return Err(std::io::Error::other(format!("larger than {SMALL_FILE} bytes")));
    }
    Ok(body)
}

/// Reads an annuaire answer saved in a file (the embedded default, `rocsync plan --source`,
/// `rocsync inspect annuaire`). The format is sniffed, as for an HTTP answer without a
/// content type.
pub fn read_annuaire_file(path: &Path, limit: u64) -> Result<annuaire::Answer, SourceError> {
    let body = read_limited(path, limit)?;
    annuaire::parse(&body, None)
        .map_err(|source| SourceError::Answer { input: path.display().to_string(), source })
}

/// A file's bytes, refused beyond `limit`.
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, SourceError> {
    let io = |source| SourceError::Io { path: path.to_owned(), source };
    // Checked before opening: opening a FIFO for reading blocks until a writer comes.
    if !std::fs::metadata(path).map_err(io)?.is_file() {
        return Err(SourceError::NotAFile { path: path.to_owned() });
    }
    let file = std::fs::File::open(path).map_err(io)?;
    let mut body = Vec::new();
    // Read one byte past the limit to tell "exactly the limit" from "more".
    file.take(limit.saturating_add(1)).read_to_end(&mut body).map_err(io)?;
    if body.len() as u64 > limit {
        return Err(SourceError::TooLarge { input: path.display().to_string(), limit });
    }
    Ok(body)
}
