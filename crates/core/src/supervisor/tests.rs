//! The supervisor's transitions against a fake process table and fake scoreboard slots: no
//! fork, no sleep; the clock is moved by hand.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::Path;

use arbiter_scoreboard::SlotState;

use super::*;
use crate::phase::Seen;

const CONFIG: &str = r#"
[server]
workers = 2
boot_timeout = "60s"
heartbeat_timeout = "10s"
graceful_timeout = "30s"
"#;

fn config(text: &str) -> Config {
    Config::parse(text, Path::new("/etc/arbiter/arbiter.toml")).expect("a valid config")
}

/// Processes that are only rows in a table: spawning gives the next pid, signals are recorded.
#[derive(Debug, Default)]
struct FakeProcesses {
    spawned: Vec<(i32, usize, u64)>,
    signals: Vec<(i32, Signal)>,
}

impl Processes for FakeProcesses {
    fn spawn(
        &mut self,
        slot: usize,
        generation: u64,
        _config: &Config,
        _max_requests: Option<u64>,
    ) -> Result<i32, String> {
        let pid = 1000 + self.spawned.len() as i32;
        self.spawned.push((pid, slot, generation));
        Ok(pid)
    }

    fn kill(&mut self, pid: i32, signal: Signal) {
        self.signals.push((pid, signal));
    }

    fn reap(&mut self) -> Option<(i32, Exit)> {
        None
    }
}

/// What a worker wrote into its slot.
#[derive(Debug, Clone)]
struct FakeSlot {
    state: SlotState,
    heartbeat_age: Duration,
    served: u64,
    boot_error: Option<String>,
}

impl Default for FakeSlot {
    fn default() -> FakeSlot {
        FakeSlot {
            state: SlotState::Booting,
            heartbeat_age: Duration::ZERO,
            served: 0,
            boot_error: None,
        }
    }
}

#[derive(Debug, Default)]
struct FakeSlots {
    slots: RefCell<HashMap<usize, FakeSlot>>,
    restarts: Cell<u64>,
}

impl FakeSlots {
    fn get(&self, slot: usize) -> FakeSlot {
        self.slots.borrow().get(&slot).cloned().unwrap_or_default()
    }
}

impl Slots for FakeSlots {
    fn seen(&self, slot: usize) -> Seen {
        let s = self.get(slot);
        Seen {
            state: s.state,
            heartbeat_age: s.heartbeat_age,
        }
    }

    fn requests_served(&self, slot: usize) -> u64 {
        self.get(slot).served
    }

    fn boot_error(&self, slot: usize) -> Option<String> {
        self.get(slot).boot_error
    }

    fn free(&self, slot: usize) {
        self.slots.borrow_mut().remove(&slot);
    }

    fn count_restart(&self) {
        self.restarts.set(self.restarts.get() + 1);
    }
}

/// The supervisor, its fakes, a hand-moved clock and every action it asked for.
struct World {
    supervisor: Supervisor,
    processes: FakeProcesses,
    slots: FakeSlots,
    now: Instant,
    programs_stopped: bool,
    actions: Vec<Action>,
}

impl World {
    fn new(text: &str) -> World {
        World {
            supervisor: Supervisor::new(config(text), 42),
            processes: FakeProcesses::default(),
            slots: FakeSlots::default(),
            now: Instant::now(),
            programs_stopped: true,
            actions: Vec::new(),
        }
    }

    /// Started, and every worker ready.
    fn running(text: &str) -> World {
        let mut world = World::new(text);
        world.tick();
        for pid in world.pids() {
            world.ready(pid);
        }
        world.tick();
        world
    }

    fn tick(&mut self) {
        let actions = self.supervisor.tick(
            self.now,
            &mut self.processes,
            &self.slots,
            self.programs_stopped,
        );
        self.actions.extend(actions);
    }

    fn after(&mut self, duration: Duration) {
        self.now += duration;
        self.tick();
    }

    fn slot_of(&self, pid: i32) -> usize {
        self.supervisor.workers()[&pid].slot
    }

    fn write(&self, pid: i32, change: impl FnOnce(&mut FakeSlot)) {
        let slot = self.slot_of(pid);
        change(self.slots.slots.borrow_mut().entry(slot).or_default());
    }

    fn ready(&mut self, pid: i32) {
        self.write(pid, |s| s.state = SlotState::Ready);
    }

