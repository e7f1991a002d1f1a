//! The state directory: created its owner's only, its files checked for another owner before
//! SQLite would fail on them with no name, and read without writing when only reading.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, ErrorCode, OpenFlags};
use tracing::warn;

use super::{DB_FILE, StoreError};

/// Creates the state directory readable by its owner only, 0700 whatever the umask (its missing
/// parents get the usual mode: the exports may live beside it). Every path that creates the
/// state directory goes through here. An existing one is left as it is, with a warning when
/// others may enter it: it may be shared on purpose, and the files rocsync keeps in it are its
/// owner's only anyway.
pub fn create_state_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        // The umask may have taken bits off 0700: the mode is set as it should be.
        Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {
            let mode = std::fs::metadata(dir).map_or(0o700, |m| m.permissions().mode() & 0o7777);
            if mode & 0o077 != 0 {
                warn!(dir = %dir.display(), "The state directory is open to other users (mode {mode:o}); the files in it are not. `chmod 0700` it unless that is meant.");
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The files in the state directory that rocsync writes: the database, SQLite's, the locks.
const STATE_FILES: [&str; 5] = [DB_FILE, "state.db-wal", "state.db-shm", "apply.lock", "daemon.lock"];

/// Refuses, saying whose it is and what to do, a state directory or a file in it that this
/// process may not write. Decided from owners and modes, as access(2) does, without opening
/// the files: closing a descriptor of the database would drop the SQLite locks this process
/// holds on it through another connection.
pub(super) fn check_writable(state_dir: &Path, me: &Ids) -> Result<(), StoreError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let paths = std::iter::once(state_dir.to_owned()).chain(STATE_FILES.iter().map(|f| state_dir.join(f)));
    for path in paths {
        let Ok(meta) = std::fs::metadata(&path) else { continue };
        // Only another user's: a file of ours made read-only (a full disk, on purpose) fails
        // as it is, with its own error.
        if meta.uid() != me.uid && !me.may_write(meta.uid(), meta.gid(), meta.permissions().mode()) {
            return Err(not_writable(state_dir, &path, meta.uid(), me.uid));
        }
    }
    Ok(())
}

/// The error for `path` (owned by `owner`), which this process (`me`) may not write.
fn not_writable(state_dir: &Path, path: &Path, owner: u32, me: u32) -> StoreError {
    use std::os::unix::fs::MetadataExt;
    let (owner_name, me_name) = (user_name(owner), user_name(me));
    let dir_owner = std::fs::metadata(state_dir).map(|m| m.uid()).ok();
    let message = match dir_owner {
        // The directory is ours, a file in it is not: a command run as another user made it.
        Some(d) if d == me => format!(
            "{} belongs to {owner_name} (uid {owner}), not to {me_name}, who runs this rocsync and owns the state directory: it cannot \
             write it (SQLite: \"attempt to write a readonly database\"). A command run as {owner_name} made it. Give the state \
             back to {me_name}: `chown -R {me_name}: {}`; then run rocsync's commands as {me_name}: `runuser -u {me_name} -- rocsync …` \
             (or `sudo -u {me_name} rocsync …`)",
            path.display(),
            state_dir.display()
        ),
        Some(d) => {
            let dir_user = user_name(d);
            format!(
                "{} belongs to {owner_name} (uid {owner}), and this rocsync runs as {me_name}: it cannot write the state there. \
                 Run rocsync as the state directory's user: `runuser -u {dir_user} -- rocsync …` (or `sudo -u {dir_user} rocsync …`)",
                path.display()
            )
        }
        None => format!("{} belongs to {owner_name} (uid {owner}), and this rocsync runs as {me_name}: it cannot write it", path.display()),
    };
    StoreError::NotWritable { path: path.to_owned(), message }
}

/// Who this process is to the file system: its effective user and groups, from
/// `/proc/self/status` (no unsafe call to geteuid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl Ids {
    /// This process's; `None` when `/proc` cannot tell.
    pub fn current() -> Option<Ids> {
        Ids::parse(&std::fs::read_to_string("/proc/self/status").ok()?)
    }

    /// From the text of `/proc/PID/status`: the effective ids are the second of `Uid:` and `Gid:`.
    fn parse(status: &str) -> Option<Ids> {
        let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(|rest| rest.split_whitespace().filter_map(|n| n.parse::<u32>().ok()).collect::<Vec<_>>());
        let uid = *field("Uid:")?.get(1)?;
        let gid = *field("Gid:")?.get(1)?;
        let groups = field("Groups:").unwrap_or_default();
        Some(Ids { uid, gid, groups })
    }

    /// Whether a file owned by `uid`:`gid` with `mode` may be written, as access(2) decides it
    /// (root may write anything).
    pub fn may_write(&self, uid: u32, gid: u32, mode: u32) -> bool {
        if self.uid == 0 {
            return true;
        }
        if uid == self.uid {
            return mode & 0o200 != 0;
        }
        if gid == self.gid || self.groups.contains(&gid) {
            return mode & 0o020 != 0;
        }
        mode & 0o002 != 0
    }
}

