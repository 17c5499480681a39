//! `precision = "bf16"`: the seed's ResNet50 compiled by OpenVINO's CPU plugin at BF16 inference
//! precision ([`Engine::load_precision`]) against the Python reference's FP32 outputs
//! (var/reference/manifest.json, from the reference's own pixels, as tests/resnet.rs does).
//!
//! On a CPU with AVX512-BF16 or AMX: every photo's outputs within `BF16_TOLERANCE` of FP32's (BF16
//! keeps 8 bits of mantissa: the issue measured 0.029 at most on this model), batches of 8 equal
//! to singles, and each lane (an infer request of the throughput-mode compilation) answering as
//! the engine itself. On a CPU without them: the load is refused with the reason, never a silent
//! FP32.

use arbiter_infer::{
    CpuOffers, Device, Engine, InferError, InputRecipe, ModelOptions, Precision, check_precision,
    init_openvino, init_runtime,
};
use arbiter_testkit::setup;
use serde_json::Value;

const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];
const SIDE: usize = 224;
const CLASSES: usize = 20;
/// BF16 rounds every product's inputs to 8 significant bits: outputs of spread ~0.8 move by a few
/// hundredths; a wrong kernel or layout moves them by the spread.
const BF16_TOLERANCE: f32 = 0.1;

fn options(max_batch: usize) -> ModelOptions {
    ModelOptions {
        path: setup::resnet50(),
        runtime_library: None,
        device: Device::Cpu,
        intra_threads: 2,
        max_batch,
        expected_classes: Some(CLASSES),
        input: InputRecipe::SEED,
    }
}

fn load(max_batch: usize) -> Result<Engine, InferError> {
    init_runtime(Some(&setup::onnxruntime())).expect("ONNX Runtime loads");
    let library = setup::var("openvino/libopenvino_c.so");
    assert!(
        library.is_file(),
        "{}: run scripts/setup",
        library.display()
    );
    init_openvino(Some(&library)).expect("OpenVINO's C library loads");
    Engine::load_precision(&options(max_batch), None, false, Precision::Bf16)
}

/// (file, CHW input, FP32 outputs) of each reference photo.
fn references() -> Vec<(String, Vec<f32>, Vec<f32>)> {
    let path = setup::var("reference/manifest.json");
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    manifest["images"]
        .as_array()
        .expect("reference images: run scripts/setup")
        .iter()
        .map(|img| {
            let pixels =
                std::fs::read(path.with_file_name(img["pixels"].as_str().unwrap())).unwrap();
            let mut chw = vec![0.0; pixels.len()];
            for (i, px) in pixels.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    chw[c * SIDE * SIDE + i] = (f32::from(px[c]) / 255.0 - MEAN[c]) / STD[c];
                }
            }
            let out = img["output"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            (img["file"].as_str().unwrap().to_owned(), chw, out)
        })
        .collect()
}

#[test]
fn bf16_answers_within_its_rounding_of_fp32_or_is_refused() {
    let offers = CpuOffers::detect();
    if !offers.bf16() {
        let err = load(1).expect_err("a CPU without BF16 must refuse bf16");
        assert!(matches!(err, InferError::Precision { .. }), "{err}");
        eprintln!("refused as it must be on this CPU ({offers}): {err}");
        return;
    }
    let mut engine = load(8)
        .expect("bf16 loads on a CPU with AVX512-BF16 or AMX")
        .with_lanes(true);
    // What `arbiter check` asks: fine here, refused on a GPU; fp32 anywhere.
    check_precision(Device::Cpu, Precision::Bf16).expect("bf16 can be served here");
    assert!(check_precision(Device::Cuda(0), Precision::Bf16).is_err());
    check_precision(Device::Cuda(0), Precision::Fp32).unwrap();
    assert_eq!(
        engine.prepared_key(),
        None,
        "OpenVINO compiles its own copy"
    );
    let mut lanes = engine
        .take_lanes()
        .expect("lanes when asked")
        .load()
        .expect("the lanes load");
    assert_eq!(lanes.len(), 2, "one lane per thread");
    assert_eq!(engine.model().num_classes(), CLASSES);
    let refs = references();
    assert!(!refs.is_empty());
    let (mut worst, mut sum, mut count) = (0f32, 0f64, 0usize);
    for (file, input, fp32) in &refs {
        let out = engine.run(input, 1).unwrap();
        let diff = arbiter_testkit::max_difference(&out, fp32);
        assert!(
            diff <= BF16_TOLERANCE,
            "{file}: BF16 differs from FP32 by {diff}"
        );
        worst = worst.max(diff);
        sum += out
            .iter()
            .zip(fp32)
            .map(|(a, b)| f64::from((a - b).abs()))
            .sum::<f64>();
        count += out.len();
    }
    // A batch of 8 is 8 singles (up to BF16's own reordering).
    let batch: Vec<f32> = refs
        .iter()
        .cycle()
        .take(8)
        .flat_map(|r| r.1.iter().copied())
        .collect();
    let batched = engine.run(&batch, 8).unwrap();
    for (i, (file, input, _)) in refs.iter().cycle().take(8).enumerate() {
        let single = engine.run(input, 1).unwrap();
        let diff =
            arbiter_testkit::max_difference(&batched[i * CLASSES..(i + 1) * CLASSES], &single);
        assert!(
            diff <= BF16_TOLERANCE,
            "{file} at {i}: batch and single differ by {diff}"
        );
    }
    // Each lane answers as the engine (both BF16, compiled apart: their rounding may differ).
    for (l, lane) in lanes.iter_mut().enumerate() {
        for (file, input, _) in &refs {
            let diff = arbiter_testkit::max_difference(
                &lane.run(input, 1).unwrap(),
                &engine.run(input, 1).unwrap(),
            );
            assert!(
                diff <= BF16_TOLERANCE,
                "{file}: lane {l} and the engine differ by {diff}"
            );
        }
    }
    eprintln!(
        "bf16 on {} photos: max |BF16 - FP32| {worst:.4}, mean {:.4}",
        refs.len(),
        sum / count as f64
    );
}

