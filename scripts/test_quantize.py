#!/usr/bin/env python3
"""Tests of scripts/quantize.py: on a small convolutional model written here with onnx's helper,
calibrated on a few generated photos through a config's recipe, it writes a QDQ model and a
report whose figures are those of the two models' outputs; the report's measures on known arrays;
the config's model is picked by name.

Run: var/venv/bin/python scripts/test_quantize.py (scripts/test does).
"""

from __future__ import annotations

import json
import sys
import tempfile
import unittest
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quantize  # noqa: E402


def tiny_model(path: Path, classes: int = 10) -> None:
    """input [N,3,32,32] -> Conv 3->8 3x3 -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> [N,C]."""
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(0, 0.1, (8,)).astype(np.float32), "b")
    fw = numpy_helper.from_array(rng.normal(0, 0.5, (classes, 8)).astype(np.float32), "fw")
    fb = numpy_helper.from_array(np.zeros(classes, np.float32), "fb")
    nodes = [
        helper.make_node("Conv", ["input", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["output"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", classes])],
        [w, b, fw, fb])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def photos(folder: Path, n: int) -> None:
    folder.mkdir()
    rng = np.random.default_rng(2)
    for i in range(n):
        size = (40 + 7 * i, 36 + 5 * i)
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"p{i:02}.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    (folder / "bad").mkdir()


class QuantizeTiny(unittest.TestCase):
    def test_writes_a_qdq_model_and_its_report(self):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            tiny_model(tmp / "tiny.onnx")
            photos(tmp / "photos", 8)
            (tmp / "a.toml").write_text(
                '[[model]]\nname = "other"\npath = "nowhere.onnx"\nlabels = "l.json"\n'
                '[[model]]\nname = "tiny"\npath = "tiny.onnx"\nlabels = "l.json"\n'
                '[model.preprocess]\nresize = "shorter_side"\nshorter_side = 36\n'
                'interpolation = "bicubic"\n'
                '[model.postprocess]\noutput = "softmax"\ntop_k = 3\n')
            out = tmp / "out" / "tiny-int8.onnx"
            rc = quantize.main([str(tmp / "a.toml"), "--model", "tiny", "--out", str(out),
                                "--calibration", str(tmp / "photos"), "--speed-seconds", "0"])
            self.assertEqual(rc, 0)
            model = onnx.load(str(out))
            ops = {n.op_type for n in model.graph.node}
            self.assertIn("QuantizeLinear", ops)
            self.assertIn("DequantizeLinear", ops)
            report = json.loads(out.with_suffix(".json").read_text())
            s = report["settings"]
            self.assertEqual((s["format"], s["activation"], s["per_channel"]), ("QDQ", "u8", True))
            # 9 files sorted (broken.jpg first), every 4th held apart, each photo with its mirror
            # image; the broken one skipped.
            self.assertEqual(s["calibration_images"], 12)
            self.assertEqual(s["held_apart_images"], 4)
            self.assertEqual(report["held_apart_names"], ["p02.png", "p02.png:mirrored",
                                                          "p06.png", "p06.png:mirrored"])
            for label in ("calibration", "held_apart"):
                c = report[label]
                self.assertGreaterEqual(c["top1_agreement"], 0.5, c)
                self.assertLess(c["mean_abs_diff"], 0.1 * c["fp32_output_std"] + 0.05, c)
                self.assertNotIn("answer_agreement", c)  # a softmax model
            # The report's outputs are the two models' own on the recipe's tensor.
            import onnxruntime as ort
            recipe = quantize.Recipe(quantize.select_model(tmp / "a.toml", "tiny"),
                                     ort.InferenceSession(str(tmp / "tiny.onnx")))
            self.assertEqual((recipe.width, recipe.height), (32, 32))

    def test_several_models_need_a_name(self):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = Path(tmp) / "a.toml"
            cfg.write_text('[[model]]\nname = "a"\npath = "a.onnx"\n'
                           '[[model]]\nname = "b"\npath = "b.onnx"\n')
            with self.assertRaises(SystemExit) as e:
                quantize.select_model(cfg, None)
            self.assertIn("--model", str(e.exception))
            with self.assertRaises(SystemExit) as e:
                quantize.select_model(cfg, "c")
            self.assertIn("a, b", str(e.exception))
            self.assertEqual(quantize.select_model(cfg, "b")["path"], "b.onnx")


class Measures(unittest.TestCase):
    def recipe(self, post: dict) -> quantize.Recipe:
        r = quantize.Recipe.__new__(quantize.Recipe)
        r.post, r.pre, r.threshold = post, {}, 0.5
        return r

    def test_softmax_model(self):
        fp32 = np.array([[5.0, 0, 0, 0, 0, 0], [0.1, 0.2, 0, 0, 0, 0]])
        int8 = np.array([[4.9, 0, 0, 0, 0, 0.1], [0.2, 0.1, 0, 0, 0, 0]])
        c = quantize.compare(fp32, int8, self.recipe({"output": "softmax"}))
        self.assertEqual(c["top1_agreement"], 0.5)
        self.assertEqual(c["confident_images"], 1)  # only the first has p >= 0.5
        self.assertEqual(c["confident_top1_agreement"], 1.0)
        self.assertAlmostEqual(c["max_abs_diff"], 0.1)
        self.assertAlmostEqual(c["fp32_output_std"], fp32.std())

    def test_threshold_model_answers(self):
        fp32 = np.array([[0.6, 0.1, 0.9], [0.49, 0.0, 0.0]])
        int8 = np.array([[0.61, 0.1, 0.88], [0.51, 0.0, 0.0]])
        c = quantize.compare(fp32, int8, self.recipe({}))
        self.assertEqual(c["answer_agreement"], 0.5)  # the second crosses the threshold
        self.assertAlmostEqual(c["fp32_outputs_near_threshold"], 2 / 6)  # 0.6 and 0.49

    def test_fp32_operators(self):
        dq = helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["x"])
        conv = helper.make_node("Conv", ["x", "w"], ["y"])
        soft = helper.make_node("Softmax", ["y"], ["z2"])
        graph = helper.make_graph([dq, conv, soft], "g", [], [])
        self.assertEqual(quantize.fp32_operators(helper.make_model(graph)), {"Softmax": 1})


if __name__ == "__main__":
    unittest.main()
