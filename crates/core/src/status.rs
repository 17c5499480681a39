//! What `arbiter status` shows, gathered from the supervisor, the scoreboard and `/proc`.
//!
//! Each process's memory is read once per status from `/proc/PID/smaps_rollup`: its private
//! and shared bytes for the worker's row, its PSS for the totals and the budget (PSS counts the
//! weights the workers share once).

use arbiter_scoreboard::Scoreboard;

use crate::budget;
use crate::control::{ModelStatus, Status, WorkerStatus};
use crate::programs::ProgramStatus;
use crate::supervisor::Supervisor;

/// A process's memory, split as `arbiter status` shows it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Memory {
    /// Private_Clean + Private_Dirty, in bytes.
    pub(crate) private: u64,
    /// Shared_Clean + Shared_Dirty, in bytes.
    pub(crate) shared: u64,
    /// Pss, in bytes.
    pub(crate) pss: u64,
}

impl Memory {
    /// `pid`'s memory, if its `/proc/PID/smaps_rollup` can be read.
    pub(crate) fn of(pid: i32) -> Option<Memory> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
        Some(Memory::parse(&text))
    }

    /// Reads the fields of `smaps_rollup` text (values in kB).
    fn parse(text: &str) -> Memory {
        let mut m = Memory::default();
        for line in text.lines() {
            let mut parts = line.split_whitespace();
            let (Some(key), Some(kb)) = (
                parts.next(),
                parts.next().and_then(|v| v.parse::<u64>().ok()),
            ) else {
                continue;
            };
            match key {
                "Private_Clean:" | "Private_Dirty:" => m.private += kb * 1024,
                "Shared_Clean:" | "Shared_Dirty:" => m.shared += kb * 1024,
                "Pss:" => m.pss = kb * 1024,
                _ => {}
            }
        }
        m
    }
}

/// Memory the running workers hold, counted back into the host's available memory: their PSS,
/// so weights they share are counted once.
pub(crate) fn held_memory(supervisor: &Supervisor) -> u64 {
    supervisor
        .workers()
        .keys()
        .filter_map(|pid| Memory::of(*pid))
        .map(|m| m.pss)
        .sum()
}

/// What the arbiter adds of its own to the supervisor's state.
#[derive(Debug)]
pub(crate) struct Context<'a> {
    /// The shared scoreboard.
    pub(crate) scoreboard: &'a Scoreboard,
    /// Every listener, described.
    pub(crate) listeners: Vec<String>,
    /// The programs' rows.
    pub(crate) programs: Vec<ProgramStatus>,
    /// Seconds since the arbiter started.
    pub(crate) uptime_secs: f64,
}

/// The status of the arbiter, its workers and programs.
pub(crate) fn status(supervisor: &Supervisor, context: Context<'_>) -> Status {
    let current = supervisor.current();
    let mut held = 0;
    let workers = supervisor
        .workers()
        .iter()
        .map(|(&pid, w)| {
            let memory = Memory::of(pid).unwrap_or_default();
            held += memory.pss;
            WorkerStatus {
                slot: w.slot,
                pid: pid as u32,
                generation: w.generation,
                state: w.phase.name().into(),
                uptime_secs: w.started.elapsed().as_secs_f64(),
                requests: context.scoreboard.slot(w.slot).requests_served(),
                restarts: supervisor.restarts(w.slot),
                private_bytes: memory.private,
                shared_bytes: memory.shared,
                pss_bytes: memory.pss,
            }
        })
        .collect();
    let budget = budget::compute(&current.config, current.target, held)
        .map(|b| b.to_string())
        .unwrap_or_else(|e| e.to_string());
    let own = Memory::of(std::process::id() as i32).unwrap_or_default();
    Status {
        pid: std::process::id(),
        config: current.config.file.display().to_string(),
        phase: supervisor.phase_name().into(),
        generation: current.number,
        target_workers: current.target,
        workers,
        listeners: context.listeners,
        budget,
        worker_restarts: context.scoreboard.worker_restarts(),
        programs: context.programs,
        total_pss_bytes: own.pss + held,
        models: models(&current.config),
        uptime_secs: context.uptime_secs,
    }
}

/// The models of `config`, as `arbiter status` lists them.
fn models(config: &arbiter_config::Config) -> Vec<ModelStatus> {
    config
        .models
        .iter()
        .enumerate()
        .map(|(i, m)| ModelStatus {
            name: m.name.clone(),
            version: m.version.clone(),
            path: m.path.display().to_string(),
            default: i == config.default_model,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smaps_rollup_fields_sum_into_private_shared_and_pss() {
        let text = "\
55d0c0a00000-7ffd5c3f2000 ---p 00000000 00:00 0                          [rollup]
Rss:              204800 kB
Pss:              120000 kB
Pss_Anon:          60000 kB
Shared_Clean:     150000 kB
Shared_Dirty:         10 kB
Private_Clean:      4000 kB
Private_Dirty:     50790 kB
Swap:                  0 kB
";
        assert_eq!(
            Memory::parse(text),
            Memory {
                private: (4000 + 50790) * 1024,
                shared: (150000 + 10) * 1024,
                pss: 120000 * 1024,
            }
        );
        assert_eq!(Memory::parse(""), Memory::default());
    }

    #[test]
    fn models_are_listed_in_file_order_with_the_default_marked() {
        let text = "[[model]]\nname = \"a\"\npath = \"/m/a.onnx\"\n\
            [[model]]\nname = \"b\"\nversion = \"3\"\npath = \"/m/b.onnx\"\ndefault = true\n";
        let config =
            arbiter_config::Config::parse(text, std::path::Path::new("/x/arbiter.toml")).unwrap();
        let listed: Vec<(String, String, String, bool)> = models(&config)
            .into_iter()
            .map(|m| (m.name, m.version, m.path, m.default))
            .collect();
        assert_eq!(
            listed,
            [
                ("a".into(), "1".into(), "/m/a.onnx".into(), false),
                ("b".into(), "3".into(), "/m/b.onnx".into(), true),
            ]
        );
    }

    #[test]
    fn this_process_has_memory() {
        let m = Memory::of(std::process::id() as i32).expect("smaps_rollup is readable");
        assert!(m.pss > 0 && m.private > 0);
    }
}
