//! The pidfile: written atomically (a temporary file renamed into place), removed at exit.
//! A pidfile naming a dead process is stale and does not block a start; a live one does.

use std::io::Write;
use std::path::{Path, PathBuf};

use nix::sys::signal::kill;
use nix::unistd::Pid;

use crate::Error;

/// A pidfile this process wrote; removed on drop if it still names this process.
#[derive(Debug)]
pub struct Pidfile {
    path: PathBuf,
    pid: u32,
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
    /// Claims the pidfile for this process.
    pub fn create(path: &Path) -> Result<Pidfile, Error> {
        let pid = std::process::id();
        if let Some(other) = read_live(path).filter(|p| *p != pid) {
            return Err(Error::AlreadyRunning {
                pid: other,
                pidfile: path.to_path_buf(),
            });
        }
        let io = |source| Error::Pidfile {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension(format!("tmp.{pid}"));
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        writeln!(file, "{pid}")
            .and_then(|_| file.sync_all())
            .map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        Ok(Pidfile {
            path: path.to_path_buf(),
            pid,
        })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        // Only the arbiter removes it: a forked worker carries a copy of this value too.
        if std::process::id() != self.pid {
            return;
        }
        let ours = std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            == Some(self.pid);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_pidfile_is_replaced_and_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/arbiter.pid");
        // A pid that cannot be alive: above the kernel's pid_max.
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "99999999\n").unwrap();
        let pidfile = Pidfile::create(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().trim(),
            std::process::id().to_string()
        );
        drop(pidfile);
        assert!(!path.exists(), "removed at exit");

        // A live process (pid 1 always exists) blocks the start.
        std::fs::write(&path, "1\n").unwrap();
        match Pidfile::create(&path) {
            Err(Error::AlreadyRunning { pid: 1, .. }) => {}
            other => panic!("expected AlreadyRunning, got {other:?}"),
        }
    }
}
