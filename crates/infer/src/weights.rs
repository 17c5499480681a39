//! A prepared model's weights, mapped once per process and handed to every session.
//!
//! Left to itself, each ONNX Runtime session maps the external data file on its own: the pages
//! are shared, but every mapping counts in the process's RSS again, and a worker with several
//! sessions (the lanes of `arbiter-worker`'s batcher) looks several times its real size.
//! [`MappedWeights::open`] maps `model.onnx.data` once, read-only, and lists the model's external
//! initializers by reading the `.onnx` file's protobuf; [`crate::Model`] then gives each session
//! those tensors with `AddInitializer`, which ONNX Runtime uses in place, without a copy (the
//! feature it has for sharing initializers between sessions). `docs/shared-weights.md` has what
//! it saves, measured.
//!
//! Only what the prepared model needs is read from the protobuf: the graph's initializers
//! (name, dims, element type, external data location, offset and length). Anything else makes
//! [`MappedWeights::open`] fail, and the caller then lets ONNX Runtime map the file itself.

use std::fs::File;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use ort::AsPointer;
use ort::memory::{Allocator, MemoryInfo};
use ort::value::DynValue;

/// Why the weights could not be mapped (the caller falls back to ONNX Runtime's own loading).
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// Reading or mapping a file failed.
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The model file is not what a prepared model looks like.
    #[error("{}: {detail}", path.display())]
    Model {
        /// The `.onnx` file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
}

/// The element types a mapped initializer may have (ONNX's `TensorProto.DataType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Element {
    F32,
    I64,
    I32,
    U8,
    I8,
}

impl Element {
    fn from_onnx(code: u64) -> Option<Element> {
        Some(match code {
            1 => Element::F32,
            2 => Element::U8,
            3 => Element::I8,
            6 => Element::I32,
            7 => Element::I64,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            Element::F32 | Element::I32 => 4,
            Element::I64 => 8,
            Element::U8 | Element::I8 => 1,
        }
    }
}

/// One initializer stored in the data file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Initializer {
    pub name: String,
    pub dims: Vec<i64>,
    pub element: Element,
    pub offset: usize,
    pub length: usize,
}

/// A prepared model's data file, mapped read-only, and the initializers it holds.
#[derive(Debug)]
pub struct MappedWeights {
    map: Mapping,
    initializers: Vec<Initializer>,
}

