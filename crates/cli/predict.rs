//! `arbiter predict`: the service's answer for image files, without a server, like the
//! original project's first script. The image goes through the worker's own recipe
//! ([`Recipe`]): the same decode, resize, input values and answer as `/model_predict`.

use std::path::PathBuf;
use std::process::ExitCode;

use arbiter_config::Config;
use arbiter_infer::{Labels, Model, init_runtime};
use arbiter_worker::{Elements, Recipe};

/// Prints one JSON line per image: `served`'s answer (one of `config`'s models), or
/// `{"error": ...}` for an image that cannot be read. Exits non-zero if any image failed.
pub(crate) fn run(
    config: &Config,
    served: &arbiter_config::Model,
    images: &[PathBuf],
) -> anyhow::Result<ExitCode> {
    init_runtime(served.runtime_library.as_deref())?;
    let labels = Labels::load(&served.labels)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut options = arbiter_worker::model_options(served, threads);
    options.max_batch = 1;
    options.expected_classes = Some(labels.len());
    let mut model = Model::load(&options, served.spinning)?;
    let size = model.input_size();
    let recipe = Recipe::from_config(served);
    let mut failed = false;
    for path in images {
        let answer = std::fs::read(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
            .and_then(|bytes| {
                recipe
                    .input(&bytes, config.limits.max_pixels, size)
                    .map_err(|e| format!("{}: {e}", path.display()))
            })
            .and_then(|input| {
                match &input {
                    Elements::F32(values) => model.run(values, 1),
                    Elements::U8(values) => model.run(values, 1),
                }
                .map_err(|e| e.to_string())
            });
        match answer {
            Ok(outputs) => println!(
                "{}",
                String::from_utf8_lossy(&recipe.answer(&outputs, &labels, served.threshold))
            ),
            Err(message) => {
                failed = true;
                println!("{}", serde_json::json!({ "error": message }));
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