    fn exit(&mut self, pid: i32, exit: Exit) {
        let actions = self
            .supervisor
            .on_exit(self.now, pid, exit, &mut self.processes, &self.slots)
            .expect("a worker");
        self.actions.extend(actions);
    }

    fn phase(&self, pid: i32) -> Phase {
        self.supervisor.workers()[&pid].phase
    }

    fn pids(&self) -> Vec<i32> {
        self.supervisor.workers().keys().copied().collect()
    }

    /// Booting or ready workers of `generation`.
    fn live(&self, generation: u64) -> Vec<i32> {
        self.supervisor
            .workers()
            .iter()
            .filter(|(_, w)| w.generation == generation && w.phase.is_live())
            .map(|(&pid, _)| pid)
            .collect()
    }

    fn signals_to(&self, pid: i32) -> Vec<Signal> {
        self.processes
            .signals
            .iter()
            .filter(|(p, _)| *p == pid)
            .map(|(_, s)| *s)
            .collect()
    }

    fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }
}

#[test]
fn boot_forks_the_workers_into_free_slots_then_ready_starts_the_programs() {
    let mut world = World::new(CONFIG);
    world.tick();
    assert_eq!(
        world.processes.spawned,
        vec![(1000, 0, 1), (1001, 1, 1)],
        "two workers of generation 1 in slots 0 and 1"
    );
    for pid in world.pids() {
        assert!(matches!(world.phase(pid), Phase::Booting { .. }));
    }
    world.ready(1000);
    world.after(Duration::from_millis(100));
    assert_eq!(world.phase(1000), Phase::Ready);
    assert!(
        world.take_actions().is_empty(),
        "programs wait for every worker"
    );
    world.ready(1001);
    world.after(Duration::from_millis(100));
    assert_eq!(world.take_actions(), vec![Action::StartPrograms]);
    world.after(Duration::from_millis(100));
    assert!(world.take_actions().is_empty(), "programs start once");
    assert_eq!(world.processes.spawned.len(), 2, "nothing more to start");
    assert!(world.processes.signals.is_empty());
}

#[test]
fn a_stable_worker_that_crashes_is_replaced_at_once() {
    let mut world = World::running(CONFIG);
    world.write(1000, |s| s.served = 50);
    world.exit(1000, Exit::Signal(Signal::SIGSEGV));
    world.tick();
    assert_eq!(world.processes.spawned.last(), Some(&(1002, 0, 1)));
    assert_eq!(world.supervisor.restarts(0), 1);
    assert_eq!(world.slots.restarts.get(), 1);
}

#[test]
fn a_crash_loop_backs_off_and_stable_crashes_do_not_feed_it() {
    let mut world = World::running("[server]\nworkers = 1\n");
    let crash = |world: &mut World, served: u64| {
        let pid = world.pids()[0];
        world.write(pid, |s| s.served = served);
        world.exit(pid, Exit::Code(1));
        world.tick();
    };
    // Two crashes before serving: still replaced at once.
    crash(&mut world, 0);
    let pid = world.pids()[0];
    world.ready(pid);
    world.tick();
    crash(&mut world, 0);
    assert_eq!(world.processes.spawned.len(), 3);
    // One that served does not count towards the loop.
    let pid = world.pids()[0];
    world.ready(pid);
    world.tick();
    crash(&mut world, 7);
    assert_eq!(world.processes.spawned.len(), 4, "replaced at once");
    // The third crash of the loop delays the next replacement.
    let pid = world.pids()[0];
    world.ready(pid);
    world.tick();
    crash(&mut world, 0);
    assert!(world.pids().is_empty(), "backing off");
    world.after(Duration::from_millis(200));
    assert!(world.pids().is_empty(), "still backing off");
    world.after(Duration::from_millis(60));
    assert_eq!(world.pids().len(), 1, "replaced after 250 ms");
    assert_eq!(world.supervisor.restarts(0), 4);
}

#[test]
fn a_hung_worker_is_killed_and_replaced() {
    let mut world = World::running(CONFIG);
    world.write(1001, |s| s.heartbeat_age = Duration::from_secs(9));
    world.tick();
    assert_eq!(world.phase(1001), Phase::Ready);
    world.write(1001, |s| s.heartbeat_age = Duration::from_secs(11));
    world.tick();
    assert_eq!(world.signals_to(1001), vec![Signal::SIGKILL]);
    assert_eq!(
        world.phase(1001),
        Phase::Killed {
            reason: KillReason::Hung
        }
    );
    assert_eq!(
        world.processes.spawned.last(),
        Some(&(1002, 2, 1)),
        "replaced at once, beside the killed one still holding its slot"
    );
    world.exit(1001, Exit::Signal(Signal::SIGKILL));
    assert_eq!(world.supervisor.restarts(1), 1);
    world.tick();
    assert_eq!(world.processes.spawned.len(), 3, "replaced once");
}