impl MappedWeights {
    /// Maps `data` (the external data file of the prepared `model`) and lists `model`'s
    /// initializers stored in it.
    pub fn open(model: &Path, data: &Path) -> Result<MappedWeights, WeightsError> {
        let bytes = std::fs::read(model).map_err(|source| WeightsError::Io {
            what: "read",
            path: model.to_path_buf(),
            source,
        })?;
        let bad = |detail: String| WeightsError::Model {
            path: model.to_path_buf(),
            detail,
        };
        let file_name = data
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| bad("the data file has no name".to_owned()))?;
        let initializers = external_initializers(&bytes, file_name).map_err(bad)?;
        let map = Mapping::open(data)?;
        if let Some(i) = initializers.iter().find(|i| {
            i.offset
                .checked_add(i.length)
                .is_none_or(|end| end > map.len)
        }) {
            return Err(bad(format!(
                "initializer `{}` lies past the end of {}",
                i.name,
                data.display()
            )));
        }
        Ok(MappedWeights { map, initializers })
    }

    /// The initializers in the data file.
    pub(crate) fn initializers(&self) -> &[Initializer] {
        &self.initializers
    }

    /// An ONNX Runtime tensor over `init`'s bytes in the mapping (no copy). The mapping must
    /// outlive every session given the tensor: [`crate::Model`] holds the weights after its
    /// session.
    #[allow(unsafe_code)]
    pub(crate) fn value(&self, init: &Initializer) -> Result<DynValue, String> {
        use ort::sys::ONNXTensorElementDataType as T;
        let ty = match init.element {
            Element::F32 => T::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
            Element::I64 => T::ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64,
            Element::I32 => T::ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32,
            Element::U8 => T::ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8,
            Element::I8 => T::ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8,
        };
        let info = MemoryInfo::default();
        let api = ort::api();
        let data = self.map.ptr.as_ptr().wrapping_add(init.offset);
        let mut out = std::ptr::null_mut();
        // SAFETY: `data` points to `init.length` mapped bytes (checked in `open`), which hold
        // `dims`' element count of `ty` (checked when listed); ONNX Runtime only reads
        // initializers. `info` and `dims` are valid for the call; the tensor copies what it keeps.
        let status = unsafe {
            (api.CreateTensorWithDataAsOrtValue)(
                info.ptr(),
                data.cast(),
                init.length,
                init.dims.as_ptr(),
                init.dims.len(),
                ty,
                &mut out,
            )
        };
        if !status.0.is_null() {
            // SAFETY: a non-null status from ONNX Runtime: read its message, then release it once.
            let message = unsafe {
                let text = std::ffi::CStr::from_ptr((api.GetErrorMessage)(status.0))
                    .to_string_lossy()
                    .into_owned();
                (api.ReleaseStatus)(status.0);
                text
            };
            return Err(message);
        }
        let value = NonNull::new(out).ok_or("ONNX Runtime returned no tensor")?;
        // SAFETY: `value` is a tensor we own (released when the Value drops); the allocator is
        // only held, never used to free the mapped bytes (the tensor does not own them).
        Ok(unsafe { DynValue::from_ptr(value, Some(&Allocator::default())) })
    }
}

/// A read-only shared mapping of a whole file.
#[derive(Debug)]
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is read-only and lives until drop; sharing its address between threads is
// sound (nothing writes through it).
#[allow(unsafe_code)]
unsafe impl Send for Mapping {}
// SAFETY: as above.
#[allow(unsafe_code)]
unsafe impl Sync for Mapping {}

