//! The listening sockets: bound once by the arbiter, before any worker is forked, and
//! inherited by every worker. Binding here, not in the workers, is what lets a worker die
//! without a single connection being refused: the kernel keeps queueing on the socket.

use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use arbiter_config::Bind;
use nix::sys::socket::{
    self, AddressFamily, Backlog, SockFlag, SockType, SockaddrLike, SockaddrStorage, sockopt,
};

use crate::Error;

/// A bound, listening socket.
#[derive(Debug)]
pub enum Listener {
    /// TCP, IPv4 or IPv6.
    Tcp(TcpListener),
    /// A unix stream socket; `owned` is true when the arbiter created the file and removes it.
    Unix {
        listener: UnixListener,
        path: Option<PathBuf>,
        owned: bool,
    },
}

impl Listener {
    /// The socket's descriptor.
    pub fn fd(&self) -> RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix { listener, .. } => listener.as_raw_fd(),
        }
    }

    /// A second handle to the same socket, for a worker.
    pub fn try_clone(&self) -> std::io::Result<Listener> {
        Ok(match self {
            Listener::Tcp(l) => Listener::Tcp(l.try_clone()?),
            Listener::Unix { listener, path, .. } => Listener::Unix {
                listener: listener.try_clone()?,
                path: path.clone(),
                owned: false,
            },
        })
    }

    /// How `arbiter status` shows it.
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "tcp:?".into()),
            Listener::Unix { path: Some(p), .. } => format!("unix:{}", p.display()),
            Listener::Unix { path: None, .. } => "unix:(unnamed)".into(),
        }
    }

    /// Removes the socket file of a unix listener this arbiter created.
    pub fn cleanup(&self) {
        if let Listener::Unix {
            path: Some(path),
            owned: true,
            ..
        } = self
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Binds one configured address.
pub fn bind(bind: &Bind, backlog: i32) -> Result<Listener, Error> {
    let fail = |source: std::io::Error| Error::Bind {
        address: bind.to_string(),
        source,
    };
    match bind {
        Bind::Tcp(addr) => {
            let family = if addr.is_ipv4() {
                AddressFamily::Inet
            } else {
                AddressFamily::Inet6
            };
            let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)
                .map_err(|e| fail(e.into()))?;
            socket::setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(|e| fail(e.into()))?;
            if addr.is_ipv6() {
                socket::setsockopt(&fd, sockopt::Ipv6V6Only, &true).map_err(|e| fail(e.into()))?;
            }
            let sockaddr = SockaddrStorage::from(*addr);
            socket::bind(fd.as_raw_fd(), &sockaddr).map_err(|e| fail(e.into()))?;
            socket::listen(&fd, Backlog::new(backlog).unwrap_or(Backlog::MAXCONN))
                .map_err(|e| fail(e.into()))?;
            Ok(Listener::Tcp(TcpListener::from(fd)))
        }
        Bind::Unix(path) => {
            remove_stale_socket(path).map_err(fail)?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(fail)?;
            }
            let listener = UnixListener::bind(path).map_err(fail)?;
            // A reverse proxy running as another user (nginx's workers) must be able to connect.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(fail)?;
            let fd = OwnedFd::from(listener);
            socket::listen(&fd, Backlog::new(backlog).unwrap_or(Backlog::MAXCONN))
                .map_err(|e| fail(e.into()))?;
            Ok(Listener::Unix {
                listener: UnixListener::from(fd),
                path: Some(path.clone()),
                owned: true,
            })
        }
        Bind::Fd(fd) => adopt_fd(*fd).map_err(fail),
    }
}

/// Takes over a listening socket this process inherited (`fd://N`, systemd's `LISTEN_FDS`).
pub fn adopt_fd(fd: RawFd) -> std::io::Result<Listener> {
    let accepting = socket::getsockopt(&crate::sys::borrow_fd(fd), sockopt::AcceptConn)
        .map_err(|e| std::io::Error::other(format!("descriptor {fd} is not a socket: {e}")))?;
    if !accepting {
        return Err(std::io::Error::other(format!(
            "descriptor {fd} is a socket but not listening"
        )));
    }
    let local: SockaddrStorage = socket::getsockname(fd)?;
    // The descriptor was checked to be an open listening socket; nothing else in this
    // process owns it (it was handed to us by our parent).
    let owned = crate::sys::own_fd(fd);
    Ok(match local.family() {
        Some(AddressFamily::Unix) => {
            let path = local
                .as_unix_addr()
                .and_then(|u| u.path())
                .map(Path::to_path_buf);
            Listener::Unix {
                listener: UnixListener::from(owned),
                path,
                owned: false,
            }
        }
        _ => Listener::Tcp(TcpListener::from(owned)),
    })
}

/// systemd socket activation: the sockets passed as `LISTEN_FDS` when `LISTEN_PID` is us.
pub fn from_systemd() -> std::io::Result<Vec<Listener>> {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<i32>().ok())
        .unwrap_or(0);
    if !ours || count <= 0 {
        return Ok(Vec::new());
    }
    // Read once: removing them keeps a worker or a restarted arbiter from adopting twice.
    crate::sys::clear_listen_env();
    (3..3 + count).map(adopt_fd).collect()
}

/// A unix socket file left by a previous run that nobody listens on any more is removed;
/// one that still answers is in use.
fn remove_stale_socket(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(meta) if !meta.file_type().is_socket() => Err(std::io::Error::other(format!(
            "{} exists and is not a socket",
            path.display()
        ))),
        Ok(_) => match UnixStream::connect(path) {
            Ok(_) => Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another process is listening on it",
            )),
            Err(_) => std::fs::remove_file(path),
        },
    }
}
