//! The pidfile: locked (`flock`) for the arbiter's whole life, written in place, removed at
//! exit. The lock, not the pid in the file, says whether an arbiter runs: two starts at once
//! cannot both take it, a second start is refused without touching the first's file, and a
//! file left by a killed arbiter (whose pid may since belong to another process) is taken over.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::kill;
use nix::unistd::Pid;

use crate::Error;

/// A pidfile this process holds locked; removed on drop, then unlocked.
#[derive(Debug)]
pub struct Pidfile {
    path: PathBuf,
    pid: u32,
    /// The open, locked file. Forked workers share the lock (it belongs to the open file
    /// description); they die with the arbiter.
    _lock: Flock<File>,
}

/// The pid recorded in a pidfile, if the file exists and the process is alive.
pub fn read_live(path: &Path) -> Option<u32> {
    let pid: i32 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
    (pid > 0 && alive(pid as u32)).then_some(pid as u32)
}

/// Whether a process exists and has not exited (a zombie waiting for its parent has).
pub fn alive(pid: u32) -> bool {
    if kill(Pid::from_raw(pid as i32), None).is_err() {
        return false;
    }
    // The state follows the command name, which is in parentheses and may contain spaces.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !matches!(
        stat.rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().chars().next()),
        Some(Some('Z')) | Some(Some('X'))
    )
}

impl Pidfile {
    /// Claims the pidfile for this process: refused while another process holds its lock.
    pub fn create(path: &Path) -> Result<Pidfile, Error> {
        let pid = std::process::id();
        let io = |source| Error::Pidfile {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        // A previous owner removes the file at exit: one opened just before that removal and
        // locked just after is no longer the file at `path`, so open it again (a few times).
        for _ in 0..10 {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .open(path)
                .map_err(io)?;
            let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => lock,
                Err((file, Errno::EWOULDBLOCK)) => {
                    return Err(Error::AlreadyRunning {
                        pid: holder(file),
                        pidfile: path.to_path_buf(),
                    });
                }
                Err((_, e)) => return Err(io(e.into())),
            };
            let same = match (lock.metadata(), std::fs::metadata(path)) {
                (Ok(held), Ok(named)) => held.ino() == named.ino() && held.dev() == named.dev(),
                _ => false,
            };
            if !same {
                continue;
            }
            lock.set_len(0)
                .and_then(|_| lock.rewind())
                .and_then(|_| writeln!(lock, "{pid}"))
                .and_then(|_| lock.sync_all())
                .map_err(io)?;
            return Ok(Pidfile {
                path: path.to_path_buf(),
                pid,
                _lock: lock,
            });
        }
        Err(io(std::io::Error::other(
            "it keeps being replaced by another process",
        )))
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The pid in a pidfile another process holds locked; it may be between taking the lock and
/// writing its pid, so an empty file is read again for a moment.
fn holder(mut file: File) -> u32 {
    for _ in 0..20 {
        let mut text = String::new();
        let _ = file.rewind();
        let _ = file.read_to_string(&mut text);
        if let Ok(pid) = text.trim().parse() {
            return pid;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    0
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        // Only the arbiter removes it: a forked worker carries a copy of this value too.
        if std::process::id() != self.pid {
            return;
        }
        // Removed while still locked, so no other start can take a file that is going away
        // (and one that opened it before the removal sees it is gone: see `create`).
        let ours = std::fs::metadata(&self.path)
            .ok()
            .zip(self._lock.metadata().ok())
            .is_some_and(|(named, held)| named.ino() == held.ino() && named.dev() == held.dev());
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_pidfile_is_taken_over_and_removed_at_exit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/arbiter.pid");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        // Left by a killed arbiter: no lock. Its pid may be anyone's now (pid 1 is alive).
        for stale in ["99999999\n", "1\n", ""] {
            std::fs::write(&path, stale).unwrap();
            let pidfile = Pidfile::create(&path).unwrap();
            assert_eq!(
                std::fs::read_to_string(&path).unwrap().trim(),
                std::process::id().to_string()
            );
            drop(pidfile);
            assert!(!path.exists(), "removed at exit");
        }
    }

    #[test]
    fn a_locked_pidfile_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("arbiter.pid");
        // Another start holds the lock; it has not written its pid yet, or its pid is one
        // this process cannot see: either way it owns the file.
        std::fs::write(&path, "").unwrap();
        let other = Flock::lock(File::open(&path).unwrap(), FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| e)
            .unwrap();
        match Pidfile::create(&path) {
            Err(Error::AlreadyRunning { .. }) => {}
            other => panic!("expected AlreadyRunning, got {other:?}"),
        }
        std::fs::write(&path, "4242\n").unwrap();
        match Pidfile::create(&path) {
            Err(Error::AlreadyRunning { pid: 4242, .. }) => {}
            other => panic!("expected AlreadyRunning by 4242, got {other:?}"),
        }
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "4242\n",
            "untouched"
        );
        drop(other);
        let ours = Pidfile::create(&path).unwrap();
        assert_eq!(ours.path(), path);
    }
}