#[test]
fn a_worker_past_its_boot_deadline_is_killed_and_counted_as_a_failed_boot() {
    let mut world = World::new("[server]\nworkers = 1\nboot_timeout = \"60s\"\n");
    world.tick();
    world.after(Duration::from_secs(59));
    assert!(world.processes.signals.is_empty());
    world.after(Duration::from_secs(2));
    assert_eq!(world.signals_to(1000), vec![Signal::SIGKILL]);
    assert_eq!(
        world.phase(1000),
        Phase::Killed {
            reason: KillReason::BootTimeout
        }
    );
    world.exit(1000, Exit::Signal(Signal::SIGKILL));
    world.tick();
    assert_eq!(world.pids(), vec![1001], "one failure: tried again");
    assert_eq!(
        world.supervisor.restarts(0),
        0,
        "a failed boot is not a restart"
    );
}

#[test]
fn three_failed_boots_in_a_row_stop_the_arbiter_with_the_error() {
    let mut world = World::new("[server]\nworkers = 1\n");
    world.programs_stopped = false;
    world.tick();
    for attempt in 0..3 {
        let pid = world.pids()[0];
        world.write(pid, |s| s.boot_error = Some("model file not found".into()));
        world.exit(pid, Exit::Code(arbiter_scoreboard::EXIT_BOOT_FAILURE));
        assert_eq!(world.supervisor.fatal().is_some(), attempt == 2);
        world.tick();
    }
    assert_eq!(world.supervisor.fatal(), Some("model file not found"));
    assert!(world.supervisor.stopping());
    assert_eq!(
        world.take_actions(),
        vec![Action::Stopping, Action::CloseListeners]
    );
    assert!(world.supervisor.finished(), "no worker left");
    assert_eq!(world.processes.spawned.len(), 3);
}

#[test]
fn a_reload_rolls_one_new_worker_at_a_time_and_drains_the_old() {
    let mut world = World::running(CONFIG);
    world.take_actions();
    assert_eq!(world.supervisor.request_reload(), ReloadRequest::Start);
    world.supervisor.begin_reload(config(CONFIG));
    assert_eq!(world.supervisor.phase_name(), "reloading");
    let mut most_live = 0;
    for _ in 0..10 {
        world.after(Duration::from_millis(100));
        most_live = most_live.max(world.live(1).len() + world.live(2).len());
        for pid in world.live(2) {
            world.ready(pid);
        }
    }
    assert_eq!(
        world.live(1),
        Vec::<i32>::new(),
        "the old generation retired"
    );
    assert_eq!(world.live(2).len(), 2);
    assert_eq!(most_live, 3, "at most N + 1 workers at once");
    for old in [1000, 1001] {
        assert_eq!(world.signals_to(old), vec![Signal::SIGTERM]);
        assert!(matches!(world.phase(old), Phase::Draining { .. }));
    }
    assert_eq!(
        world.take_actions(),
        vec![Action::ReloadEnded {
            outcome: ReloadOutcome::Done("reloaded: generation 2 with 2 workers".into()),
            again: false
        }]
    );
    world.exit(1000, Exit::Code(0));
    world.exit(1001, Exit::Code(0));
    assert_eq!(world.slots.restarts.get(), 0, "retiring is not restarting");
    assert_eq!(world.supervisor.phase_name(), "running");
}

