//! `[model.preprocess]` and `[model.postprocess]`: the recipe of a classifier's own Python
//! pipeline, read and checked like the rest of the file.
//!
//! A key that only one form of the recipe uses (`shorter_side`, `crop_pct`, `top_k`, the
//! normalization of a `uint8` input) is refused under another form, rather than ignored: a
//! recipe that silently does something else answers with wrong numbers, and nothing says so.

use crate::reader::{Errors, Field, Table, number};
use crate::{
    ChannelOrder, ElementType, Filter, Geometry, InputSize, Output, Postprocess, Preprocess,
    TensorLayout, defaults::SOFTMAX_TOP_K,
};

/// The names `resize` accepts.
const RESIZES: [&str; 3] = ["squash", "shorter_side", "crop_pct"];

/// `interpolation`'s names, Pillow's filter names in lower case.
const FILTERS: [(&str, Filter); 4] = [
    ("nearest", Filter::Nearest),
    ("bilinear", Filter::Bilinear),
    ("bicubic", Filter::Bicubic),
    ("lanczos", Filter::Lanczos),
];

const CHANNELS: [(&str, ChannelOrder); 2] =
    [("rgb", ChannelOrder::Rgb), ("bgr", ChannelOrder::Bgr)];

const LAYOUTS: [(&str, TensorLayout); 2] =
    [("nchw", TensorLayout::Nchw), ("nhwc", TensorLayout::Nhwc)];

const ELEMENT_TYPES: [(&str, ElementType); 2] = [
    ("float32", ElementType::Float32),
    ("uint8", ElementType::Uint8),
];

/// The names `output` accepts.
const OUTPUTS: [&str; 3] = ["threshold", "sigmoid", "softmax"];

/// The name a value is written with in the file, for [`crate::Config::to_toml`].
pub(crate) fn name_of<T: PartialEq + Copy>(table: &[(&'static str, T)], value: T) -> &'static str {
    table
        .iter()
        .find(|(_, v)| *v == value)
        .map(|(n, _)| *n)
        .expect("every value has a name")
}

impl Filter {
    /// The name `interpolation` takes for it.
    pub fn name(self) -> &'static str {
        name_of(&FILTERS, self)
    }
}

impl ChannelOrder {
    /// The name `channels` takes for it.
    pub fn name(self) -> &'static str {
        name_of(&CHANNELS, self)
    }
}

impl TensorLayout {
    /// The name `layout` takes for it.
    pub fn name(self) -> &'static str {
        name_of(&LAYOUTS, self)
    }
}

impl ElementType {
    /// The name `input_type` takes for it.
    pub fn name(self) -> &'static str {
        name_of(&ELEMENT_TYPES, self)
    }
}

/// One of `names`, or an error listing them.
fn choice<'a, 'i, T: Copy>(
    t: &mut Table<'a, 'i>,
    key: &str,
    names: &[(&str, T)],
    errs: &mut Errors,
) -> Option<(T, Field<'a, 'i>)> {
    let (text, field) = t.string(key, errs)?;
    match names.iter().find(|(n, _)| *n == text) {
        Some((_, value)) => Some((*value, field)),
        None => {
            let known: Vec<String> = names.iter().map(|(n, _)| format!("\"{n}\"")).collect();
            errs.at(
                &field.path,
                &field.span,
                format!("`{text}` is not one of {}", known.join(", ")),
            );
            None
        }
    }
}

/// Three finite numbers, one per channel, each passing `ok` (which says what it wants).
fn per_channel(
    t: &mut Table,
    key: &str,
    ok: fn(f64) -> Result<(), &'static str>,
    errs: &mut Errors,
) -> Option<[f32; 3]> {
    let field = t.field(key)?;
    let Some(items) = field.value.as_array() else {
        errs.at(
            &field.path,
            &field.span,
            format!(
                "expected 3 numbers, one per channel in the order of `channels`, found {}",
                field.value.type_str()
            ),
        );
        return None;
    };
    if items.len() != 3 {
        errs.at(
            &field.path,
            &field.span,
            format!(
                "expected 3 numbers, one per channel in the order of `channels`, found {}",
                items.len()
            ),
        );
        return None;
    }
    let mut out = [0.0f32; 3];
    let mut good = true;
    for (i, item) in items.iter().enumerate() {
        let path = format!("{}[{i}]", field.path);
        match number(item.get_ref()) {
            Some(x) if !x.is_finite() => {
                errs.at(&path, &item.span(), "must be a finite number");
                good = false;
            }
            Some(x) => match ok(x) {
                // torchvision turns a Python float list into a float32 tensor: each f64 is
                // rounded to the nearest f32 once, as this cast does.
                Ok(()) => out[i] = x as f32,
                Err(why) => {
                    errs.at(&path, &item.span(), why);
                    good = false;
                }
            },
            None => {
                errs.at(
                    &path,
                    &item.span(),
                    format!("expected a number, found {}", item.get_ref().type_str()),
                );
                good = false;
            }
        }
    }
    good.then_some(out)
}

