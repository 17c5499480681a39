//! KServe v2 / Open Inference Protocol: parsing an `infer` request into a batch of the model's
//! input, and writing the response, in JSON or with the binary tensor data extension (what
//! Triton's clients send by default).
//!
//! A request carries the model's one input as the model takes it: FP32 (normalized) or UINT8
//! (raw pixels, for a model that normalizes inside its graph), `[N, 3, H, W]` or `[N, H, W, 3]`,
//! whose data is JSON (flat or nested) or, with the `Inference-Header-Content-Length` header, raw
//! little-endian bytes after the JSON header (`parameters.binary_data_size`). The response has the
//! one output `[N, C]`, as JSON numbers, or as raw bytes when the request asks for binary output
//! (`parameters.binary_data` on the requested output, or `parameters.binary_data_output` on the
//! request).

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use arbiter_config::{ElementType, TensorLayout};

use crate::batcher::ModelInfo;
use crate::error::ApiError;
use crate::tensor::Elements;

/// The header naming the length of the JSON part of a binary request or response.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// The datatype of the outputs, and of a `float32` input.
const FP32: &str = "FP32";
/// The datatype of a `uint8` input.
const UINT8: &str = "UINT8";

/// The KServe datatype of an input of `element`s.
fn datatype(element: ElementType) -> &'static str {
    match element {
        ElementType::Float32 => FP32,
        ElementType::Uint8 => UINT8,
    }
}

/// The input's shape in its layout, the batch axis `n`.
fn input_shape(info: &ModelInfo, n: i64) -> [i64; 4] {
    let (h, w) = (i64::from(info.height), i64::from(info.width));
    match info.layout {
        TensorLayout::Nchw => [n, 3, h, w],
        TensorLayout::Nhwc => [n, h, w, 3],
    }
}

/// The shape as the model's metadata and its errors write it.
fn shape_text(info: &ModelInfo) -> String {
    let [_, a, b, c] = input_shape(info, 0);
    format!("[N, {a}, {b}, {c}]")
}

#[derive(Debug, Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    inputs: Vec<InputTensor>,
    #[serde(default)]
    outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Debug, Deserialize)]
struct InputTensor {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(default)]
    data: Option<TensorData>,
}

#[derive(Debug, Deserialize)]
struct RequestedOutput {
    name: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

/// A parsed, validated `infer` call.
#[derive(Debug)]
pub(crate) struct InferCall {
    /// The request's `id`, echoed in the response.
    pub id: Option<Value>,
    /// Number of images.
    pub n: usize,
    /// `n * 3 * H * W` values of the model's element type.
    pub tensor: Elements,
    /// Whether the output goes back as binary data.
    pub binary_output: bool,
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::BadRequest(msg.into())
}

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::Unprocessable(msg.into())
}

