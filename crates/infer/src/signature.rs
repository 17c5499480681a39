//! What a model takes and gives, as its metadata says, and whether a preprocessing recipe fits it.
//!
//! [`TensorInfo`] describes any input or output (for `arbiter inspect`). [`ImageInput`] is the one
//! input of an image classifier: `float32` or `uint8`, rank 4, three channels at axis 1 (NCHW) or
//! axis 3 (NHWC), a batch axis fixed or symbolic, height and width fixed or symbolic.
//! [`resolve`] checks the recipe's side of the input ([`InputRecipe`]: layout, element type,
//! size) against it and gives the input a model is run with ([`ResolvedInput`]), or refuses,
//! naming the model's actual input.

use std::fmt;
use std::path::Path;

use arbiter_config::{ElementType, InputSize, Preprocess, TensorLayout};
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{TensorElementType, ValueType};

use crate::{InferError, runtime};

/// The largest input height or width accepted: a batch-1 warm-up input of this size is 3 GiB.
pub(crate) const MAX_SIDE: u32 = 16384;

/// One axis of a tensor's shape in a model's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A fixed length.
    Fixed(u64),
    /// A length given at run time, by its symbol in the model (`""` when it has none).
    Symbolic(String),
}

impl Dim {
    /// The fixed length, if it is one.
    pub fn fixed(&self) -> Option<u64> {
        match self {
            Dim::Fixed(n) => Some(*n),
            Dim::Symbolic(_) => None,
        }
    }
}

impl fmt::Display for Dim {
    /// The length, the symbol, or `?` for a symbolic axis with no name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Symbolic(s) if s.is_empty() => f.write_str("?"),
            Dim::Symbolic(s) => f.write_str(s),
        }
    }
}

/// A shape as the messages write it: `[N, 3, 224, 224]`.
pub(crate) fn shape_text(dims: &[Dim]) -> String {
    let shown: Vec<String> = dims.iter().map(Dim::to_string).collect();
    format!("[{}]", shown.join(", "))
}

/// One input or output of a model, as its metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Its name in the graph.
    pub name: String,
    /// The element type as ONNX names it (`float32`, `uint8`, `int64`, ...), or what the value
    /// is when it is not a tensor (`sequence`, `map`, `optional`).
    pub element: String,
    /// The shape; empty for a value that is not a tensor.
    pub dims: Vec<Dim>,
    /// The element type, when the value is a tensor.
    pub(crate) ty: Option<TensorElementType>,
}

impl TensorInfo {
    pub(crate) fn of(name: &str, value: &ValueType) -> TensorInfo {
        let (element, dims, ty) = match value {
            ValueType::Tensor {
                ty,
                shape,
                dimension_symbols,
            } => {
                let dims = shape
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| match u64::try_from(d) {
                        Ok(n) => Dim::Fixed(n),
                        Err(_) => {
                            Dim::Symbolic(dimension_symbols.get(i).cloned().unwrap_or_default())
                        }
                    })
                    .collect();
                (onnx_name(*ty), dims, Some(*ty))
            }
            ValueType::Sequence(_) => ("sequence".to_owned(), Vec::new(), None),
            ValueType::Map { .. } => ("map".to_owned(), Vec::new(), None),
            ValueType::Optional(_) => ("optional".to_owned(), Vec::new(), None),
        };
        TensorInfo {
            name: name.to_owned(),
            element,
            dims,
            ty,
        }
    }

    /// Whether it is a tensor (and not a sequence, map or optional value).
    pub fn is_tensor(&self) -> bool {
        self.ty.is_some()
    }

    /// `[N, 3, 224, 224]`.
    pub fn shape(&self) -> String {
        shape_text(&self.dims)
    }
}

impl fmt::Display for TensorInfo {
    /// `` `input` float32 [N, 3, 224, 224] ``, or `` `x` (a sequence, not a tensor) ``.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_tensor() {
            write!(f, "`{}` {} {}", self.name, self.element, self.shape())
        } else {
            write!(f, "`{}` (a {}, not a tensor)", self.name, self.element)
        }
    }
}