impl Mapping {
    fn open(path: &Path) -> Result<Mapping, WeightsError> {
        let io = |what, source| WeightsError::Io {
            what,
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(|e| io("open", e))?;
        let len = usize::try_from(file.metadata().map_err(|e| io("stat", e))?.len())
            .map_err(|_| io("map", std::io::Error::other("too large")))?;
        let size =
            NonZeroUsize::new(len).ok_or_else(|| io("map", std::io::Error::other("empty file")))?;
        #[allow(unsafe_code)]
        // SAFETY: a fresh read-only shared mapping of a file we opened; prepared files are never
        // rewritten while in use (see `prepare`), so the mapped bytes do not change under us.
        let ptr = unsafe {
            nix::sys::mman::mmap(
                None,
                size,
                nix::sys::mman::ProtFlags::PROT_READ,
                nix::sys::mman::MapFlags::MAP_SHARED,
                &file,
                0,
            )
        }
        .map_err(|e| io("map", std::io::Error::from(e)))?;
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        #[allow(unsafe_code)]
        // SAFETY: the mapping came from mmap with this length and is unmapped once, here; every
        // session that used it was dropped before (Model holds its weights after its session).
        unsafe {
            let _ = nix::sys::mman::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// The graph initializers of an ONNX model (`ModelProto` bytes) stored in `file_name`.
fn external_initializers(model: &[u8], file_name: &str) -> Result<Vec<Initializer>, String> {
    const MODEL_GRAPH: u64 = 7;
    const GRAPH_INITIALIZER: u64 = 5;
    let mut out = Vec::new();
    for field in Fields::new(model) {
        let (number, value) = field?;
        let (MODEL_GRAPH, Value::Bytes(graph)) = (number, value) else {
            continue;
        };
        for field in Fields::new(graph) {
            let (number, value) = field?;
            if let (GRAPH_INITIALIZER, Value::Bytes(tensor)) = (number, value)
                && let Some(init) = tensor_proto(tensor, file_name)?
            {
                out.push(init);
            }
        }
    }
    if out.is_empty() {
        return Err(format!("no initializer is stored in {file_name}"));
    }
    Ok(out)
}

/// A `TensorProto` stored externally in `file_name`; `None` for one stored inline.
fn tensor_proto(bytes: &[u8], file_name: &str) -> Result<Option<Initializer>, String> {
    const DIMS: u64 = 1;
    const DATA_TYPE: u64 = 2;
    const NAME: u64 = 8;
    const EXTERNAL_DATA: u64 = 13;
    const DATA_LOCATION: u64 = 14;
    const EXTERNAL: u64 = 1;
    let (mut name, mut dims, mut data_type, mut external) = (None, Vec::new(), None, false);
    let (mut location, mut offset, mut length) = (None, 0usize, None);
    for field in Fields::new(bytes) {
        match field? {
            (DIMS, Value::Varint(d)) => dims.push(d as i64),
            (DIMS, Value::Bytes(packed)) => {
                let mut at = 0;
                while at < packed.len() {
                    dims.push(varint(packed, &mut at)? as i64);
                }
            }
            (DATA_TYPE, Value::Varint(t)) => data_type = Some(t),
            (NAME, Value::Bytes(n)) => {
                name = Some(String::from_utf8(n.to_vec()).map_err(|_| "a name is not UTF-8")?);
            }
            (DATA_LOCATION, Value::Varint(l)) => external = l == EXTERNAL,
            (EXTERNAL_DATA, Value::Bytes(entry)) => {
                let (mut key, mut value) = ("", "");
                for f in Fields::new(entry) {
                    match f? {
                        (1, Value::Bytes(k)) => key = std::str::from_utf8(k).unwrap_or(""),
                        (2, Value::Bytes(v)) => value = std::str::from_utf8(v).unwrap_or(""),
                        _ => {}
                    }
                }
                let number = || value.parse::<usize>().map_err(|_| format!("bad {key}"));
                match key {
                    "location" => location = Some(value.to_owned()),
                    "offset" => offset = number()?,
                    "length" => length = Some(number()?),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    if !external {
        return Ok(None);
    }
    let name = name.ok_or("an external initializer has no name")?;
    if location.as_deref() != Some(file_name) {
        return Err(format!("`{name}` is stored in another file ({location:?})"));
    }
    let element = data_type
        .and_then(Element::from_onnx)
        .ok_or_else(|| format!("`{name}` has an element type we do not map ({data_type:?})"))?;
    let count = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d).ok()?))
        .ok_or_else(|| format!("`{name}` has bad dims {dims:?}"))?;
    let bytes = count * element.size();
    if length.is_some_and(|l| l != bytes) || offset % element.size() != 0 {
        return Err(format!(
            "`{name}`: {bytes} bytes of data expected at an aligned offset, found {length:?} at {offset}"
        ));
    }
    Ok(Some(Initializer {
        name,
        dims,
        element,
        offset,
        length: bytes,
    }))
}

/// A protobuf field's value.
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// The fields of one protobuf message, in order.
struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8]) -> Fields<'a> {
        Fields { bytes, at: 0 }
    }

    fn next_field(&mut self) -> Result<(u64, Value<'a>), String> {
        let key = varint(self.bytes, &mut self.at)?;
        let value = match key & 7 {
            0 => Value::Varint(varint(self.bytes, &mut self.at)?),
            1 => self.skip(8)?,
            2 => {
                let len = usize::try_from(varint(self.bytes, &mut self.at)?)
                    .map_err(|_| "a length is too large")?;
                let end = self.at.checked_add(len).ok_or("a length is too large")?;
                let slice = self
                    .bytes
                    .get(self.at..end)
                    .ok_or("a field runs past the end")?;
                self.at = end;
                Value::Bytes(slice)
            }
            5 => self.skip(4)?,
            wire => return Err(format!("unsupported wire type {wire}")),
        };
        Ok((key >> 3, value))
    }

    fn skip(&mut self, n: usize) -> Result<Value<'a>, String> {
        if self.bytes.len() - self.at < n {
            return Err("a field runs past the end".to_owned());
        }
        self.at += n;
        Ok(Value::Fixed)
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Value<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.bytes.len() {
            return None;
        }
        let field = self.next_field();
        if field.is_err() {
            self.at = self.bytes.len();
        }
        Some(field)
    }
}

