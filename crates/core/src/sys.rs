//! The few operations that need `unsafe`: forking, signal dispositions, raw descriptors and
//! NVML's C API. Every block says why it is sound; everything else in the crate is safe code.
#![allow(unsafe_code)]

use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use nix::sys::signal::{
    SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal, sigaction, sigprocmask,
};
use nix::unistd::ForkResult;

/// How many threads this process has, from `/proc/self/status`.
pub(crate) fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Threads:")
                    .map(|n| n.trim().parse().unwrap_or(1))
            })
        })
        .unwrap_or(1)
}

/// Forks. The caller must be single-threaded, which the arbiter checks before it ever forks.
pub(crate) fn fork() -> nix::Result<ForkResult> {
    debug_assert_eq!(
        thread_count(),
        1,
        "the arbiter must not fork with threads running"
    );
    // SAFETY: the arbiter is single-threaded (no runtime, no thread pool; checked above in debug
    // builds and by `Arbiter::run` at start), so no lock can be held by a thread that does not
    // exist in the child, and the child may run arbitrary code afterwards.
    unsafe { nix::unistd::fork() }
}

/// Puts every signal the arbiter handles back to its default action and unblocks all signals,
/// so a freshly forked worker starts with a clean slate (its runtime installs its own).
pub(crate) fn reset_signals(signals: &[Signal]) {
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for &signal in signals {
        // SAFETY: installing SIG_DFL runs no code of ours in signal context.
        let _ = unsafe { sigaction(signal, &default) };
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// One flag per signal number, set by the handler, taken by the event loop.
static PENDING: [AtomicBool; 65] = [const { AtomicBool::new(false) }; 65];
/// The write end of the pipe that wakes the event loop's `poll`.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(signal: nix::libc::c_int) {
    let saved = nix::errno::Errno::last_raw();
    if let Some(flag) = PENDING.get(signal as usize) {
        flag.store(true, Ordering::SeqCst);
    }
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let byte = 1u8;
        // SAFETY: write(2) is async-signal-safe; the buffer is a live local byte. A full pipe
        // (EAGAIN on the non-blocking fd) is fine: the loop is already due to wake.
        let _ = unsafe { nix::libc::write(fd, (&byte as *const u8).cast(), 1) };
    }
    nix::errno::Errno::set_raw(saved);
}

/// Installs the arbiter's handlers: each sets a flag and writes a byte to `wake_fd`.
///
/// Deliberately not signal-hook: its registry lives in process memory, which a forked worker
/// inherits. Once the child reset a signal to its default, the inherited registry would still
/// believe its handler installed, and the worker runtime's own registration (tokio goes through
/// that registry) would silently never reach the kernel. Plain `sigaction` leaves no such state.
pub(crate) fn install_handlers(signals: &[Signal], wake_fd: RawFd) -> nix::Result<()> {
    WAKE_FD.store(wake_fd, Ordering::SeqCst);
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART | SaFlags::SA_NOCLDSTOP,
        SigSet::empty(),
    );
    for &signal in signals {
        // SAFETY: `on_signal` only does atomic loads and stores, write(2) and errno save and
        // restore, all async-signal-safe.
        unsafe { sigaction(signal, &action) }?;
    }
    Ok(())
}

/// Whether `signal` arrived since the last call.
pub(crate) fn take_signal(signal: Signal) -> bool {
    PENDING[signal as usize].swap(false, Ordering::SeqCst)
}

/// Makes a worker give memory back: big buffers (a decoded 12-megapixel photo is 36 MB) are
/// mapped and unmapped each time instead of staying in the heap, and the threads share two
/// arenas instead of one each, so a burst of large images does not leave the peak resident.
///
/// glibc raises its mmap threshold to the size of every mapped block it frees, up to 32 MB, after
/// which such buffers are carved from arenas that keep them; setting the threshold disables that.
pub(crate) fn tune_malloc() {
    // SAFETY: mallopt only changes allocator parameters; called in a freshly forked,
    // single-threaded worker before it starts any thread or allocates its working buffers.
    unsafe {
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, 1 << 20);
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 2);
    }
}

/// Borrows a descriptor this process holds open for the duration of one call.
pub(crate) fn borrow_fd(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: callers pass descriptors they just checked are open (inherited listeners), and
    // use the borrow only within the call; `'static` is never stored.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// Takes ownership of an inherited descriptor that nothing else in the process owns.
pub(crate) fn own_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: only called for descriptors handed to this process by its parent (`fd://N`,
    // `LISTEN_FDS`), after checking they are open sockets; no other owner exists.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Removes systemd's socket-activation variables once the sockets are adopted.
pub(crate) fn clear_listen_env() {
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // SAFETY: the arbiter is single-threaded, so nothing reads the environment concurrently.
        unsafe { std::env::remove_var(name) };
    }
}

/// Removes systemd's notification variables once the arbiter has read them, so no worker or
/// program speaks for the arbiter or pings its watchdog.
pub(crate) fn clear_notify_env() {
    for name in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
        // SAFETY: the arbiter is single-threaded, so nothing reads the environment concurrently.
        unsafe { std::env::remove_var(name) };
    }
}

