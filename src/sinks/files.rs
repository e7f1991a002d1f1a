//! The file sink: Squid ACL, plain list and nft script, written together and atomically.
//!
//! Two phases: every file is first written in full to a temporary file beside its target and
//! synced; only when all of them are on disk are they renamed over their targets, and the
//! directories synced. An error in the first phase removes the temporary files and leaves
//! every target as it was. A crash leaves each target either old or new, never half-written.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::catalogue::State;
use crate::sinks::nft_script::{self, Addresses, NftNames};
use crate::sinks::plain::{self, WildcardStyle};
use crate::sinks::{Resolved, Sink, SinkError, haproxy, json, squid, stormshield};

pub use crate::sinks::post_write::PostWrite;

/// What one output file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Export {
    Squid,
    Plain(WildcardStyle),
    NftScript(NftNames),
    Haproxy,
    Json,
    Stormshield,
}

/// One output file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileExport {
    pub export: Export,
    pub path: PathBuf,
    /// Run after the file changed (`squid -k reconfigure`), without a shell.
    pub post_write: Option<PostWrite>,
}

/// Writes every configured output file from a state.
#[derive(Debug, Clone, Default)]
pub struct FileSink {
    pub exports: Vec<FileExport>,
}

impl FileSink {
    /// Each file's path and content for `state`.
    pub fn render(&self, state: &State, plan_id: i64, addresses: &Addresses) -> Vec<(PathBuf, String)> {
        self.exports
            .iter()
            .map(|f| {
                let content = match &f.export {
                    Export::Squid => squid::render(state, plan_id),
                    Export::Plain(style) => plain::render(state, *style),
                    Export::NftScript(names) => nft_script::render(state, plan_id, names, addresses),
                    Export::Haproxy => haproxy::render(state, plan_id),
                    Export::Json => json::render(state, plan_id),
                    Export::Stormshield => stormshield::render(state, addresses),
                };
                (f.path.clone(), content)
            })
            .collect()
    }
}

impl Sink for FileSink {
    fn name(&self) -> &str {
        "files"
    }

    fn apply(&self, state: &State, plan_id: i64, resolved: &Resolved) -> Result<Vec<String>, SinkError> {
        let files = self.render(state, plan_id, &resolved.addresses);
        let changed: Vec<bool> = files.iter().map(|(path, want)| fs::read_to_string(path).map_or(true, |have| have != *want)).collect();
        write_atomically(&files)?;
        let mut warnings = Vec::new();
        for (export, changed) in self.exports.iter().zip(changed) {
            if let (true, Some(post)) = (changed, &export.post_write) {
                if let Err(e) = post.run() {
                    warnings.push(format!("after writing {}: {e}", export.path.display()));
                }
            }
        }
        Ok(warnings)
    }

    fn drift(&self, state: &State, plan_id: i64, resolved: &Resolved) -> Vec<String> {
        self.render(state, plan_id, &resolved.addresses)
            .into_iter()
            .filter_map(|(path, want)| match fs::read_to_string(&path) {
                Ok(have) if have == want => None,
                Ok(_) => Some(format!("{} differs from what rocsync wrote", path.display())),
                Err(e) => Some(format!("{}: {e}", path.display())),
            })
            .collect()
    }
}

/// The temporary file beside `path`: same directory, so that the rename is atomic.
fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.rocsync-tmp"))
}

/// Replaces every file of `files` with its content, all or none.
pub fn write_atomically(files: &[(PathBuf, String)]) -> Result<(), SinkError> {
    let mut written = Vec::new();
    for (path, content) in files {
        let tmp = temp_path(path);
        if let Err(source) = write_synced(&tmp, content) {
            for t in written.iter().chain([&tmp]) {
                let _ = fs::remove_file(t);
            }
            return Err(SinkError::Write { path: path.clone(), source });
        }
        written.push(tmp);
    }
    failpoint("files-before-rename");
    for ((path, _), tmp) in files.iter().zip(&written) {
        fs::rename(tmp, path).map_err(|source| SinkError::Write { path: path.clone(), source })?;
    }
    let mut dirs: Vec<&Path> = files.iter().filter_map(|(p, _)| p.parent()).collect();
    dirs.dedup();
    for dir in dirs {
        // Makes the renames durable; a directory that cannot be opened was just written to.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

fn write_synced(tmp: &Path, content: &str) -> std::io::Result<()> {
    if let Some(dir) = tmp.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    let mut file = fs::File::create(tmp)?;
    file.write_all(content.as_bytes())?;
    file.sync_all()
}

/// For crash tests only: when `ROCSYNC_FAILPOINT` names this point, the process dies on the
/// spot, as it would under `kill -9`, without unwinding or flushing anything.
pub fn failpoint(name: &str) {
    if std::env::var_os("ROCSYNC_FAILPOINT").is_some_and(|v| v == name) {
        eprintln!("rocsync: failpoint {name}: aborting");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.txt");
        let b = dir.path().join("sub/b.txt");
        write_atomically(&[(a.clone(), "a1\n".into()), (b.clone(), "b1\n".into())]).unwrap();
        assert_eq!(fs::read_to_string(&b).unwrap(), "b1\n");
        // The second target's directory is a file: nothing may change, no temporary file stays.
        let blocked = dir.path().join("blocked");
        fs::write(&blocked, "x").unwrap();
        let err = write_atomically(&[(a.clone(), "a2\n".into()), (blocked.join("c.txt"), "c\n".into())]).unwrap_err();
        assert!(err.to_string().contains("blocked/c.txt"), "{err}");
        assert_eq!(fs::read_to_string(&a).unwrap(), "a1\n");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 3, "{names:?}");
    }
}