/// The element type's name as ONNX writes it (`TensorProto.FLOAT` is `float32` in numpy's words).
fn onnx_name(ty: TensorElementType) -> String {
    let name = match ty {
        TensorElementType::Float32 => "float32",
        TensorElementType::Float64 => "float64",
        TensorElementType::Float16 => "float16",
        TensorElementType::Bfloat16 => "bfloat16",
        TensorElementType::Uint8 => "uint8",
        TensorElementType::Int8 => "int8",
        TensorElementType::Uint16 => "uint16",
        TensorElementType::Int16 => "int16",
        TensorElementType::Uint32 => "uint32",
        TensorElementType::Int32 => "int32",
        TensorElementType::Uint64 => "uint64",
        TensorElementType::Int64 => "int64",
        TensorElementType::Bool => "bool",
        TensorElementType::String => "string",
        other => return other.to_string(),
    };
    name.to_owned()
}

/// A model's inputs and outputs, as its metadata gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSignature {
    /// The inputs, in the graph's order.
    pub inputs: Vec<TensorInfo>,
    /// The outputs, in the graph's order.
    pub outputs: Vec<TensorInfo>,
}

impl ModelSignature {
    /// The session's inputs and outputs.
    pub(crate) fn of(session: &Session) -> ModelSignature {
        let describe = |outlets: &[ort::value::Outlet]| {
            outlets
                .iter()
                .map(|o| TensorInfo::of(o.name(), o.dtype()))
                .collect()
        };
        ModelSignature {
            inputs: describe(session.inputs()),
            outputs: describe(session.outputs()),
        }
    }

    /// The model's one input as an image input, or why it has none.
    pub fn image_input(&self) -> Result<ImageInput, InferError> {
        match &self.inputs[..] {
            [input] => ImageInput::of(input),
            inputs => {
                let names: Vec<String> = inputs.iter().map(|i| format!("`{}`", i.name)).collect();
                Err(InferError::Shape {
                    expected: format!("exactly one input {IMAGE_INPUT}"),
                    found: format!("model has {} inputs ({})", inputs.len(), names.join(", ")),
                })
            }
        }
    }
}

/// Reads the inputs and outputs of the model at `path`, without running it: loads ONNX Runtime
/// (see [`crate::init_runtime`]) and builds a session on one thread, with no graph
/// optimization, that is only asked for its metadata. For `arbiter inspect` and `arbiter check`;
/// a process that forks afterwards must not call it (see the crate's doc).
pub fn read(path: &Path, runtime_library: Option<&Path>) -> Result<ModelSignature, InferError> {
    runtime::init_runtime(runtime_library)?;
    let env = runtime::environment()?;
    if !path.is_file() {
        return Err(InferError::ModelMissing {
            path: path.to_path_buf(),
        });
    }
    let model_err = |source: ort::Error| InferError::ModelLoad {
        path: path.to_path_buf(),
        source,
    };
    let session = Session::builder(&env)
        .map_err(model_err)?
        .with_optimization_level(GraphOptimizationLevel::Disable)
        .map_err(|e| model_err(e.into()))?
        .with_intra_threads(1)
        .map_err(|e| model_err(e.into()))?
        .commit_from_file(path)
        .map_err(model_err)?;
    Ok(ModelSignature::of(&session))
}

/// The recipe's side of the model's input: what `[model.preprocess]` says the tensor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputRecipe {
    /// `layout`.
    pub layout: TensorLayout,
    /// `input_type`.
    pub element: ElementType,
    /// `input_size`; `None` takes the model's, which must then be static.
    pub size: Option<InputSize>,
}

impl InputRecipe {
    /// The seed's: NCHW `float32`, the size from the model.
    pub const SEED: InputRecipe = InputRecipe {
        layout: TensorLayout::Nchw,
        element: ElementType::Float32,
        size: None,
    };
}

impl Default for InputRecipe {
    fn default() -> Self {
        InputRecipe::SEED
    }
}

impl From<&Preprocess> for InputRecipe {
    fn from(p: &Preprocess) -> Self {
        InputRecipe {
            layout: p.layout,
            element: p.input_type,
            size: p.input_size,
        }
    }
}

/// The one input of an image classifier: `float32` or `uint8`, `[N, 3, H, W]` or
/// `[N, H, W, 3]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInput {
    /// Its name in the graph.
    pub name: String,
    /// Its element type.
    pub element: ElementType,
    /// Its four axes as the model gives them.
    pub dims: [Dim; 4],
}

/// What a model's input takes: NCHW `float32` or `uint8` in the seed's words.
const IMAGE_INPUT: &str = "[N, 3, H, W] or [N, H, W, 3], float32 or uint8";