fn flag(params: Option<&Map<String, Value>>, key: &str) -> bool {
    params
        .and_then(|p| p.get(key))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// Parses an `infer` body; `json_len` is the `Inference-Header-Content-Length` header's value.
pub(crate) fn parse_request(
    body: &[u8],
    json_len: Option<usize>,
    info: &ModelInfo,
) -> Result<InferCall, ApiError> {
    let (json, mut binary) = match json_len {
        Some(len) if len <= body.len() => body.split_at(len),
        Some(len) => {
            return Err(bad(format!(
                "{HEADER_LENGTH} is {len} but the body has only {} bytes",
                body.len()
            )));
        }
        None => (body, &[][..]),
    };
    let request: InferRequest = serde_json::from_slice(json)
        .map_err(|e| bad(format!("invalid inference request JSON: {e}")))?;

    let [input] = <[InputTensor; 1]>::try_from(request.inputs).map_err(|inputs| {
        invalid(format!(
            "the model takes exactly one input (`{}`), got {}",
            info.input_name,
            inputs.len()
        ))
    })?;
    if input.name != info.input_name {
        return Err(invalid(format!(
            "unknown input `{}`: the model's input is `{}`",
            input.name, info.input_name
        )));
    }
    let wanted = datatype(info.element);
    if input.datatype != wanted {
        return Err(invalid(format!(
            "input `{}` has datatype {}; the model takes {wanted}",
            input.name, input.datatype
        )));
    }
    let n = match input.shape.as_slice() {
        [n, rest @ ..] if *n >= 1 && rest == &input_shape(info, *n)[1..] => {
            usize::try_from(*n).map_err(|_| invalid("batch too large"))?
        }
        _ => {
            return Err(invalid(format!(
                "input `{}` has shape {:?}; the model takes {} with N >= 1",
                input.name,
                input.shape,
                shape_text(info)
            )));
        }
    };
    let floats = n
        .checked_mul(info.image_len())
        .ok_or_else(|| invalid("batch too large"))?;
    let binary_size = input
        .parameters
        .as_ref()
        .and_then(|p| p.get("binary_data_size"));
    let tensor = match (input.data, binary_size) {
        (Some(_), Some(_)) => return Err(bad("an input has both `data` and `binary_data_size`")),
        (Some(data), None) => data.into_elements(info.element).ok_or_else(|| {
            invalid(format!(
                "input `{}` is UINT8: its data must be whole numbers from 0 to 255",
                input.name
            ))
        })?,
        (None, Some(size)) => {
            let size = size
                .as_u64()
                .and_then(|s| usize::try_from(s).ok())
                .ok_or_else(|| bad("binary_data_size must be a non-negative integer"))?;
            if size > binary.len() {
                return Err(bad(format!(
                    "binary_data_size is {size} but only {} bytes follow the JSON",
                    binary.len()
                )));
            }
            let (mine, rest) = binary.split_at(size);
            binary = rest;
            match info.element {
                ElementType::Uint8 => Elements::U8(mine.to_vec()),
                ElementType::Float32 => {
                    if size % 4 != 0 {
                        return Err(invalid(format!(
                            "binary_data_size {size} is not a whole number of FP32 values"
                        )));
                    }
                    Elements::F32(
                        mine.chunks_exact(4)
                            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                            .collect(),
                    )
                }
            }
        }
        (None, None) => return Err(bad(format!("input `{}` has no `data`", input.name))),
    };
    if !binary.is_empty() {
        return Err(bad(format!(
            "{} bytes of binary data are not claimed by any input",
            binary.len()
        )));
    }
    if tensor.len() != floats {
        return Err(invalid(format!(
            "input `{}` has {} values but its shape {:?} needs {floats}",
            input.name,
            tensor.len(),
            input.shape
        )));
    }

    let mut binary_output = flag(request.parameters.as_ref(), "binary_data_output");
    if let Some(outputs) = &request.outputs {
        for out in outputs {
            if out.name != info.output_name {
                return Err(invalid(format!(
                    "unknown output `{}`: the model's output is `{}`",
                    out.name, info.output_name
                )));
            }
            if let Some(b) = out
                .parameters
                .as_ref()
                .and_then(|p| p.get("binary_data"))
                .and_then(Value::as_bool)
            {
                binary_output = b;
            }
        }
    }
    Ok(InferCall {
        id: request.id,
        n,
        tensor,
        binary_output,
    })
}

#[derive(Serialize)]
struct InferResponse<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a Value>,
    outputs: [OutputTensor<'a>; 1],
}

#[derive(Serialize)]
struct OutputTensor<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: [usize; 2],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a [f32]>,
}

/// A rendered response body; `json_len` is set when binary data follows the JSON.
#[derive(Debug)]
pub(crate) struct Rendered {
    pub body: Vec<u8>,
    pub json_len: Option<usize>,
}

/// Writes the response for `call` with the model's raw `outputs`.
pub(crate) fn render_response(
    call: &InferCall,
    outputs: &[f32],
    info: &ModelInfo,
    model_name: &str,
    model_version: &str,
) -> Rendered {
    let shape = [call.n, info.num_classes];
    let byte_len = std::mem::size_of_val(outputs);
    let tensor = OutputTensor {
        name: &info.output_name,
        datatype: FP32,
        shape,
        parameters: call
            .binary_output
            .then(|| serde_json::json!({ "binary_data_size": byte_len })),
        data: (!call.binary_output).then_some(outputs),
    };
    let response = InferResponse {
        model_name,
        model_version,
        id: call.id.as_ref(),
        outputs: [tensor],
    };
    let mut body = serde_json::to_vec(&response).unwrap_or_default();
    if !call.binary_output {
        return Rendered {
            body,
            json_len: None,
        };
    }
    let json_len = body.len();
    body.reserve(byte_len);
    for v in outputs {
        body.extend_from_slice(&v.to_le_bytes());
    }
    Rendered {
        body,
        json_len: Some(json_len),
    }
}

