//! `arbiter inspect MODEL.onnx`: a model's inputs and outputs, and the `[model]` section that
//! serves it; and the same reading of the model for `arbiter check`, which refuses a recipe the
//! model cannot take. Both read the model's metadata through ONNX Runtime (without running it),
//! which is safe here: neither command forks afterwards.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use arbiter_config::{ElementType, Model, TensorLayout};
use arbiter_infer::signature::{self, Dim, ImageInput, ModelSignature};
use arbiter_infer::{InferError, InputRecipe, Labels, ResolvedInput};

/// Prints the model's inputs and outputs and a config section that serves it; fails (after
/// printing what it read) when the model is no image classifier Arbiter can serve.
pub(crate) fn run(model: &Path, runtime_library: Option<&Path>) -> anyhow::Result<ExitCode> {
    let sig = signature::read(model, runtime_library)?;
    print!("{}", describe(model, &sig));
    match sig.image_input() {
        Ok(input) => {
            print!("{}", section(model, &input, &sig));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("arbiter: {}: cannot be served: {e}", model.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The inputs and outputs, one a line.
fn describe(model: &Path, sig: &ModelSignature) -> String {
    let mut out = format!("# {}\n", model.display());
    for (title, tensors) in [("inputs", &sig.inputs), ("outputs", &sig.outputs)] {
        let _ = writeln!(out, "# {title}:");
        for t in tensors {
            let _ = writeln!(out, "#   {t}");
        }
    }
    out
}

/// The config section that serves a model with this input, each key the model fixes written
/// out, and what an ONNX file cannot tell said plainly.
fn section(model: &Path, input: &ImageInput, sig: &ModelSignature) -> String {
    let layouts = input.layouts();
    let layout = layouts[0];
    let (h, w) = input.spatial(layout);
    let classes = match &sig.outputs[..] {
        [out] => out.dims.get(1).and_then(Dim::fixed),
        _ => None,
    };
    let mut out = String::from("\n[model]\n");
    let _ = writeln!(out, "path = {:?}", model.display().to_string());
    let names = classes.map_or("one name per class".to_owned(), |c| format!("{c} names"));
    let _ = writeln!(
        out,
        "# labels = \"...\"  # not in the model: a file of {names} in class order\n\
         #                  (a JSON object, a JSON list, or one name a line)"
    );
    out.push_str("\n[model.preprocess]\n");
    let _ = writeln!(out, "layout = \"{}\"", layout.name());
    if layouts.len() > 1 {
        let _ = writeln!(
            out,
            "# (both layouts fit this input's shape: \"nhwc\" if its channels are last)"
        );
    }
    let _ = writeln!(out, "input_type = \"{}\"", input.element.name());
    match (h.fixed(), w.fixed()) {
        (Some(h), Some(w)) => {
            let _ = writeln!(out, "# input_size: the model's, {h} x {w}");
        }
        _ => {
            let _ = writeln!(
                out,
                "# input_size = [height, width]  # required: the model's height and width are\n\
                 #   {h} and {w}, given at run time: write the size it was trained at"
            );
        }
    }
    let normalization = match input.element {
        ElementType::Float32 => "divide_by, mean and std, ",
        ElementType::Uint8 => "",
    };
    let _ = writeln!(
        out,
        "# Not in an ONNX file, so not inferred: the resize (resize, shorter_side or crop_pct,\n\
         # interpolation), {normalization}channels (\"rgb\" or \"bgr\"). Unset, each is the\n\
         # seed's: write down the model's own Python preprocessing (docs/recipes.md)."
    );
    out.push_str("\n[model.postprocess]\n");
    let _ = writeln!(
        out,
        "# output = \"threshold\", \"sigmoid\" or \"softmax\" (with top_k): not in an ONNX file\n\
         # either; unset, the seed's raw threshold."
    );
    out
}

/// `arbiter check`'s reading of one model: its recipe checked against the model's actual input,
/// and the label count against its classes. The error names the model's input.
pub(crate) fn check_model(model: &Model) -> Result<String, String> {
    let fail = |e: InferError| {
        format!(
            "{}: {}",
            model.path.display(),
            arbiter_infer::error_chain(&e)
        )
    };
    let sig = signature::read(&model.path, model.runtime_library.as_deref()).map_err(fail)?;
    let input = sig.image_input().map_err(fail)?;
    // What the worker's load requires of the model, then what its recipe requires of the input.
    let served = signature::check(&sig, &InputRecipe::from(&model.preprocess)).map_err(fail)?;
    let resolved = served.input;
    arbiter_worker::Recipe::from_config(model)
        .resize
        .check(resolved.width, resolved.height)
        .map_err(|e| format!("model.preprocess: {e}"))?;
    let labels = Labels::load(&model.labels).map_err(|e| e.to_string())?;
    if let Some(classes) = served.classes
        && classes != labels.len()
    {
        return Err(fail(InferError::LabelCount {
            model: classes,
            labels: labels.len(),
        }));
    }
    Ok(summary(&input, &resolved, labels.len()))
}

/// `model input `input` float32 [N, 3, 224, 224] takes 224 x 224 NCHW float32; 20 labels`.
fn summary(input: &ImageInput, resolved: &ResolvedInput, labels: usize) -> String {
    let layout = match resolved.layout {
        TensorLayout::Nchw => "NCHW",
        TensorLayout::Nhwc => "NHWC",
    };
    format!(
        "model input {}: fed {} x {} {layout} {}; {labels} labels",
        input.describe(),
        resolved.height,
        resolved.width,
        resolved.element.name()
    )
}