impl ImageInput {
    /// The model's input as an image input, or why it is none.
    pub fn of(info: &TensorInfo) -> Result<ImageInput, InferError> {
        let shape_err = |found: String| InferError::Shape {
            expected: IMAGE_INPUT.to_owned(),
            found,
        };
        let element = match info.ty {
            Some(TensorElementType::Float32) => ElementType::Float32,
            Some(TensorElementType::Uint8) => ElementType::Uint8,
            Some(_) => {
                return Err(shape_err(format!(
                    "model input `{}` has element type {} (shape {})",
                    info.name,
                    info.element,
                    info.shape()
                )));
            }
            None => {
                return Err(shape_err(format!(
                    "model input `{}` is a {}, not a tensor",
                    info.name, info.element
                )));
            }
        };
        let found = || format!("model input `{}` has shape {}", info.name, info.shape());
        let Ok(dims) = <[Dim; 4]>::try_from(info.dims.clone()) else {
            return Err(shape_err(found()));
        };
        let input = ImageInput {
            name: info.name.clone(),
            element,
            dims,
        };
        if input.layouts().is_empty() || input.dims[0] == Dim::Fixed(0) {
            return Err(shape_err(found()));
        }
        Ok(input)
    }

    /// The layouts whose channel axis is a fixed 3, NCHW first (both for `[N, 3, H, 3]`).
    pub fn layouts(&self) -> Vec<TensorLayout> {
        [TensorLayout::Nchw, TensorLayout::Nhwc]
            .into_iter()
            .filter(|&l| self.dims[channel_axis(l)] == Dim::Fixed(3))
            .collect()
    }

    /// `Some(k)` when the batch axis is fixed at `k`.
    pub fn fixed_batch(&self) -> Option<usize> {
        self.dims[0].fixed().and_then(|k| usize::try_from(k).ok())
    }

    /// The height and width axes under `layout`.
    pub fn spatial(&self, layout: TensorLayout) -> (&Dim, &Dim) {
        match layout {
            TensorLayout::Nchw => (&self.dims[2], &self.dims[3]),
            TensorLayout::Nhwc => (&self.dims[1], &self.dims[2]),
        }
    }

    /// `` `input` is uint8 [N, 224, 224, 3] (NHWC) ``: the input as a refusal names it.
    pub fn describe(&self) -> String {
        let layouts: Vec<String> = self
            .layouts()
            .iter()
            .map(|l| l.name().to_uppercase())
            .collect();
        format!(
            "`{}` is {} {} ({})",
            self.name,
            self.element.name(),
            shape_text(&self.dims),
            layouts.join(" or ")
        )
    }
}

fn channel_axis(layout: TensorLayout) -> usize {
    match layout {
        TensorLayout::Nchw => 1,
        TensorLayout::Nhwc => 3,
    }
}

/// The input a model is run with: the recipe checked against the model, the size resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedInput {
    /// The tensor's axes.
    pub layout: TensorLayout,
    /// The tensor's element type.
    pub element: ElementType,
    /// Rows of an image.
    pub height: u32,
    /// Columns of an image.
    pub width: u32,
    /// `Some(k)` when the model's batch axis is fixed at `k`.
    pub fixed_batch: Option<usize>,
}

/// `[height, width]`, or one number for a square, as `input_size` is written.
fn size_text(size: InputSize) -> String {
    if size.height == size.width {
        size.height.to_string()
    } else {
        format!("[{}, {}]", size.height, size.width)
    }
}

/// Checks `recipe` against the model's input and resolves the input size: the model's where it
/// is static (a config size that disagrees is refused), the config's where it is symbolic (and
/// then required). Each refusal names the model's actual input.
pub fn resolve(input: &ImageInput, recipe: &InputRecipe) -> Result<ResolvedInput, InferError> {
    let refuse = |conflict: String| InferError::Recipe {
        input: input.describe(),
        conflict,
    };
    if input.element != recipe.element {
        return Err(refuse(format!(
            "model.preprocess.input_type = \"{}\"",
            recipe.element.name()
        )));
    }
    if !input.layouts().contains(&recipe.layout) {
        return Err(refuse(format!(
            "model.preprocess.layout = \"{}\"",
            recipe.layout.name()
        )));
    }
    let (h, w) = input.spatial(recipe.layout);
    let model_side = |d: &Dim| d.fixed().map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    let (height, width) = match (model_side(h), model_side(w), recipe.size) {
        (Some(height), Some(width), None) => (height, width),
        (mh, mw, Some(size)) => {
            let agrees = mh.is_none_or(|m| m == size.height) && mw.is_none_or(|m| m == size.width);
            if !agrees {
                return Err(refuse(format!(
                    "model.preprocess.input_size = {}",
                    size_text(size)
                )));
            }
            (size.height, size.width)
        }
        _ => {
            return Err(refuse(
                "model.preprocess.input_size is not set: the model's height and width are \
                 symbolic, so the config must give them"
                    .to_owned(),
            ));
        }
    };
    if height == 0 || width == 0 || height > MAX_SIDE || width > MAX_SIDE {
        return Err(refuse(format!(
            "its height and width must be 1 to {MAX_SIDE} pixels (got {height} x {width})"
        )));
    }
    Ok(ResolvedInput {
        layout: recipe.layout,
        element: recipe.element,
        height,
        width,
        fixed_batch: input.fixed_batch(),
    })
}

