//! The file sink: Squid ACL, plain list, nft script and the other exports, written together,
//! all or none.
//!
//! Four steps. Every target is checked before anything is written (a directory, a special file,
//! a parent that is a file: an error that names it). Each new content goes to a temporary file
//! beside its target, under an unpredictable name, created exclusively without following links,
//! and synced. Each old file is kept aside under another such name (a hard link). Only then are
//! the temporary files renamed over their targets and the directories synced; if a rename fails
//! midway, the files already replaced are put back, so every output stays at its old version. A
//! crash leaves each target old or new, never half-written; the next write removes what it left.
//!
//! Every export has one mode, [`EXPORT_MODE`], whatever the umask of whoever writes it (the
//! service has `UMask=0027`, a shell usually 0022): Squid, HAProxy and the firewalls' pull jobs
//! read them as other users. A file whose content and mode are already right is not replaced,
//! so what watches it (rocsync-squid-reload.path) sees real changes only.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tempfile::{NamedTempFile, TempPath};
use tracing::warn;

use crate::catalogue::State;
use crate::sinks::nft_script::{self, NftNames};
use crate::sinks::plain::{self, WildcardStyle};
use crate::resolve::{Addresses, Resolved};
use crate::sinks::{Sink, SinkError, haproxy, json, squid, stormshield};

pub use crate::sinks::post_write::PostWrite;

/// The mode of every export: written by rocsync, read by everyone (a list of public host
/// names). Set on the temporary file before the rename, so no reader ever sees another one.
pub const EXPORT_MODE: u32 = 0o644;

/// The mode of the directories rocsync creates for its exports: the readers must reach them.
const EXPORT_DIR_MODE: u32 = 0o755;

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

impl Export {
    /// The configuration's name of the export's table: `exports.KEY`.
    pub fn key(&self) -> &'static str {
        match self {
            Export::Squid => "squid",
            Export::Plain(_) => "plain",
            Export::NftScript(_) => "nft_script",
            Export::Haproxy => "haproxy",
            Export::Json => "json",
            Export::Stormshield => "stormshield",
        }
    }
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
        let changed: Vec<bool> = files.iter().map(|(path, want)| read_current(path).map_or(true, |have| have != *want)).collect();
        // Only what differs is replaced (content, mode, or a link where the file should be).
        let stale: Vec<(PathBuf, String)> = files.into_iter().filter(|(path, want)| needs_write(path, want)).collect();
        write_atomically(&stale)?;
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
            .filter_map(|(path, want)| match read_current(&path) {
                Ok(have) if have == want => None,
                Ok(_) => Some(format!("{} differs from what rocsync wrote", path.display())),
                Err(e) => Some(format!("{}: {e}", path.display())),
            })
            .collect()
    }
}

/// What `path` holds when it is a regular file, through a link or not: a FIFO or a device
/// planted there would block the read or never end it.
fn read_current(path: &Path) -> io::Result<String> {
    if !fs::metadata(path)?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    fs::read_to_string(path)
}

/// Whether `path` must be written to hold `want` with [`EXPORT_MODE`]: it is missing, is not a
/// regular file of its own (a link is replaced, never kept), has another mode or content.
fn needs_write(path: &Path, want: &str) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o7777 == EXPORT_MODE => {
            read_current(path).map_or(true, |have| have != want)
        }
        _ => true,
    }
}

/// Replaces every file of `files` with its content, all or none.
pub fn write_atomically(files: &[(PathBuf, String)]) -> Result<(), SinkError> {
    replace_all(files, |_| {})
}