/// Images per second of `engine` on `batch` copies of `input` for `seconds`.
fn speed(engine: &mut Engine, input: &[f32], batch: usize, seconds: f64) -> f64 {
    let data: Vec<f32> = (0..batch).flat_map(|_| input.iter().copied()).collect();
    for _ in 0..3 {
        engine.run(&data, batch).unwrap();
    }
    let started = std::time::Instant::now();
    let mut runs = 0usize;
    while started.elapsed().as_secs_f64() < seconds && runs < 100_000 {
        engine.run(&data, batch).unwrap();
        runs += 1;
    }
    (runs * batch) as f64 / started.elapsed().as_secs_f64()
}

/// FP32 (ONNX Runtime) against BF16 (OpenVINO) in this process, 2 threads, batch 1 and 8, taken
/// in turn three times: `cargo test --release -p arbiter-infer --test bf16 -- --ignored
/// --nocapture` (docs/int8.md).
#[test]
#[ignore = "a measurement: run it on a quiet machine"]
fn bf16_speed_against_fp32() {
    if !CpuOffers::detect().bf16() {
        eprintln!("this CPU has no BF16");
        return;
    }
    let mut bf16 = load(8).unwrap();
    let mut fp32 = Engine::load(&options(8)).unwrap();
    let input = references().remove(0).1;
    for round in 1..=3 {
        for batch in [1, 8] {
            let a = speed(&mut fp32, &input, batch, 3.0);
            let b = speed(&mut bf16, &input, batch, 3.0);
            eprintln!(
                "round {round} batch {batch}: FP32 (ONNX Runtime) {a:.1} img/s, BF16 (OpenVINO) {b:.1} img/s, {:.2}x",
                b / a
            );
        }
    }
}

/// Images per second of `lanes` together, each running batches of 1 on a thread of its own for
/// `seconds` (the sum of their rates: their windows overlap but for a warm-up).
fn lanes_speed(lanes: &mut [Engine], input: &[f32], seconds: f64) -> f64 {
    std::thread::scope(|s| {
        let threads: Vec<_> = lanes
            .iter_mut()
            .map(|lane| s.spawn(move || speed(lane, input, 1, seconds)))
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).sum()
    })
}

/// This process's resident memory in MiB (`VmRSS`), after glibc gave back what it holds free
/// (reading a model frees much: that is not what the model costs).
#[allow(unsafe_code)]
fn resident_mib() -> f64 {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> i32;
    }
    // SAFETY: malloc_trim only returns glibc's free memory to the system.
    unsafe { malloc_trim(0) };
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// BF16 at batch 1 on 2 threads, taken in turn eight times, 2 s each: the engine itself (latency mode: one
/// stream of 2 threads, one request at a time) against its 2 lanes (throughput mode: one
/// compilation, 2 streams of 1 thread, an infer request each, driven by 2 threads), and one lane
/// alone at the end; with the memory each adds. `cargo test --release -p arbiter-infer --test bf16 --
/// --ignored --nocapture` (docs/int8.md).
#[test]
#[ignore = "a measurement: run it on a quiet machine"]
fn bf16_lanes_against_latency_mode() {
    if !CpuOffers::detect().bf16() {
        eprintln!("this CPU has no BF16");
        return;
    }
    init_runtime(Some(&setup::onnxruntime())).unwrap();
    let start = resident_mib();
    let mut engine = load(1).unwrap().with_lanes(true);
    let before = resident_mib();
    let mut lanes = engine.take_lanes().unwrap().load().unwrap();
    eprintln!(
        "resident: the engine (latency mode) adds {:.0} MiB, its {} lanes (throughput mode, the same source) {:.0} MiB more",
        before - start,
        lanes.len(),
        resident_mib() - before
    );
    let input = references().remove(0).1;
    let mut ratios = Vec::new();
    for round in 1..=8 {
        let latency = speed(&mut engine, &input, 1, 2.0);
        let throughput = lanes_speed(&mut lanes, &input, 2.0);
        ratios.push(throughput / latency);
        eprintln!(
            "round {round} batch 1: latency mode {latency:.1} img/s, {} lanes {throughput:.1} img/s, {:.2}x",
            lanes.len(),
            throughput / latency
        );
    }
    ratios.sort_by(f64::total_cmp);
    let alone = speed(&mut lanes[0], &input, 1, 2.0);
    eprintln!(
        "lanes against latency mode: median {:.2}x (from {:.2}x to {:.2}x); one lane alone {alone:.1} img/s",
        (ratios[3] + ratios[4]) / 2.0,
        ratios[0],
        ratios[7]
    );
}