/// What a model serves, once [`check`]ed against a recipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// The image input's name.
    pub input_name: String,
    /// The output's name.
    pub output_name: String,
    /// The image input as the recipe fills it.
    pub input: ResolvedInput,
    /// The class count; `None` when the class dimension is symbolic (a run then tells).
    pub classes: Option<usize>,
}

/// Checks that the model has one image input the recipe fits (see [`resolve`]) and one `[N, C]`
/// float32 output: what [`crate::Model::load`] requires, and `arbiter check` with it.
pub fn check(sig: &ModelSignature, recipe: &InputRecipe) -> Result<Served, InferError> {
    const OUTPUT: &str = "[N, C] float32";
    let image = sig.image_input()?;
    let resolved = resolve(&image, recipe)?;

    let [out] = &sig.outputs[..] else {
        let names: Vec<String> = sig
            .outputs
            .iter()
            .map(|o| format!("`{}`", o.name))
            .collect();
        return Err(InferError::Shape {
            expected: format!("exactly one output {OUTPUT}"),
            found: format!(
                "model has {} outputs ({})",
                sig.outputs.len(),
                names.join(", ")
            ),
        });
    };
    let out_err = || InferError::Shape {
        expected: "[N, C]".to_owned(),
        found: format!("model output `{}` has shape {}", out.name, out.shape()),
    };
    if out.ty != Some(TensorElementType::Float32) {
        return Err(InferError::Shape {
            expected: OUTPUT.to_owned(),
            found: format!(
                "model output `{}` has element type {} (shape {})",
                out.name,
                out.element,
                out.shape()
            ),
        });
    }
    let [on, oc] = &out.dims[..] else {
        return Err(out_err());
    };
    // The output's batch follows the input's: symbolic, or the same fixed size.
    let batch_ok = match on.fixed() {
        None => true,
        Some(k) => resolved.fixed_batch.is_some_and(|b| b as u64 == k),
    };
    if !batch_ok || oc.fixed() == Some(0) {
        return Err(out_err());
    }
    Ok(Served {
        input_name: image.name,
        output_name: out.name.clone(),
        input: resolved,
        classes: oc.fixed().and_then(|c| usize::try_from(c).ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(ty: TensorElementType, dims: &[&str]) -> TensorInfo {
        TensorInfo {
            name: "x".to_owned(),
            element: onnx_name(ty),
            dims: dims
                .iter()
                .map(|d| match d.parse() {
                    Ok(n) => Dim::Fixed(n),
                    Err(_) => Dim::Symbolic((*d).to_owned()),
                })
                .collect(),
            ty: Some(ty),
        }
    }

    fn input(ty: TensorElementType, dims: &[&str]) -> ImageInput {
        ImageInput::of(&info(ty, dims)).unwrap()
    }

    fn recipe(layout: TensorLayout, element: ElementType, size: Option<(u32, u32)>) -> InputRecipe {
        InputRecipe {
            layout,
            element,
            size: size.map(|(height, width)| InputSize { height, width }),
        }
    }

    const F32: TensorElementType = TensorElementType::Float32;
    const U8: TensorElementType = TensorElementType::Uint8;

    #[test]
    fn the_seed_recipe_takes_a_static_nchw_float_input() {
        let got = resolve(&input(F32, &["N", "3", "224", "224"]), &InputRecipe::SEED).unwrap();
        assert_eq!((got.height, got.width, got.fixed_batch), (224, 224, None));
        let got = resolve(&input(F32, &["1", "3", "240", "320"]), &InputRecipe::SEED).unwrap();
        assert_eq!(
            (got.height, got.width, got.fixed_batch),
            (240, 320, Some(1))
        );
    }

    #[test]
    fn a_mismatch_names_the_models_input() {
        let nhwc = input(U8, &["N", "224", "224", "3"]);
        let err = resolve(
            &nhwc,
            &recipe(TensorLayout::Nhwc, ElementType::Float32, None),
        );
        assert_eq!(
            err.unwrap_err().to_string(),
            "model input `x` is uint8 [N, 224, 224, 3] (NHWC) but \
             model.preprocess.input_type = \"float32\""
        );
        let err = resolve(&nhwc, &recipe(TensorLayout::Nchw, ElementType::Uint8, None));
        assert_eq!(
            err.unwrap_err().to_string(),
            "model input `x` is uint8 [N, 224, 224, 3] (NHWC) but model.preprocess.layout = \"nchw\""
        );
        let ok = resolve(&nhwc, &recipe(TensorLayout::Nhwc, ElementType::Uint8, None)).unwrap();
        assert_eq!((ok.height, ok.width), (224, 224));
    }

    #[test]
    fn a_static_size_comes_from_the_model_and_a_disagreeing_one_is_refused() {
        let model = input(F32, &["N", "3", "256", "256"]);
        let same = recipe(TensorLayout::Nchw, ElementType::Float32, Some((256, 256)));
        assert_eq!(resolve(&model, &same).unwrap().height, 256);
        let other = recipe(TensorLayout::Nchw, ElementType::Float32, Some((224, 240)));
        assert_eq!(
            resolve(&model, &other).unwrap_err().to_string(),
            "model input `x` is float32 [N, 3, 256, 256] (NCHW) but \
             model.preprocess.input_size = [224, 240]"
        );
    }

    #[test]
    fn a_symbolic_size_comes_from_the_config() {
        let model = input(F32, &["N", "3", "H", "W"]);
        let sized = recipe(TensorLayout::Nchw, ElementType::Float32, Some((240, 320)));
        let got = resolve(&model, &sized).unwrap();
        assert_eq!((got.height, got.width), (240, 320));
        let msg = resolve(&model, &InputRecipe::SEED).unwrap_err().to_string();
        assert!(
            msg.starts_with("model input `x` is float32 [N, 3, H, W] (NCHW) but model.preprocess.input_size is not set"),
            "{msg}"
        );
        // Half symbolic: the fixed side must agree.
        let half = input(F32, &["N", "3", "224", "W"]);
        assert!(resolve(&half, &sized).is_err());
        let fits = recipe(TensorLayout::Nchw, ElementType::Float32, Some((224, 300)));
        assert_eq!(resolve(&half, &fits).unwrap().width, 300);
        let huge = recipe(
            TensorLayout::Nchw,
            ElementType::Float32,
            Some((MAX_SIDE + 1, 8)),
        );
        assert!(
            resolve(&model, &huge)
                .unwrap_err()
                .to_string()
                .contains("1 to 16384 pixels")
        );
    }

    #[test]
    fn inputs_that_are_no_image_are_refused() {
        let refused = |ty, dims: &[&str]| ImageInput::of(&info(ty, dims)).unwrap_err().to_string();
        assert_eq!(
            refused(F32, &["N", "4", "224", "224"]),
            "model input `x` has shape [N, 4, 224, 224]; expected [N, 3, H, W] or [N, H, W, 3], \
             float32 or uint8"
        );
        assert!(refused(F32, &["N", "3", "224"]).contains("has shape [N, 3, 224]"));
        assert!(refused(F32, &["N", "C", "224", "224"]).contains("has shape [N, C, 224, 224]"));
        assert!(refused(F32, &["0", "3", "224", "224"]).contains("has shape [0, 3, 224, 224]"));
        assert!(
            refused(TensorElementType::Int64, &["N", "3", "4", "4"])
                .contains("model input `x` has element type int64 (shape [N, 3, 4, 4])")
        );
    }

    #[test]
    fn both_layouts_fit_a_square_of_three() {
        let odd = input(F32, &["N", "3", "8", "3"]);
        assert_eq!(odd.layouts(), [TensorLayout::Nchw, TensorLayout::Nhwc]);
        assert_eq!(odd.describe(), "`x` is float32 [N, 3, 8, 3] (NCHW or NHWC)");
    }
}