/// [`write_atomically`], calling `before_rename` before each target is replaced: the tests make
/// a rename fail there, midway.
fn replace_all(files: &[(PathBuf, String)], mut before_rename: impl FnMut(&Path)) -> Result<(), SinkError> {
    let targets = files.iter().map(|(path, _)| Target::check(path)).collect::<Result<Vec<_>, _>>()?;
    for target in &targets {
        target.remove_leftovers();
    }
    // Until they are renamed, dropping these removes them: an error below leaves no file behind.
    let mut news = Vec::with_capacity(files.len());
    for (target, (_, content)) in targets.iter().zip(files) {
        news.push(write_new(target, content).map_err(|source| target.error(source))?);
    }
    let mut kept = Vec::with_capacity(files.len());
    for target in &targets {
        kept.push(keep_aside(target).map_err(|source| target.error(source))?);
    }
    failpoint("files-before-rename");
    let mut replaced = 0;
    let mut failed = None;
    for (target, new) in targets.iter().zip(news) {
        before_rename(target.path);
        if let Err(e) = new.persist(target.path) {
            failed = Some((target.path, e.error));
            break;
        }
        replaced += 1;
    }
    let result = match failed {
        None => Ok(()),
        Some((path, source)) => {
            let outcome = put_back(&targets[..replaced], kept);
            Err(SinkError::Replace { path: path.to_owned(), outcome, source })
        }
    };
    sync_dirs(&targets);
    result
}

/// An output path that passed [`Target::check`]: the directory its temporary files go to, and
/// the file name they begin with.
struct Target<'a> {
    path: &'a Path,
    dir: PathBuf,
    name: OsString,
}

impl<'a> Target<'a> {
    /// Refuses, before anything is written, a path that cannot take a file: one that names no
    /// file, a directory, a special file (FIFO, socket, device), one under a file. A link is
    /// accepted: it is replaced, never written through. Missing directories are made later.
    fn check(path: &'a Path) -> Result<Target<'a>, SinkError> {
        let refuse = |why: String| SinkError::Write { path: path.to_owned(), source: io::Error::new(io::ErrorKind::InvalidInput, why) };
        let name = path.file_name().ok_or_else(|| refuse("names no file".into()))?.to_owned();
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.is_file() || meta.file_type().is_symlink() => {}
            Ok(meta) if meta.is_dir() => return Err(refuse("is a directory".into())),
            Ok(_) => return Err(refuse("is not a regular file".into())),
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {}
            Err(source) => return Err(SinkError::Write { path: path.to_owned(), source }),
        }
        // The nearest of its directories that exists must be one.
        let mut ancestor = dir.as_path();
        loop {
            match fs::metadata(ancestor) {
                Ok(meta) if meta.is_dir() => break,
                Ok(_) => return Err(refuse(format!("{} is not a directory", ancestor.display()))),
                Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => match ancestor.parent() {
                    Some(up) if !up.as_os_str().is_empty() => ancestor = up,
                    _ => break,
                },
                Err(source) => return Err(SinkError::Write { path: path.to_owned(), source }),
            }
        }
        Ok(Target { path, dir, name })
    }

    fn error(&self, source: io::Error) -> SinkError {
        SinkError::Write { path: self.path.to_owned(), source }
    }

    /// Removes what a run killed midway left beside this target, its temporary files and the
    /// old files it kept aside, known by the shape of their names. A link there is removed,
    /// never followed.
    fn remove_leftovers(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else { return };
        let start = name_start(&self.name);
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.as_encoded_bytes();
            if name.starts_with(start.as_encoded_bytes()) && name.ends_with(TEMP_SUFFIX.as_bytes()) {
                let path = entry.path();
                match fs::remove_file(&path) {
                    Ok(()) => warn!("Removed {}, left by an earlier write.", path.display()),
                    Err(e) => warn!("Cannot remove {}, left by an earlier write: {e}", path.display()),
                }
            }
        }
    }
}

/// How every temporary name ends: `.squid.acl.new.x8Kq2B.rocsync-tmp` is a new `squid.acl`,
/// `.squid.acl.old.Tz3mQa.rocsync-tmp` the old one kept aside.
const TEMP_SUFFIX: &str = ".rocsync-tmp";