/// `GET /v2/models/{name}[/versions/{version}]`: `versions` are every version served under the
/// name.
pub(crate) fn model_metadata(info: &ModelInfo, model_name: &str, versions: &[&str]) -> Value {
    serde_json::json!({
        "name": model_name,
        "versions": versions,
        "platform": "onnxruntime_onnx",
        "inputs": [{
            "name": info.input_name,
            "datatype": datatype(info.element),
            "shape": input_shape(info, -1),
        }],
        "outputs": [{
            "name": info.output_name,
            "datatype": FP32,
            "shape": [-1, info.num_classes],
        }],
    })
}

/// `GET /v2/models/{name}[/versions/{version}]/config`: the model's configuration as Triton
/// writes it (`config.pbtxt` in JSON), so Triton's clients and tools read it unchanged.
pub(crate) fn model_config(
    info: &ModelInfo,
    model_name: &str,
    batching: &crate::options::Batching,
    on_gpu: bool,
) -> Value {
    let input = input_shape(info, -1);
    let dims: Vec<i64> = input.iter().skip(1).copied().collect();
    let format = match info.layout {
        TensorLayout::Nchw => "FORMAT_NCHW",
        TensorLayout::Nhwc => "FORMAT_NHWC",
    };
    serde_json::json!({
        "name": model_name,
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "version_policy": { "latest": { "num_versions": 1 } },
        "max_batch_size": info.max_batch,
        "input": [{
            "name": info.input_name,
            "data_type": format!("TYPE_{}", datatype(info.element)),
            "format": format,
            "dims": dims,
        }],
        "output": [{
            "name": info.output_name,
            "data_type": "TYPE_FP32",
            "dims": [info.num_classes],
        }],
        "dynamic_batching": {
            "max_queue_delay_microseconds": batching.max_delay.as_micros() as u64,
            "default_queue_policy": { "max_queue_size": batching.queue_capacity },
        },
        "instance_group": [{ "kind": if on_gpu { "KIND_GPU" } else { "KIND_CPU" }, "count": 1 }],
    })
}

/// Checks the body of `POST /v2/repository/index`: empty, or a JSON object whose `ready`, when
/// present, is a boolean (Triton's request).
pub(crate) fn parse_index_request(body: &[u8]) -> Result<(), ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let bad =
        |why: String| ApiError::BadRequest(format!("invalid repository index request: {why}"));
    let value: Value = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    let Value::Object(fields) = value else {
        return Err(bad("not a JSON object".to_owned()));
    };
    match fields.get("ready") {
        None | Some(Value::Bool(_)) => Ok(()),
        Some(_) => Err(bad("`ready` must be true or false".to_owned())),
    }
}

/// `POST /v2/repository/index`: every model served, each `READY` (a worker serves only once
/// all its models are loaded).
pub(crate) fn repository_index<'a>(models: impl Iterator<Item = (&'a str, &'a str)>) -> Value {
    models
        .map(|(name, version)| {
            serde_json::json!({ "name": name, "version": version, "state": "READY" })
        })
        .collect()
}

/// `GET /v2`.
pub(crate) fn server_metadata() -> Value {
    serde_json::json!({
        "name": "arbiter",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data", "model_repository"],
    })
}

/// Tensor `data`: numbers, flat or nested to any depth, flattened in row-major order.
#[derive(Debug, Default)]
struct TensorData {
    /// The numbers, as `f32`.
    values: Vec<f32>,
    /// Whether every number is a whole number from 0 to 255, as written (a `UINT8` value).
    bytes: bool,
}

impl TensorData {
    /// The values as `element`s; `None` for `UINT8` when one is not a byte.
    fn into_elements(self, element: ElementType) -> Option<Elements> {
        match element {
            ElementType::Float32 => Some(Elements::F32(self.values)),
            // Each is a whole number from 0 to 255, so the cast is exact.
            ElementType::Uint8 => self
                .bytes
                .then(|| Elements::U8(self.values.iter().map(|&v| v as u8).collect())),
        }
    }
}

impl<'de> Deserialize<'de> for TensorData {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<TensorData, D::Error> {
        let mut data = TensorData {
            values: Vec::new(),
            bytes: true,
        };
        Flatten(&mut data).deserialize(deserializer)?;
        Ok(data)
    }
}

/// Appends every number of a (nested) array to the data.
struct Flatten<'a>(&'a mut TensorData);

