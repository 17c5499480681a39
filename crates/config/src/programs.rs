//! `[[program]]`: the other processes the arbiter supervises, read and checked like the rest.

use std::path::Path;

use crate::reader::{Errors, Table, resolve};
use crate::{Autorestart, Program};

/// The signal names `stopsignal` accepts.
pub const STOP_SIGNALS: [&str; 6] = ["TERM", "INT", "QUIT", "HUP", "KILL", "USR1"];

pub(crate) fn read_programs(root: &mut Table, base: &Path, errs: &mut Errors) -> Vec<Program> {
    let mut programs: Vec<Program> = Vec::new();
    for mut t in root.tables("program", errs) {
        let mut p = Program::defaults();
        match t.string("name", errs) {
            Some((name, field)) => {
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                {
                    errs.at(
                        &field.path,
                        &field.span,
                        "must be non-empty letters, digits, '-', '_' or '.'",
                    );
                } else if programs.iter().any(|o| o.name == name) {
                    errs.at(
                        &field.path,
                        &field.span,
                        format!("another program is named `{name}`"),
                    );
                } else {
                    p.name = name;
                }
            }
            None => errs.at(
                &format!("{}.name", t.path),
                &t.span,
                "every [[program]] needs a name",
            ),
        }
        match t.strings("command", errs) {
            Some((argv, field)) if argv.is_empty() || argv[0].0.is_empty() => errs.at(
                &field.path,
                &field.span,
                "needs at least the program to run",
            ),
            Some((argv, _)) => p.command = argv.into_iter().map(|(a, _)| a).collect(),
            None => errs.at(
                &format!("{}.command", t.path),
                &t.span,
                "every [[program]] needs a command, like [\"nginx\", \"-g\", \"daemon off;\"]",
            ),
        }
        if let Some((dir, _)) = t.string("directory", errs) {
            p.directory = Some(resolve(base, &dir));
        }
        if let Some(mut env) = t.table("environment", errs) {
            let keys: Vec<String> = env.keys();
            for key in keys {
                if let Some((value, _)) = env.string(&key, errs) {
                    p.environment.push((key, value));
                }
            }
            env.finish(errs);
        }
        if let Some((mode, field)) = t.string("autorestart", errs) {
            match mode.as_str() {
                "always" => p.autorestart = Autorestart::Always,
                "unexpected" => p.autorestart = Autorestart::Unexpected,
                "never" => p.autorestart = Autorestart::Never,
                _ => errs.at(
                    &field.path,
                    &field.span,
                    format!("`{mode}`: use \"always\", \"unexpected\" or \"never\""),
                ),
            }
        }
        if let Some(field) = t.field("exitcodes") {
            match field.value.as_array() {
                Some(items) => {
                    let codes: Vec<i32> = items
                        .iter()
                        .filter_map(|i| i.get_ref().as_integer())
                        .filter_map(|i| i32::from_str_radix(i.as_str(), i.radix()).ok())
                        .collect();
                    if codes.len() != items.len() {
                        errs.at(
                            &field.path,
                            &field.span,
                            "expected a list of exit codes, like [0, 2]",
                        );
                    } else {
                        p.exitcodes = codes;
                    }
                }
                None => errs.at(
                    &field.path,
                    &field.span,
                    "expected a list of exit codes, like [0, 2]",
                ),
            }
        }
        if let Some(d) = t.duration("startsecs", errs) {
            p.startsecs = d;
        }
        if let Some(n) = t.count("startretries", 0, errs) {
            p.startretries = n.min(u32::MAX as usize) as u32;
        }
        if let Some((sig, field)) = t.string("stopsignal", errs) {
            let name = sig.trim_start_matches("SIG").to_ascii_uppercase();
            if STOP_SIGNALS.contains(&name.as_str()) {
                p.stopsignal = name;
            } else {
                errs.at(
                    &field.path,
                    &field.span,
                    format!("`{sig}` is not one of {}", STOP_SIGNALS.join(", ")),
                );
            }
        }
        if let Some(d) = t.duration("stopwaitsecs", errs) {
            p.stopwaitsecs = d;
        }
        t.finish(errs);
        programs.push(p);
    }
    programs
}