/// Makes a program the arbiter spawns die (SIGKILL) with the arbiter, as its workers do: the
/// child asks for `PR_SET_PDEATHSIG` between fork and exec, then checks that its parent is still
/// the arbiter (it may have died before the request, and would then never send the signal).
pub(crate) fn die_with_parent(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec and only makes two
    // async-signal-safe system calls (prctl, getppid); it neither allocates nor takes a lock
    // (the error is built from a raw errno, without allocating).
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
                .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            Ok(())
        })
    };
}

/// Sets an environment variable in the single-threaded arbiter or a freshly forked child.
pub fn set_env(name: &str, value: &str) {
    // SAFETY: called only while the process is single-threaded (the arbiter, or a worker before
    // it starts any thread), so nothing reads the environment concurrently.
    unsafe { std::env::set_var(name, value) };
}

/// The total memory of a CUDA device, read through NVML (`libnvidia-ml.so.1`).
pub(crate) fn nvml_total_memory(index: u32) -> Result<u64, String> {
    type Init = unsafe extern "C" fn() -> i32;
    type ByIndex = unsafe extern "C" fn(u32, *mut *mut std::ffi::c_void) -> i32;
    #[repr(C)]
    struct MemoryInfo {
        total: u64,
        free: u64,
        used: u64,
    }
    type GetMemory = unsafe extern "C" fn(*mut std::ffi::c_void, *mut MemoryInfo) -> i32;
    type Shutdown = unsafe extern "C" fn() -> i32;

    // SAFETY: loading NVML runs its initialisers, which are designed to be loaded by any process;
    // the symbols are looked up with the exact signatures of NVML's public C API (nvml.h).
    unsafe {
        let lib = libloading::Library::new("libnvidia-ml.so.1").map_err(|e| {
            format!("NVML (libnvidia-ml.so.1, part of the NVIDIA driver) cannot be loaded: {e}")
        })?;
        let sym = |name: &[u8]| {
            lib.get::<*const ()>(name)
                .map(|s| *s)
                .map_err(|e| format!("NVML lacks a symbol: {e}"))
        };
        let init: Init = std::mem::transmute(sym(b"nvmlInit_v2\0")?);
        let by_index: ByIndex = std::mem::transmute(sym(b"nvmlDeviceGetHandleByIndex_v2\0")?);
        let get_memory: GetMemory = std::mem::transmute(sym(b"nvmlDeviceGetMemoryInfo\0")?);
        let shutdown: Shutdown = std::mem::transmute(sym(b"nvmlShutdown\0")?);
        let code = init();
        if code != 0 {
            return Err(format!(
                "NVML failed to initialise (error {code}): is the NVIDIA driver loaded?"
            ));
        }
        let mut device = std::ptr::null_mut();
        let code = by_index(index, &mut device);
        if code != 0 {
            shutdown();
            return Err(format!("NVML has no device cuda:{index} (error {code})"));
        }
        let mut info = MemoryInfo {
            total: 0,
            free: 0,
            used: 0,
        };
        let code = get_memory(device, &mut info);
        shutdown();
        if code != 0 {
            return Err(format!(
                "NVML could not read the memory of cuda:{index} (error {code})"
            ));
        }
        Ok(info.total)
    }
}

/// Which side of [`daemonize`] the caller is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    /// The original process: the daemon is on its way.
    Parent,
    /// The daemon: a new session, no controlling terminal, standard streams on /dev/null.
    Child,
}

/// Detaches from the terminal the classic way: fork, setsid, fork again.
pub fn daemonize() -> std::io::Result<Daemon> {
    if let ForkResult::Parent { child } = fork()? {
        // The intermediate child exits at once; reap it so it is no zombie.
        let _ = nix::sys::wait::waitpid(child, None);
        return Ok(Daemon::Parent);
    }
    nix::unistd::setsid()?;
    if let ForkResult::Parent { .. } = fork()? {
        std::process::exit(0);
    }
    // Nothing may keep the caller's terminal or pipes open: logs go to the log file.
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    nix::unistd::dup2_stdin(&null)?;
    nix::unistd::dup2_stdout(&null)?;
    nix::unistd::dup2_stderr(&null)?;
    Ok(Daemon::Child)
}
