//! Dropping root in a freshly forked worker: `server.user` / `server.group`, and the refusal to
//! serve as root unless `server.allow_root` says so.

use arbiter_config::Config;
use nix::unistd::{Group, Uid, User, setgid, setgroups, setuid};

use crate::Error;

/// Refuses, before anything starts, a config whose workers would run as root.
pub(crate) fn check_start(config: &Config) -> Result<(), Error> {
    if !Uid::effective().is_root() || config.server.user.is_some() {
        return Ok(());
    }
    if config.server.allow_root {
        tracing::warn!(
            "workers will run as root (server.allow_root = true); set server.user to drop privileges"
        );
        return Ok(());
    }
    Err(Error::Privileges(
        "the arbiter runs as root and would run its workers as root: set server.user (like \"nobody\") to drop privileges, or server.allow_root = true".into(),
    ))
}

/// Creates the folders workers write to (every sharing model's prepared-weights cache) and, when
/// workers switch user, hands them to that user: a worker that dropped root could not create them
/// itself. Models that share a folder prepare it once.
pub(crate) fn prepare_dirs(config: &Config) -> Result<(), Error> {
    let mut done: Vec<&std::path::Path> = Vec::new();
    for model in config.models.iter().filter(|m| m.share_weights) {
        let dir = model.cache_dir.as_path();
        if done.contains(&dir) {
            continue;
        }
        done.push(dir);
        prepare_dir(config, dir)?;
    }
    Ok(())
}

fn prepare_dir(config: &Config, dir: &std::path::Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| {
        Error::Privileges(format!(
            "cannot create model.cache_dir {}: {e}",
            dir.display()
        ))
    })?;
    if let (Some(name), true) = (&config.server.user, Uid::effective().is_root()) {
        let Ok(Some(user)) = User::from_name(name) else {
            return Ok(());
        };
        let gid = config
            .server
            .group
            .as_ref()
            .and_then(|g| Group::from_name(g).ok().flatten())
            .map_or(user.gid, |g| g.gid);
        // The folder and what earlier runs left in it (under another user, perhaps root).
        chown_tree(dir, user.uid, gid).map_err(|e| {
            Error::Privileges(format!(
                "cannot give model.cache_dir {} to {name}: {e}",
                dir.display()
            ))
        })?;
    }
    Ok(())
}

fn chown_tree(
    path: &std::path::Path,
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
) -> nix::Result<()> {
    nix::unistd::chown(path, Some(uid), Some(gid))?;
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path)
            .map_err(|e| nix::Error::from_raw(e.raw_os_error().unwrap_or(0)))?
            .flatten()
        {
            chown_tree(&entry.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Switches the calling process to the configured user and group; refuses to go on as root
/// unless allowed.
pub(crate) fn drop_to(config: &Config) -> Result<(), Error> {
    let server = &config.server;
    let fail = |what: String| Error::Privileges(what);
    if let Some(name) = &server.user {
        let user = User::from_name(name)
            .map_err(|e| fail(format!("cannot look up user `{name}`: {e}")))?
            .ok_or_else(|| fail(format!("server.user: no user `{name}` on this system")))?;
        let gid = match &server.group {
            Some(group) => {
                Group::from_name(group)
                    .map_err(|e| fail(format!("cannot look up group `{group}`: {e}")))?
                    .ok_or_else(|| {
                        fail(format!("server.group: no group `{group}` on this system"))
                    })?
                    .gid
            }
            None => user.gid,
        };
        if Uid::effective() != user.uid {
            if !Uid::effective().is_root() {
                return Err(fail(format!(
                    "server.user is `{name}` but the arbiter runs as uid {} and cannot switch users (start it as root, or remove server.user)",
                    Uid::effective()
                )));
            }
            setgroups(&[gid]).map_err(|e| fail(format!("setgroups: {e}")))?;
            setgid(gid).map_err(|e| fail(format!("setgid({gid}): {e}")))?;
            setuid(user.uid).map_err(|e| fail(format!("setuid({}): {e}", user.uid)))?;
            // Libraries that write under $HOME (ONNX Runtime's device id) must not aim at root's.
            crate::sys::set_env("HOME", &user.dir.to_string_lossy());
            crate::sys::set_env("USER", name);
        }
    }
    if Uid::effective().is_root() && !server.allow_root {
        return Err(fail(
            "workers would run as root: set server.user (and server.group) to an unprivileged account, or server.allow_root = true".into(),
        ));
    }
    Ok(())
}