/// The name of user `uid` from `/etc/passwd`, or the number when it has none.
pub fn user_name(uid: u32) -> String {
    crate::accounts::user_name(uid).unwrap_or_else(|| uid.to_string())
}

/// Creates `path` empty with mode 0600 whatever the umask, or restricts an existing one to its
/// owner: SQLite then gives the same mode to the `-wal` and `-shm` files it creates beside it.
pub(super) fn create_private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(file) => file.set_permissions(std::fs::Permissions::from_mode(0o600)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            restrict(path, 0o600);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Takes from `path` the permission bits beyond `allowed` (a file or directory an older rocsync
/// left readable by others). A missing file stays missing; a failure (another owner) is logged:
/// the command still runs.
pub(super) fn restrict(path: &Path, allowed: u32) {
    use std::os::unix::fs::PermissionsExt;
    let mode = match std::fs::metadata(path) {
        Ok(m) => m.permissions().mode() & 0o7777,
        Err(_) => return,
    };
    if mode & !allowed == 0 {
        return;
    }
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & allowed)) {
        Ok(()) => warn!(path = %path.display(), "Restricted to its owner: mode {:o}, was {mode:o}.", mode & allowed),
        Err(e) => warn!(path = %path.display(), "Readable by others (mode {mode:o}), and cannot be restricted: {e}."),
    }
}

/// `state.db-wal` for `state.db` and `-wal`.
pub(super) fn sidecar(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The `file:` URI of `path`, every byte but the unreserved ones and `/` percent-encoded.
fn file_uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut uri = String::from("file:");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            uri.push(char::from(b));
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri
}

/// A read-only connection to `path` with the URI parameters `params`, its first read done:
/// SQLite opens lazily, and the errors of setting up the WAL index come out here.
pub(super) fn read_connection(path: &Path, params: &str) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(format!("{}?{params}", file_uri(path)), flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0))?;
    Ok(conn)
}

/// Whether a read failed because SQLite had to write beside the database: the first reader
/// of a WAL database creates and sizes the `-wal` and `-shm` files.
pub(super) fn needs_to_write(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DiskFull | ErrorCode::SystemIoFailure | ErrorCode::CannotOpen | ErrorCode::ReadOnly | ErrorCode::PermissionDenied)
    )
}