fn varint(bytes: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at).ok_or("a number runs past the end")?;
        *at += 1;
        value |= u64::from(byte & 0x7F) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("a number is too long".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(number: u64, wire: u64) -> Vec<u8> {
        encode_varint((number << 3) | wire)
    }

    fn encode_varint(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let byte = (v & 0x7F) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }

    fn bytes_field(number: u64, data: &[u8]) -> Vec<u8> {
        let mut out = key(number, 2);
        out.extend(encode_varint(data.len() as u64));
        out.extend_from_slice(data);
        out
    }

    fn varint_field(number: u64, v: u64) -> Vec<u8> {
        let mut out = key(number, 0);
        out.extend(encode_varint(v));
        out
    }

    fn entry(k: &str, v: &str) -> Vec<u8> {
        let mut e = bytes_field(1, k.as_bytes());
        e.extend(bytes_field(2, v.as_bytes()));
        bytes_field(13, &e)
    }

    /// A ModelProto with one graph holding `tensors`.
    fn model(tensors: &[Vec<u8>]) -> Vec<u8> {
        let mut graph = bytes_field(1, b"node bytes are skipped");
        for t in tensors {
            graph.extend(bytes_field(5, t));
        }
        let mut m = varint_field(1, 8); // ir_version
        m.extend(bytes_field(7, &graph));
        m
    }

    fn external(name: &str, dims: &[u64], offset: usize, length: usize) -> Vec<u8> {
        let mut packed = Vec::new();
        for &d in dims {
            packed.extend(encode_varint(d));
        }
        let mut t = bytes_field(1, &packed);
        t.extend(varint_field(2, 1));
        t.extend(bytes_field(8, name.as_bytes()));
        t.extend(entry("location", "model.onnx.data"));
        t.extend(entry("offset", &offset.to_string()));
        t.extend(entry("length", &length.to_string()));
        t.extend(varint_field(14, 1));
        t
    }

    #[test]
    fn lists_external_initializers_and_skips_inline_ones() {
        let mut inline = varint_field(1, 4);
        inline.extend(varint_field(2, 7));
        inline.extend(bytes_field(8, b"shape"));
        inline.extend(bytes_field(9, &[0; 32]));
        let m = model(&[
            external("conv.w", &[64, 3, 7, 7], 0, 64 * 3 * 7 * 7 * 4),
            inline,
            external("fc.b", &[20], 40960, 80),
        ]);
        let found = external_initializers(&m, "model.onnx.data").unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].name, "conv.w");
        assert_eq!(found[0].dims, vec![64, 3, 7, 7]);
        assert_eq!(found[0].element, Element::F32);
        assert_eq!((found[1].offset, found[1].length), (40960, 80));
    }

    #[test]
    fn refuses_what_it_cannot_map() {
        let wrong_length = model(&[external("w", &[10], 0, 44)]);
        let err = external_initializers(&wrong_length, "model.onnx.data").unwrap_err();
        assert!(err.contains("40 bytes"), "{err}");
        let other_file = model(&[external("w", &[10], 0, 40)]);
        let err = external_initializers(&other_file, "weights.bin").unwrap_err();
        assert!(err.contains("another file"), "{err}");
        let truncated = &model(&[external("w", &[10], 0, 40)])[..30];
        assert!(external_initializers(truncated, "model.onnx.data").is_err());
        assert!(external_initializers(&model(&[]), "model.onnx.data").is_err());
    }
}