impl Flatten<'_> {
    fn push(&mut self, value: f32, byte: bool) {
        self.0.values.push(value);
        self.0.bytes &= byte;
    }
}

impl<'de> DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Flatten<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of numbers (flat or nested)")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if let Some(hint) = seq.size_hint() {
            self.0.values.reserve(hint);
        }
        while seq.next_element_seed(Flatten(self.0))?.is_some() {}
        Ok(())
    }

    fn visit_f64<E: de::Error>(mut self, v: f64) -> Result<(), E> {
        self.push(v as f32, v.fract() == 0.0 && (0.0..=255.0).contains(&v));
        Ok(())
    }

    fn visit_i64<E: de::Error>(mut self, v: i64) -> Result<(), E> {
        self.push(v as f32, (0..=255).contains(&v));
        Ok(())
    }

    fn visit_u64<E: de::Error>(mut self, v: u64) -> Result<(), E> {
        self.push(v as f32, v <= 255);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> ModelInfo {
        ModelInfo {
            input_name: "input".into(),
            output_name: "output".into(),
            width: 2,
            height: 1,
            element: ElementType::Float32,
            layout: TensorLayout::Nchw,
            num_classes: 3,
            max_batch: 4,
            load_time: std::time::Duration::ZERO,
        }
    }

    fn parse(body: &str) -> Result<InferCall, ApiError> {
        parse_request(body.as_bytes(), None, &info())
    }

    #[test]
    fn flat_and_nested_data() {
        let flat = parse(r#"{"id":"a","inputs":[{"name":"input","shape":[1,3,1,2],"datatype":"FP32","data":[1,2,3,4,5,6.5]}]}"#)
            .unwrap();
        assert_eq!(
            flat.tensor,
            Elements::F32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.5])
        );
        assert_eq!(flat.id, Some(Value::from("a")));
        let nested = parse(r#"{"inputs":[{"name":"input","shape":[1,3,1,2],"datatype":"FP32","data":[[[[1,2]],[[3,4]],[[5,6.5]]]]}]}"#)
            .unwrap();
        assert_eq!(nested.tensor, flat.tensor);
        assert!(!nested.binary_output);
    }

    #[test]
    fn refusals_name_the_problem() {
        let cases = [
            ("not json", 400, "invalid inference request JSON"),
            (r#"{"inputs":[]}"#, 422, "exactly one input"),
            (
                r#"{"inputs":[{"name":"x","shape":[1,3,1,2],"datatype":"FP32","data":[1,2,3,4,5,6]}]}"#,
                422,
                "unknown input `x`",
            ),
            (
                r#"{"inputs":[{"name":"input","shape":[1,3,1,2],"datatype":"INT8","data":[1,2,3,4,5,6]}]}"#,
                422,
                "datatype INT8",
            ),
            (
                r#"{"inputs":[{"name":"input","shape":[1,3,2,2],"datatype":"FP32","data":[1,2,3,4,5,6]}]}"#,
                422,
                "shape [1, 3, 2, 2]",
            ),
            (
                r#"{"inputs":[{"name":"input","shape":[1,3,1,2],"datatype":"FP32","data":[1,2,3]}]}"#,
                422,
                "has 3 values",
            ),
            (
                r#"{"inputs":[{"name":"input","shape":[1,3,1,2],"datatype":"FP32","data":[1,"a",3]}]}"#,
                400,
                "invalid",
            ),
            (
                r#"{"inputs":[{"name":"input","shape":[1,3,1,2],"datatype":"FP32"}]}"#,
                400,
                "no `data`",
            ),
            (
                r#"{"inputs":[{"name":"input","shape":[1,3,1,2],"datatype":"FP32","data":[1,2,3,4,5,6]}],"outputs":[{"name":"prob"}]}"#,
                422,
                "unknown output `prob`",
            ),
        ];
        for (body, status, text) in cases {
            let err = parse(body).expect_err(body);
            assert_eq!(err.status().as_u16(), status, "{body}: {err}");
            assert!(err.to_string().contains(text), "{body}: {err}");
        }
    }

    #[test]
    fn binary_input_and_output() {
        let json = r#"{"inputs":[{"name":"input","shape":[1,3,1,2],"datatype":"FP32","parameters":{"binary_data_size":24}}],"outputs":[{"name":"output","parameters":{"binary_data":true}}]}"#;
        let mut body = json.as_bytes().to_vec();
        for v in [1.0f32, 2.0, 3.0, 4.0, 5.0, -6.0] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        let call = parse_request(&body, Some(json.len()), &info()).unwrap();
        assert_eq!(
            call.tensor,
            Elements::F32(vec![1.0, 2.0, 3.0, 4.0, 5.0, -6.0])
        );
        assert!(call.binary_output);
        let out = render_response(&call, &[0.5, -1.0, 2.0], &info(), "m", "1");
        let len = out.json_len.unwrap();
        let head: Value = serde_json::from_slice(&out.body[..len]).unwrap();
        assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 12);
        assert_eq!(head["outputs"][0]["shape"], serde_json::json!([1, 3]));
        assert_eq!(&out.body[len..len + 4], &0.5f32.to_le_bytes());
        assert_eq!(out.body.len(), len + 12);
        // Bytes left over, or missing, are refused.
        assert!(parse_request(&body[..body.len() - 4], Some(json.len()), &info()).is_err());
        let mut extra = body.clone();
        extra.push(0);
        assert!(parse_request(&extra, Some(json.len()), &info()).is_err());
        assert!(parse_request(&body, Some(body.len() + 1), &info()).is_err());
    }

    #[test]
    fn json_response_round_trips_f32() {
        let call = parse(r#"{"id":7,"inputs":[{"name":"input","shape":[1,3,1,2],"datatype":"FP32","data":[1,2,3,4,5,6]}]}"#)
            .unwrap();
        let outputs = [0.1f32, 1.0e-7, -3.4028235e38];
        let out = render_response(&call, &outputs, &info(), "resnet50", "1");
        assert!(out.json_len.is_none());
        let v: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(v["id"], 7);
        assert_eq!(v["model_name"], "resnet50");
        let back: Vec<f32> = v["outputs"][0]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(back, outputs);
    }

    /// A model with an NHWC `uint8` input: its metadata gives UINT8 `[-1, H, W, 3]`, and infer
    /// takes whole numbers from 0 to 255 as JSON or one byte each as binary data.
    #[test]
    fn a_uint8_nhwc_input() {
        let info = ModelInfo {
            element: ElementType::Uint8,
            layout: TensorLayout::Nhwc,
            ..info()
        };
        let meta = model_metadata(&info, "keras", &["1"]);
        assert_eq!(meta["inputs"][0]["datatype"], "UINT8");
        assert_eq!(meta["inputs"][0]["shape"], serde_json::json!([-1, 1, 2, 3]));
        let parse = |body: &str| parse_request(body.as_bytes(), None, &info);
        let call = parse(r#"{"inputs":[{"name":"input","shape":[1,1,2,3],"datatype":"UINT8","data":[0,1,2,253,254,255]}]}"#)
            .unwrap();
        assert_eq!(call.tensor, Elements::U8(vec![0, 1, 2, 253, 254, 255]));
        for (body, text) in [
            (
                r#"{"inputs":[{"name":"input","shape":[1,1,2,3],"datatype":"UINT8","data":[0,1,2,3,4,256]}]}"#,
                "whole numbers from 0 to 255",
            ),
            (
                r#"{"inputs":[{"name":"input","shape":[1,1,2,3],"datatype":"UINT8","data":[0,1,2,3,4,1.5]}]}"#,
                "whole numbers from 0 to 255",
            ),
            (
                r#"{"inputs":[{"name":"input","shape":[1,1,2,3],"datatype":"FP32","data":[0,1,2,3,4,5]}]}"#,
                "the model takes UINT8",
            ),
            (
                r#"{"inputs":[{"name":"input","shape":[1,3,1,2],"datatype":"UINT8","data":[0,1,2,3,4,5]}]}"#,
                "[N, 1, 2, 3]",
            ),
        ] {
            let err = parse(body).expect_err(body);
            assert_eq!(err.status().as_u16(), 422, "{body}: {err}");
            assert!(err.to_string().contains(text), "{body}: {err}");
        }
        let json = r#"{"inputs":[{"name":"input","shape":[1,1,2,3],"datatype":"UINT8","parameters":{"binary_data_size":6}}]}"#;
        let mut body = json.as_bytes().to_vec();
        body.extend_from_slice(&[9, 8, 7, 6, 5, 4]);
        let call = parse_request(&body, Some(json.len()), &info).unwrap();
        assert_eq!(call.tensor, Elements::U8(vec![9, 8, 7, 6, 5, 4]));
    }
}