/// `.NAME.`: how the temporary names of the file NAME begin.
fn name_start(name: &OsStr) -> OsString {
    let mut start = OsString::from(".");
    start.push(name);
    start.push(".");
    start
}

/// A temporary file beside `target` in the `role` it plays (`new`, `old`), under an
/// unpredictable name that `create` makes; another name is tried when one is taken.
fn temp_beside<R>(target: &Target, role: &str, create: impl FnMut(&Path) -> io::Result<R>) -> io::Result<NamedTempFile<R>> {
    let mut prefix = name_start(&target.name);
    prefix.push(role);
    prefix.push(".");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(TEMP_SUFFIX);
    builder.make_in(&target.dir, create)
}

/// Creates the file `path`, which must not exist: `O_CREAT | O_EXCL` fails on anything there, a
/// link included, and `O_NOFOLLOW` says so twice. The mode is `File::create`'s: 0666 less the
/// umask.
fn create_exclusive(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new().write(true).create_new(true).custom_flags(libc::O_NOFOLLOW).mode(0o666).open(path)
}

/// Writes `content` to a new temporary file beside `target`, with [`EXPORT_MODE`], synced.
fn write_new(target: &Target, content: &str) -> io::Result<NamedTempFile> {
    use std::os::unix::fs::PermissionsExt as _;
    create_dirs(&target.dir)?;
    let mut file = temp_beside(target, "new", create_exclusive)?;
    // The umask took its bits off the creation mode; the export's mode is not the umask's.
    file.as_file().set_permissions(fs::Permissions::from_mode(EXPORT_MODE))?;
    file.write_all(content.as_bytes())?;
    file.as_file().sync_all()?;
    Ok(file)
}