#[test]
fn a_reload_whose_workers_cannot_boot_is_aborted_and_the_old_generation_stays() {
    let mut world = World::running(CONFIG);
    world.take_actions();
    world.supervisor.request_reload();
    world.supervisor.begin_reload(config(CONFIG));
    assert_eq!(
        world.supervisor.request_reload(),
        ReloadRequest::Queued,
        "a HUP while rolling waits"
    );
    for _ in 0..3 {
        world.tick();
        let new = world.live(2);
        assert_eq!(new.len(), 1, "one new worker boots at a time");
        world.exit(new[0], Exit::Code(arbiter_scoreboard::EXIT_BOOT_FAILURE));
    }
    let actions = world.take_actions();
    assert!(
        matches!(&actions[..], [Action::ReloadEnded { outcome: ReloadOutcome::Aborted(why), again: true }]
            if why.contains("failed to boot 3 times")),
        "{actions:?}"
    );
    assert_eq!(world.supervisor.current().number, 1);
    assert!(
        world.supervisor.fatal().is_none(),
        "the arbiter keeps running"
    );
    world.tick();
    assert_eq!(world.live(1), vec![1000, 1001]);
    assert!(
        world.processes.signals.is_empty(),
        "the old workers were never touched"
    );
}

#[test]
fn a_graceful_stop_waits_for_the_programs_then_drains_and_kills_at_the_deadline() {
    let mut world = World::running(CONFIG);
    world.take_actions();
    world.programs_stopped = false;
    assert_eq!(world.supervisor.begin_stop(false), vec![Action::Stopping]);
    assert_eq!(world.supervisor.request_reload(), ReloadRequest::Refused);
    world.tick();
    assert!(
        world.processes.signals.is_empty(),
        "the programs stop first"
    );
    world.programs_stopped = true;
    world.tick();
    assert_eq!(world.take_actions(), vec![Action::CloseListeners]);
    for pid in [1000, 1001] {
        assert_eq!(world.signals_to(pid), vec![Signal::SIGTERM]);
        assert!(matches!(world.phase(pid), Phase::Draining { .. }));
    }
    world.exit(1000, Exit::Code(0));
    world.after(Duration::from_secs(29));
    assert_eq!(world.signals_to(1001), vec![Signal::SIGTERM]);
    world.after(Duration::from_secs(2));
    let mut signals = world.signals_to(1001);
    signals.dedup();
    assert_eq!(signals, vec![Signal::SIGTERM, Signal::SIGKILL]);
    assert!(!world.supervisor.finished());
    world.exit(1001, Exit::Signal(Signal::SIGKILL));
    assert!(world.supervisor.finished());
    assert_eq!(
        world.processes.spawned.len(),
        2,
        "nothing replaced while stopping"
    );
    assert_eq!(world.slots.restarts.get(), 0);
}

#[test]
fn a_fast_stop_tells_the_workers_at_once_and_kills_after_two_seconds() {
    let mut world = World::running(CONFIG);
    world.take_actions();
    world.programs_stopped = false;
    assert_eq!(world.supervisor.begin_stop(false), vec![Action::Stopping]);
    assert_eq!(
        world.supervisor.begin_stop(true),
        vec![Action::Stopping],
        "a graceful stop turns fast"
    );
    assert!(
        world.supervisor.begin_stop(false).is_empty(),
        "and stays fast"
    );
    world.tick();
    for pid in [1000, 1001] {
        assert_eq!(world.signals_to(pid), vec![Signal::SIGQUIT]);
    }
    world.after(Duration::from_millis(2100));
    for pid in [1000, 1001] {
        let mut signals = world.signals_to(pid);
        signals.dedup();
        assert_eq!(signals, vec![Signal::SIGQUIT, Signal::SIGKILL]);
    }
}

#[test]
fn ttou_retires_the_newest_worker_and_ttin_adds_one() {
    let mut world = World::running(CONFIG);
    let target = world.supervisor.scaled_target(-1).unwrap();
    world.supervisor.set_target(target);
    world.tick();
    assert_eq!(world.signals_to(1001), vec![Signal::SIGTERM]);
    assert!(world.supervisor.scaled_target(-1).is_err(), "never below 1");
    world
        .supervisor
        .set_target(world.supervisor.scaled_target(1).unwrap());
    world.tick();
    assert_eq!(world.processes.spawned.last(), Some(&(1002, 2, 1)));
}

#[test]
fn a_worker_recycling_itself_is_replaced_at_once_and_retires_without_a_restart() {
    let mut world = World::running(CONFIG);
    world.write(1000, |s| s.state = SlotState::Draining);
    world.tick();
    assert!(matches!(world.phase(1000), Phase::Draining { .. }));
    assert_eq!(world.processes.spawned.last(), Some(&(1002, 2, 1)));
    assert!(world.processes.signals.is_empty(), "it stops on its own");
    world.exit(1000, Exit::Code(0));
    assert_eq!(world.slots.restarts.get(), 0);
}