/// A side length in pixels: an integer of at least 1 that fits `u32`.
fn side(n: i64) -> Option<u32> {
    u32::try_from(n).ok().filter(|&n| n >= 1)
}

/// `input_size`: `224` for a square, or `[height, width]`.
fn input_size(t: &mut Table, errs: &mut Errors) -> Option<InputSize> {
    let field = t.field("input_size")?;
    let want = "expected a size in pixels like 224, or [height, width] like [256, 320]";
    if let Some(n) = field
        .value
        .as_integer()
        .and_then(|i| i64::from_str_radix(i.as_str(), i.radix()).ok())
    {
        return match side(n) {
            Some(s) => Some(InputSize {
                height: s,
                width: s,
            }),
            None => {
                errs.at(
                    &field.path,
                    &field.span,
                    format!("must be at least 1, got {n}"),
                );
                None
            }
        };
    }
    let sides: Option<Vec<u32>> = field.value.as_array().and_then(|items| {
        items
            .iter()
            .map(|item| {
                let i = item.get_ref().as_integer()?;
                side(i64::from_str_radix(i.as_str(), i.radix()).ok()?)
            })
            .collect()
    });
    match sides.as_deref() {
        Some(&[height, width]) => Some(InputSize { height, width }),
        _ => {
            errs.at(&field.path, &field.span, want);
            None
        }
    }
}

/// A number under `key` in (0, 1]: timm's `crop_pct`.
fn crop_pct(t: &mut Table, errs: &mut Errors) -> Option<f64> {
    let (p, field) = t.float("crop_pct", errs)?;
    if p.is_finite() && p > 0.0 && p <= 1.0 {
        Some(p)
    } else {
        errs.at(
            &field.path,
            &field.span,
            format!("must be above 0 and at most 1 (timm's usual is 0.875), got {p}"),
        );
        None
    }
}