/// Creates `dir` and its missing parents with [`EXPORT_DIR_MODE`] whatever the umask; those
/// that exist are left as they are.
fn create_dirs(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs(parent)?;
    }
    match fs::DirBuilder::new().mode(EXPORT_DIR_MODE).create(dir) {
        Ok(()) => fs::set_permissions(dir, fs::Permissions::from_mode(EXPORT_DIR_MODE)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Keeps the file at `target` under another name until every rename succeeded, to put it back
/// if one fails; `None` when there is none. A hard link keeps the very file, owner and mode; a
/// copy stands in where links are refused (`fs.protected_hardlinks` and another user's file, a
/// file system without them).
fn keep_aside(target: &Target) -> io::Result<Option<TempPath>> {
    let meta = match fs::symlink_metadata(target.path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // On Linux a hard link to a symbolic link is to the link itself, as wanted.
    if let Ok(link) = temp_beside(target, "old", |at| fs::hard_link(target.path, at)) {
        return Ok(Some(link.into_temp_path()));
    }
    let copy = if meta.file_type().is_symlink() {
        let points_to = fs::read_link(target.path)?;
        temp_beside(target, "old", |at| std::os::unix::fs::symlink(&points_to, at))?.into_temp_path()
    } else {
        let old = fs::read(target.path)?;
        let mut copy = temp_beside(target, "old", create_exclusive)?;
        copy.write_all(&old)?;
        copy.as_file().set_permissions(meta.permissions())?;
        copy.as_file().sync_all()?;
        copy.into_temp_path()
    };
    Ok(Some(copy))
}

/// Puts back, last first, what `targets` held before they were replaced, from what
/// [`keep_aside`] kept (`kept[i]` for `targets[i]`; the rest is dropped, so removed). Says
/// whether every output is at its old version again.
fn put_back(targets: &[Target], mut kept: Vec<Option<TempPath>>) -> String {
    kept.truncate(targets.len());
    let mut lost = Vec::new();
    for (target, old) in targets.iter().zip(kept).rev() {
        let back = match old {
            Some(old) => old.persist(target.path).map_err(|e| {
                let at = e.path.keep().map_or_else(|_| "nowhere".to_owned(), |p| p.display().to_string());
                format!("{} (its old version is kept as {at}): {}", target.path.display(), e.error)
            }),
            // There was no file: there is none again.
            None => match fs::remove_file(target.path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(format!("{} (which did not exist before): {e}", target.path.display())),
                _ => Ok(()),
            },
        };
        if let Err(e) = back {
            lost.push(e);
        }
    }
    if targets.is_empty() {
        "no output file was changed".to_owned()
    } else if lost.is_empty() {
        "the outputs already replaced were put back: every output is at its old version".to_owned()
    } else {
        format!("could not put back {}: the outputs are mixed until a pass rewrites them", lost.join("; "))
    }
}

/// Makes the renames durable: they are entries of their directories, synced with them.
fn sync_dirs(targets: &[Target]) {
    let mut dirs: Vec<&Path> = targets.iter().map(|t| t.dir.as_path()).collect();
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        if let Err(e) = fs::File::open(dir).and_then(|d| d.sync_all()) {
            warn!("Cannot sync the directory {}: {e}", dir.display());
        }
    }
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
    use std::os::unix::fs::{FileTypeExt, MetadataExt, symlink};

    use super::*;

    /// The names in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

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
        let text = crate::error_chain(&err);
        assert!(text.contains("blocked/c.txt") && text.contains("blocked is not a directory"), "{text}");
        assert_eq!(fs::read_to_string(&a).unwrap(), "a1\n");
        assert_eq!(names(dir.path()), ["a.txt", "blocked", "sub"]);
    }

    /// Regression: the temporary file had a fixed name, `.NAME.rocsync-tmp`, opened with
    /// `File::create`, so a link planted there made rocsync overwrite the file it pointed to,
    /// and the rename then made the output itself that link.
    #[test]
    fn a_link_planted_at_the_old_temporary_name_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious\n").unwrap();
        symlink(&victim, out.join(".hosts.txt.rocsync-tmp")).unwrap();
        let target = out.join("hosts.txt");
        write_atomically(&[(target.clone(), "a.test\n".into())]).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
        assert!(fs::symlink_metadata(&target).unwrap().is_file(), "the output is a file, not a link");
        assert_eq!(fs::read_to_string(&target).unwrap(), "a.test\n");
        assert_eq!(names(&out), ["hosts.txt"], "the planted link is removed, not followed");
    }

    #[test]
    fn links_planted_at_the_target_and_at_temporary_names_write_nothing_outside() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious\n").unwrap();
        let target = out.join("hosts.txt");
        symlink(&victim, &target).unwrap();
        for name in [".hosts.txt.new.AAAAAA.rocsync-tmp", ".hosts.txt.old.AAAAAA.rocsync-tmp", ".hosts.txt.x.rocsync-tmp"] {
            symlink(&victim, out.join(name)).unwrap();
        }
        // A dangling link: following it would create a file outside.
        symlink(dir.path().join("created-outside"), out.join(".hosts.txt.new.BBBBBB.rocsync-tmp")).unwrap();
        for round in ["a.test\n", "b.test\n"] {
            write_atomically(&[(target.clone(), round.into())]).unwrap();
            assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
            assert!(fs::symlink_metadata(&target).unwrap().is_file(), "the link at the target is replaced, not written through");
            assert_eq!(fs::read_to_string(&target).unwrap(), round);
            assert_eq!(names(&out), ["hosts.txt"]);
            assert_eq!(names(dir.path()), ["out", "victim"]);
        }
    }

    #[test]
    fn temporary_files_are_created_exclusively_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious\n").unwrap();
        let planted = dir.path().join("planted");
        symlink(&victim, &planted).unwrap();
        assert!(create_exclusive(&planted).is_err());
        let dangling = dir.path().join("dangling");
        symlink(dir.path().join("created-outside"), &dangling).unwrap();
        assert!(create_exclusive(&dangling).is_err());
        assert!(create_exclusive(&victim).is_err(), "an existing file is not opened either");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
        assert!(!dir.path().join("created-outside").exists());
    }

    #[test]
    fn temporary_names_are_unpredictable() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("hosts.txt");
        let mut seen = Vec::new();
        // The first write has no old file to keep aside; the second one does.
        for round in ["1\n", "2\n"] {
            replace_all(&[(target.clone(), round.into())], |_| {
                seen.extend(names(dir.path()).into_iter().filter(|n| n.ends_with(TEMP_SUFFIX)));
            })
            .unwrap();
        }
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert!(seen.iter().all(|n| n.starts_with(".hosts.txt.") && n.len() > ".hosts.txt.new..rocsync-tmp".len()), "{seen:?}");
        let mut distinct = seen.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 3, "{seen:?}");
        assert_eq!(names(dir.path()), ["hosts.txt"]);
    }

    /// Regression: a target that was a directory failed its rename after the targets before it
    /// were replaced: the outputs came from two plans, and the temporary files stayed.
    #[test]
    fn a_target_that_is_a_directory_changes_nothing_and_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (dir.path().join("a.txt"), dir.path().join("b"), dir.path().join("c.txt"));
        write_atomically(&[(a.clone(), "a1\n".into()), (c.clone(), "c1\n".into())]).unwrap();
        fs::create_dir(&b).unwrap();
        let err = write_atomically(&[(a.clone(), "a2\n".into()), (b.clone(), "b\n".into()), (c.clone(), "c2\n".into())]).unwrap_err();
        let text = crate::error_chain(&err);
        assert!(text.contains(b.to_str().unwrap()) && text.contains("is a directory") && text.contains("no output file was changed"), "{text}");
        assert_eq!(fs::read_to_string(&a).unwrap(), "a1\n");
        assert_eq!(fs::read_to_string(&c).unwrap(), "c1\n");
        assert_eq!(names(dir.path()), ["a.txt", "b", "c.txt"]);
        assert_eq!(names(&b), Vec::<String>::new());
    }

    #[test]
    fn a_special_file_at_a_target_is_refused_without_being_opened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("hosts.txt");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        // Opening a FIFO to read it would block until a writer came.
        assert!(read_current(&fifo).is_err());
        let err = write_atomically(&[(fifo.clone(), "a.test\n".into())]).unwrap_err();
        let text = crate::error_chain(&err);
        assert!(text.contains("hosts.txt") && text.contains("is not a regular file"), "{text}");
        assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
        assert_eq!(names(dir.path()), ["hosts.txt"]);
    }

    /// A rename that fails after others succeeded (here the last target becomes a directory
    /// between the check and its rename, so the real rename fails): the outputs already replaced
    /// are put back, the very old files, and one that did not exist is removed again.
    #[test]
    fn a_rename_failing_midway_puts_back_the_files_already_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (dir.path().join("a.txt"), dir.path().join("b.txt"), dir.path().join("c.txt"));
        write_atomically(&[(a.clone(), "a1\n".into()), (b.clone(), "b1\n".into())]).unwrap();
        let inode = fs::metadata(&a).unwrap().ino();
        let files = [(a.clone(), "a2\n".to_owned()), (c.clone(), "c2\n".to_owned()), (b.clone(), "b2\n".to_owned())];
        let mut midway = None;
        let err = replace_all(&files, |target| {
            if target == b.as_path() {
                midway = Some((fs::read_to_string(&a).unwrap(), fs::read_to_string(&c).unwrap()));
                fs::remove_file(&b).unwrap();
                fs::create_dir(&b).unwrap();
                fs::write(b.join("inside"), "").unwrap();
            }
        })
        .unwrap_err();
        assert_eq!(midway, Some(("a2\n".to_owned(), "c2\n".to_owned())), "a and c were replaced before b failed");
        let text = crate::error_chain(&err);
        assert!(matches!(err, SinkError::Replace { .. }), "{text}");
        assert!(text.contains("cannot replace") && text.contains("b.txt") && text.contains("every output is at its old version"), "{text}");
        assert_eq!(fs::read_to_string(&a).unwrap(), "a1\n");
        assert_eq!(fs::metadata(&a).unwrap().ino(), inode, "the old file itself is back");
        assert!(!c.exists(), "c did not exist before");
        assert_eq!(names(dir.path()), ["a.txt", "b.txt"], "no temporary file remains");
    }

    #[test]
    fn a_rename_failing_first_says_nothing_changed() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.txt");
        write_atomically(&[(a.clone(), "a1\n".into())]).unwrap();
        let err = replace_all(&[(a.clone(), "a2\n".into())], |target| {
            fs::remove_file(target).unwrap();
            fs::create_dir(target).unwrap();
        })
        .unwrap_err();
        let text = crate::error_chain(&err);
        assert!(text.contains("no output file was changed"), "{text}");
        assert_eq!(names(dir.path()), ["a.txt"]);
    }

    /// The daemon (UMask=0027) wrote the exports 0640 and the timer's pass (UMask=0022) 0644;
    /// rocsync-squid-reload.path would reload Squid at every rewrite of an unchanged ACL. One
    /// mode whatever the umask; a file already right stays the very file; a wrong mode or a link
    /// is replaced.
    #[test]
    fn exports_have_one_mode_and_an_unchanged_one_is_not_replaced() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out/hosts.txt");
        let sink = FileSink { exports: vec![FileExport { export: Export::Plain(WildcardStyle::Star), path: path.clone(), post_write: None }] };
        let (state, resolved) = (State::default(), Resolved::default());
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        sink.apply(&state, 1, &resolved).unwrap();
        assert_eq!((mode(&path), mode(&dir.path().join("out"))), (EXPORT_MODE, EXPORT_DIR_MODE));
        let inode = fs::metadata(&path).unwrap().ino();
        sink.apply(&state, 1, &resolved).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().ino(), inode, "unchanged: not replaced");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        sink.apply(&state, 1, &resolved).unwrap();
        assert_eq!(mode(&path), EXPORT_MODE);
        assert_ne!(fs::metadata(&path).unwrap().ino(), inode, "another mode: replaced");
        // A link to a file holding the same content is no export of rocsync's.
        let elsewhere = dir.path().join("elsewhere.txt");
        fs::copy(&path, &elsewhere).unwrap();
        fs::remove_file(&path).unwrap();
        symlink(&elsewhere, &path).unwrap();
        assert!(needs_write(&path, &fs::read_to_string(&elsewhere).unwrap()));
        sink.apply(&state, 1, &resolved).unwrap();
        assert!(fs::symlink_metadata(&path).unwrap().is_file());
        // write_atomically gives the mode too.
        let other = dir.path().join("new/dir/x.txt");
        write_atomically(&[(other.clone(), "x\n".into())]).unwrap();
        assert_eq!((mode(&other), mode(&dir.path().join("new")), mode(&dir.path().join("new/dir"))), (EXPORT_MODE, EXPORT_DIR_MODE, EXPORT_DIR_MODE));
    }

    #[test]
    fn leftovers_of_a_killed_write_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("hosts.txt");
        for name in [".hosts.txt.new.Q1w2E3.rocsync-tmp", ".hosts.txt.old.R4t5Y6.rocsync-tmp", ".hosts.txt.rocsync-tmp"] {
            fs::write(dir.path().join(name), "left\n").unwrap();
        }
        for name in [".other.new.Q1w2E3.rocsync-tmp", "hosts.txt.bak", ".hosts.txt.swp"] {
            fs::write(dir.path().join(name), "kept\n").unwrap();
        }
        write_atomically(&[(target.clone(), "a.test\n".into())]).unwrap();
        assert_eq!(names(dir.path()), [".hosts.txt.swp", ".other.new.Q1w2E3.rocsync-tmp", "hosts.txt", "hosts.txt.bak"]);
    }
}
