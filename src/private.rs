//! Owner-only files and folders: the state directory and what lives in it (database,
//! spool, token) are readable by the account callhook runs as, and nobody else.
//!
//! callhook runs on office desktops and terminal servers where other accounts exist.
//! The state directory holds caller numbers and names, the hook token and the outbox,
//! so it is made `0700` and its files `0600` whatever the umask, and a directory that
//! another account could have planted or can write into is refused before anything in
//! it is trusted, as OpenSSH's `StrictModes` refuses a writable `~/.ssh`. On Windows the
//! state directory lies in the per-user `%LOCALAPPDATA%`, whose ACL already keeps other
//! (non-administrator) accounts out; nothing more is set there.
//!
//! Imports nothing else of the crate: the store and the hook inbox both use it.

use std::fs;
use std::io;
use std::path::Path;

/// Why a state directory is not used.
#[cfg(unix)]
fn refuse(path: &Path, why: &str, fix: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("refusing state directory {}: {why}; {fix}", path.display()),
    )
}

/// Makes `dir` (and its parents) if missing, owner-only; checks an existing one: it
/// must belong to this account and be writable by nobody else (then it is tightened to
/// owner-only, since older versions made it with the umask's `0755`).
pub(crate) fn ensure_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        if !dir.exists() {
            let mut builder = fs::DirBuilder::new();
            builder.recursive(true).mode(0o700);
            builder.create(dir)?;
        }
        let meta = fs::metadata(dir)?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(refuse(
                dir,
                &format!("it belongs to user id {}, not to this account ({me})", meta.uid()),
                "use a state_dir of your own (another account could have planted what is in it)",
            ));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(refuse(
                dir,
                &format!("it is writable by other accounts (mode {:o})", meta.mode() & 0o777),
                &format!("check what is in it, then `chmod 700 {}`", dir.display()),
            ));
        }
        if meta.mode() & 0o077 != 0 {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        fs::create_dir_all(dir)
    }
}

/// Open options that create a file owner-only (`0600`) whatever the umask.
pub(crate) fn file_options() -> fs::OpenOptions {
    #[allow(unused_mut)]
    let mut options = fs::OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

/// Makes an existing file owner-only (older versions left it to the umask); a missing
/// file is fine.
pub(crate) fn restrict_file(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        match fs::metadata(path) {
            Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
                fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            }
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

/// Checks that a secret file (the hook token) belongs to this account and is readable
/// by nobody else: one another account wrote or can read is not a secret.
pub(crate) fn check_secret_file(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata(path)?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me || meta.mode() & 0o077 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} belongs to user id {} with mode {:o}; a secret must be this account's ({me}) and owner-only: delete it, callhook makes a new one",
                    path.display(),
                    meta.uid(),
                    meta.mode() & 0o777
                ),
            ));
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_dir_is_owner_only_and_an_old_one_is_tightened() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/state");
        ensure_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        ensure_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn a_dir_others_can_write_is_refused_with_the_fix() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let error = ensure_dir(&dir).unwrap_err().to_string();
        assert!(
            error.contains("writable by other accounts") && error.contains("chmod 700"),
            "{error}"
        );
    }

    #[test]
    fn files_are_made_owner_only() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("secret");
        file_options().write(true).create(true).open(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(check_secret_file(&path).is_err());
        restrict_file(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        check_secret_file(&path).unwrap();
    }
}