/// Reads a WAL database without writing beside it. Through the `-shm` file if there is one,
/// opened read-only (SQLite then reads the WAL into memory when no writer holds the index);
/// else, when the WAL holds nothing, from the database file alone (`immutable`: no locks, no
/// index). Otherwise `first` stands.
pub(super) fn read_without_writing(path: &Path, first: rusqlite::Error) -> rusqlite::Result<Connection> {
    let mut last = first;
    if sidecar(path, "-shm").exists() {
        match read_connection(path, "mode=ro&readonly_shm=1") {
            Ok(conn) => return Ok(conn),
            Err(e) => last = e,
        }
    }
    let wal_empty = std::fs::metadata(sidecar(path, "-wal")).map_or(true, |m| m.len() == 0);
    if wal_empty {
        return read_connection(path, "mode=ro&immutable=1");
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn the_state_directory_and_database_are_their_owners_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let mut store = Store::open(&state).unwrap();
        store.audit("me", "test", None, "x", "t").unwrap();
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join(DB_FILE)), 0o600);
        // The WAL and its index exist while the connection is open.
        assert_eq!(mode(&state.join("state.db-wal")), 0o600);
        assert_eq!(mode(&state.join("state.db-shm")), 0o600);
        drop(store);
        // A database an older rocsync left readable by others is restricted; a directory is
        // left as it is (it may be shared on purpose).
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(state.join(DB_FILE), std::fs::Permissions::from_mode(0o644)).unwrap();
        let store = Store::open(&state).unwrap();
        assert_eq!((mode(&state), mode(&state.join(DB_FILE))), (0o755, 0o600));
        assert_eq!(store.audit_log(5).unwrap()[0].action, "test");
    }

    #[test]
    fn file_uris_escape_what_sqlite_would_read() {
        assert_eq!(file_uri(Path::new("/var/lib/rocsync/state.db")), "file:/var/lib/rocsync/state.db");
        assert_eq!(file_uri(Path::new("a b/%x?y#z.db")), "file:a%20b/%25x%3Fy%23z.db");
    }

    #[test]
    fn who_may_write_is_decided_as_access_does() {
        let status = "Name:\trocsync\nUid:\t0\t998\t998\t998\nGid:\t0\t997\t997\t997\nGroups:\t4 997 \n";
        let me = Ids::parse(status).unwrap();
        assert_eq!(me, Ids { uid: 998, gid: 997, groups: vec![4, 997] }, "the effective ids, not the real ones");
        assert!(me.may_write(998, 997, 0o600));
        assert!(!me.may_write(0, 0, 0o600), "root's state.db, 0600: \"attempt to write a readonly database\"");
        assert!(!me.may_write(0, 0, 0o644));
        assert!(me.may_write(0, 4, 0o660), "through a supplementary group");
        assert!(!me.may_write(998, 997, 0o400), "the owner's bits decide for the owner");
        let root = Ids { uid: 0, gid: 0, groups: vec![] };
        assert!(root.may_write(998, 997, 0o400));
        assert_eq!(Ids::parse("Name:\tx\n"), None);
    }

    /// `rocsync poll` run as root before the service's first start left a root-owned state.db;
    /// the service said only "attempt to write a readonly database", with no path and no hint.
    #[test]
    fn a_state_file_of_another_user_is_named_with_its_owner_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(DB_FILE), b"").unwrap();
        let me = Ids::current().unwrap();
        assert!(check_writable(dir.path(), &me).is_ok(), "our own files");
        // Someone else, who may not write what this test's user made.
        let other = Ids { uid: me.uid + 4242, gid: me.gid + 4242, groups: vec![] };
        let err = check_writable(dir.path(), &other).unwrap_err().to_string();
        let mine = user_name(me.uid);
        assert!(err.contains(&format!("belongs to {mine} (uid {})", me.uid)), "{err}");
        assert!(err.contains(&format!("runuser -u {mine} -- rocsync")), "run as the directory's user: {err}");
        if me.uid == 0 {
            // The service user's directory, root's database in it: chown it back.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
            std::os::unix::fs::chown(dir.path(), Some(other.uid), Some(other.gid)).unwrap();
            let err = check_writable(dir.path(), &other).unwrap_err();
            let StoreError::NotWritable { path, message } = &err else { panic!("{err}") };
            assert_eq!(path, &dir.path().join(DB_FILE));
            let service = user_name(other.uid);
            assert!(message.contains(&format!("chown -R {service}: {}", dir.path().display())), "{message}");
            assert!(message.contains(&format!("runuser -u {service} -- rocsync")), "{message}");
            assert!(message.contains("belongs to root (uid 0)"), "{message}");
        }
    }
}
