//! The listening sockets: bound once by the arbiter, before any worker is forked, and
//! inherited by every worker. Binding here, not in the workers, is what lets a worker die
//! without a single connection being refused: the kernel keeps queueing on the socket.
//!
//! Sockets can also be inherited: `fd://N` in `bind`, or systemd's socket activation
//! (`LISTEN_FDS`, `LISTEN_FDNAMES`). Each inherited socket is adopted once, matched to the bind
//! that names it (`fd://N` by number, an address by the address it is bound to), and marked
//! close-on-exec: workers get it by `fork`, `[[program]]` children must not get it by `exec`.

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
    // Inherited descriptors come without close-on-exec (that is how they were passed); a
    // program the arbiter execs must not keep the service's socket open.
    nix::fcntl::fcntl(
        crate::sys::borrow_fd(fd),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )?;
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

/// A socket systemd passed (`LISTEN_FDS`), with its name from `LISTEN_FDNAMES`.
#[derive(Debug)]
pub struct Inherited {
    /// Its descriptor number (3, 4, ...).
    pub fd: RawFd,
    /// Its name (`FileDescriptorName=` in the socket unit; systemd's default is the unit's name).
    pub name: Option<String>,
    /// The adopted socket.
    pub listener: Listener,
}

/// systemd socket activation: the sockets passed as `LISTEN_FDS` when `LISTEN_PID` is us.
pub fn from_systemd() -> std::io::Result<Vec<Inherited>> {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<i32>().ok())
        .unwrap_or(0);
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|n| n.split(':').map(str::to_owned).collect())
        .unwrap_or_default();
    if !ours || count <= 0 {
        return Ok(Vec::new());
    }
    // Read once: removing them keeps a worker or a restarted arbiter from adopting twice.
    crate::sys::clear_listen_env();
    (3..3 + count)
        .map(|fd| {
            Ok(Inherited {
                fd,
                name: names
                    .get((fd - 3) as usize)
                    .filter(|n| !n.is_empty())
                    .cloned(),
                listener: adopt_fd(fd)?,
            })
        })
        .collect()
}

/// Whether an inherited socket is the one `bind` names: `fd://N` by number, an address by the
/// address the socket is bound to.
fn matches(bind: &Bind, inherited: &Inherited) -> bool {
    match (bind, &inherited.listener) {
        (Bind::Fd(n), _) => *n == inherited.fd,
        (Bind::Tcp(addr), Listener::Tcp(l)) => l.local_addr().is_ok_and(|a| a == *addr),
        (Bind::Unix(path), Listener::Unix { path: Some(p), .. }) => p == path,
        _ => false,
    }
}

/// Where a listener came from, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Bound by the arbiter, or adopted from `fd://N` outside socket activation.
    Bound,
    /// Passed by systemd, with its name if it has one.
    Activated(Option<String>),
}

/// Every configured bind, taking over `inherited` sockets: a bind that names one (`fd://N`, or
/// the address it is bound to) adopts it instead of binding again; the inherited sockets no
/// bind names are served too, under `fd://N`. Each socket is opened once.
pub fn open_all(
    binds: &[Bind],
    backlog: i32,
    mut inherited: Vec<Inherited>,
) -> Result<Vec<(Bind, Listener, Origin)>, Error> {
    let mut open = Vec::new();
    for bind in binds {
        match inherited.iter().position(|i| matches(bind, i)) {
            Some(i) => {
                let i = inherited.remove(i);
                open.push((bind.clone(), i.listener, Origin::Activated(i.name)));
            }
            None => open.push((bind.clone(), self::bind(bind, backlog)?, Origin::Bound)),
        }
    }
    for i in inherited {
        open.push((Bind::Fd(i.fd), i.listener, Origin::Activated(i.name)));
    }
    Ok(open)
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

#[cfg(test)]
mod tests {
    use super::*;
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};

    /// A listening socket on a free loopback port, as a descriptor without close-on-exec, the
    /// way a parent passes it.
    fn inheritable_listener() -> (RawFd, std::net::SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let fd = OwnedFd::from(listener);
        fcntl(&fd, FcntlArg::F_SETFD(FdFlag::empty())).unwrap();
        (std::os::fd::IntoRawFd::into_raw_fd(fd), addr)
    }

    fn cloexec(fd: RawFd) -> bool {
        let flags = fcntl(crate::sys::borrow_fd(fd), FcntlArg::F_GETFD).unwrap();
        FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC)
    }

    #[test]
    fn an_adopted_socket_is_closed_on_exec() {
        let (fd, _) = inheritable_listener();
        assert!(!cloexec(fd));
        let listener = adopt_fd(fd).unwrap();
        assert!(
            cloexec(listener.fd()),
            "a program the arbiter execs would inherit it"
        );
    }

    #[test]
    fn an_inherited_socket_is_adopted_once_by_the_bind_that_names_it() {
        let (fd, _) = inheritable_listener();
        let (other_fd, other_addr) = inheritable_listener();
        let inherited = vec![
            Inherited {
                fd,
                name: Some("http".into()),
                listener: adopt_fd(fd).unwrap(),
            },
            Inherited {
                fd: other_fd,
                name: None,
                listener: adopt_fd(other_fd).unwrap(),
            },
        ];
        // fd://N names the first by number, the second's address names it by address.
        let binds = [Bind::Fd(fd), Bind::Tcp(other_addr)];
        let open = open_all(&binds, 16, inherited).unwrap();
        assert_eq!(open.len(), 2, "{open:?}");
        assert_eq!(open[0].0, Bind::Fd(fd));
        assert_eq!(open[0].1.fd(), fd);
        assert_eq!(open[0].2, Origin::Activated(Some("http".into())));
        assert_eq!(open[1].1.fd(), other_fd, "adopted, not bound again");
        assert_eq!(open[1].1.describe(), other_addr.to_string());
    }

    #[test]
    fn inherited_sockets_no_bind_names_are_served_too() {
        let (fd, _) = inheritable_listener();
        let inherited = vec![Inherited {
            fd,
            name: None,
            listener: adopt_fd(fd).unwrap(),
        }];
        let free = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let open = open_all(&[Bind::Tcp(free)], 16, inherited).unwrap();
        assert_eq!(open.len(), 2);
        assert_eq!(open[0].2, Origin::Bound);
        assert_eq!((open[1].0.clone(), open[1].1.fd()), (Bind::Fd(fd), fd));
    }
}