/// `[model.preprocess]` under the `[model]` table `model`.
pub(crate) fn read_preprocess(model: &mut Table, errs: &mut Errors) -> Preprocess {
    let mut p = Preprocess::defaults();
    let Some(mut t) = model.table("preprocess", errs) else {
        return p;
    };
    let resize = t.string("resize", errs);
    let shorter_side = t.field("shorter_side").and_then(|field| {
        let (n, _) = t.integer("shorter_side", errs)?;
        match side(n) {
            Some(s) => Some((s, field)),
            None => {
                errs.at(
                    &field.path,
                    &field.span,
                    format!("must be at least 1, got {n}"),
                );
                None
            }
        }
    });
    let crop_field = t.field("crop_pct");
    let crop = crop_field.as_ref().and_then(|_| crop_pct(&mut t, errs));
    let unused = |errs: &mut Errors, field: &Field, form: &str| {
        errs.at(
            &field.path,
            &field.span,
            format!("has no effect unless resize = \"{form}\""),
        );
    };
    let form = match &resize {
        Some((name, field)) if !RESIZES.contains(&name.as_str()) => {
            errs.at(
                &field.path,
                &field.span,
                format!(
                    "`{name}` is not one of \"squash\", \"shorter_side\" (with shorter_side = N) \
                     or \"crop_pct\" (with crop_pct = 0.875)"
                ),
            );
            None
        }
        Some((name, _)) => Some(name.as_str()),
        None => Some("squash"),
    };
    if form != Some("shorter_side")
        && let Some((_, field)) = &shorter_side
    {
        unused(errs, field, "shorter_side");
    }
    if form != Some("crop_pct")
        && let Some(field) = &crop_field
    {
        unused(errs, field, "crop_pct");
    }
    let (resize_path, resize_span) = match &resize {
        Some((_, field)) => (field.path.clone(), field.span.clone()),
        None => (format!("{}.resize", t.path), t.span.clone()),
    };
    match form {
        Some("shorter_side") => match &shorter_side {
            Some((s, _)) => p.resize = Geometry::ShorterSide(*s),
            None if t.field("shorter_side").is_none() => errs.at(
                &resize_path,
                &resize_span,
                "needs shorter_side = N, the shorter side's length before the center crop \
                 (torchvision's Resize(N))",
            ),
            None => {}
        },
        Some("crop_pct") => match crop {
            Some(c) => p.resize = Geometry::CropPct(c),
            None if crop_field.is_none() => errs.at(
                &resize_path,
                &resize_span,
                "needs crop_pct, the input's share of the resized image (timm's usual is 0.875)",
            ),
            None => {}
        },
        _ => {}
    }
    if let Some((f, _)) = choice(&mut t, "interpolation", &FILTERS, errs) {
        p.interpolation = f;
    }
    let divide_field = t.field("divide_by");
    if divide_field.is_some()
        && let Some((x, field)) = t.float("divide_by", errs)
    {
        if x.is_finite() && x > 0.0 {
            p.divide_by = x as f32;
        } else {
            errs.at(
                &field.path,
                &field.span,
                format!("must be a number above 0 (torchvision's ToTensor: 255), got {x}"),
            );
        }
    }
    let mean_field = t.field("mean");
    if let Some(mean) = per_channel(&mut t, "mean", |_| Ok(()), errs) {
        p.mean = mean;
    }
    let std_field = t.field("std");
    let positive = |x: f64| {
        if x > 0.0 {
            Ok(())
        } else {
            Err("must be above 0 (every value is divided by it)")
        }
    };
    if let Some(std) = per_channel(&mut t, "std", positive, errs) {
        p.std = std;
    }
    if let Some((c, _)) = choice(&mut t, "channels", &CHANNELS, errs) {
        p.channels = c;
    }
    if let Some((l, _)) = choice(&mut t, "layout", &LAYOUTS, errs) {
        p.layout = l;
    }
    if let Some((ty, _)) = choice(&mut t, "input_type", &ELEMENT_TYPES, errs) {
        p.input_type = ty;
        if ty == ElementType::Uint8 {
            for field in [divide_field, mean_field, std_field].into_iter().flatten() {
                errs.at(
                    &field.path,
                    &field.span,
                    "has no effect with input_type = \"uint8\": the model takes the pixels as \
                     they are and normalizes them itself",
                );
            }
        }
    }
    p.input_size = input_size(&mut t, errs);
    t.finish(errs);
    p
}

/// `[model.postprocess]` under the `[model]` table `model`.
pub(crate) fn read_postprocess(model: &mut Table, errs: &mut Errors) -> Postprocess {
    let mut p = Postprocess::defaults();
    let Some(mut t) = model.table("postprocess", errs) else {
        return p;
    };
    let output = t.string("output", errs);
    let top_k_field = t.field("top_k");
    let top_k = top_k_field.as_ref().and_then(|_| t.count("top_k", 1, errs));
    match &output {
        Some((name, field)) if !OUTPUTS.contains(&name.as_str()) => errs.at(
            &field.path,
            &field.span,
            format!(
                "`{name}` is not one of \"threshold\" (raw outputs above model.threshold), \
                 \"sigmoid\" (multi-label, above model.threshold) or \"softmax\" (single-label, \
                 the top_k most likely)"
            ),
        ),
        Some((name, _)) if name == "softmax" => {
            p.output = Output::Softmax {
                top_k: top_k.unwrap_or(SOFTMAX_TOP_K),
            };
        }
        Some((name, _)) if name == "sigmoid" => p.output = Output::Sigmoid,
        _ => {}
    }
    let softmax = output.as_ref().is_some_and(|(name, _)| name == "softmax");
    if !softmax && let Some(field) = &top_k_field {
        errs.at(
            &field.path,
            &field.span,
            "has no effect unless output = \"softmax\"",
        );
    }
    if let Some(b) = t.boolean("scores", errs) {
        p.scores = b;
    }
    t.finish(errs);
    p
}
