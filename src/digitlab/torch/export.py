"""ONNX export of any digitlab model, straight from its architecture spec and NumPy weights.

Each layer maps to one standard ONNX operator (``Dense`` -> ``Gemm``, ``Conv2D`` -> ``Conv``,
``BatchNorm`` -> ``BatchNormalization``, ...; ``Dropout`` is the identity at inference and is left out),
so the graph is the model as the NumPy engine computes it, and the export needs only the ``onnx``
package (no PyTorch, no tracing). The input ``"images"`` is float32 ``(N, *input_shape)`` in [0, 1]
with a free batch size; the output ``"logits"`` is ``(N, classes)``. The model's spec, with its card
(``meta``), travels in the file's metadata under ``"digitlab_spec"``, so `OnnxModel` knows the class
names and input shape.

`check_onnx` runs the file in onnxruntime and compares it with the NumPy model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from digitlab.errors import DigitlabError

OPSET = 17
IR_VERSION = 8  # opset 17's minimum: readable by every onnxruntime since 1.13
SPEC_KEY = "digitlab_spec"


def _onnx():
    try:
        import onnx
    except ImportError:
        raise DigitlabError("ONNX export needs the onnx package: pip install 'digitlab[torch]'") from None
    return onnx


def _pads(padding) -> list[int]:
    ph, pw = padding
    return [ph, pw, ph, pw]


def to_onnx_model(model) -> Any:
    """The ``onnx.ModelProto`` of a NumPy `Sequential` (float32)."""
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    x = "images"

    def init(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr, dtype=np.float32), name))
        return name

    for i, (layer, spec) in enumerate(zip(model.layers, model.spec()["layers"], strict=True)):
        kind, out, p = spec["type"], f"{i}.out", {**layer.params, **layer.buffers}
        if kind == "Dropout":
            continue
        if kind == "Dense":  # y = x @ W + b with W (in, out): Gemm without transposes
            inputs = [x, init(f"{i}.W", p["W"])] + ([init(f"{i}.b", p["b"])] if "b" in p else [])
            nodes.append(helper.make_node("Gemm", inputs, [out], name=f"{i}.Dense"))
        elif kind == "Conv2D":
            inputs = [x, init(f"{i}.W", p["W"])] + ([init(f"{i}.b", p["b"])] if "b" in p else [])
            nodes.append(helper.make_node("Conv", inputs, [out], name=f"{i}.Conv2D",
                                          kernel_shape=list(spec["kernel_size"]), strides=list(spec["stride"]),
                                          pads=_pads(spec["padding"])))
        elif kind == "BatchNorm":
            inputs = [x] + [init(f"{i}.{k}", p[k]) for k in ("gamma", "beta", "running_mean", "running_var")]
            nodes.append(helper.make_node("BatchNormalization", inputs, [out], name=f"{i}.BatchNorm",
                                          epsilon=float(spec.get("eps", 1e-5))))
        elif kind in ("MaxPool2D", "AvgPool2D"):
            attrs = {"kernel_shape": list(spec["kernel_size"]), "strides": list(spec["stride"]),
                     "pads": _pads(spec["padding"])}
            if kind == "AvgPool2D":
                attrs["count_include_pad"] = 1  # as the NumPy AvgPool2D and PyTorch's default
            nodes.append(helper.make_node("MaxPool" if kind == "MaxPool2D" else "AveragePool", [x], [out],
                                          name=f"{i}.{kind}", **attrs))
        elif kind == "GlobalAvgPool":
            nodes.append(helper.make_node("GlobalAveragePool", [x], [f"{i}.pooled"], name=f"{i}.GlobalAvgPool"))
            nodes.append(helper.make_node("Flatten", [f"{i}.pooled"], [out], name=f"{i}.Flatten", axis=1))
        elif kind == "Flatten":
            nodes.append(helper.make_node("Flatten", [x], [out], name=f"{i}.Flatten", axis=1))
        elif kind in ("ReLU", "Sigmoid", "Tanh"):
            nodes.append(helper.make_node({"ReLU": "Relu"}.get(kind, kind), [x], [out], name=f"{i}.{kind}"))
        elif kind == "LeakyReLU":
            nodes.append(helper.make_node("LeakyRelu", [x], [out], name=f"{i}.LeakyReLU",
                                          alpha=float(spec.get("alpha", 0.01))))
        else:
            raise DigitlabError(f"layer {i} ({kind}) has no ONNX export yet")
        x = out
    nodes.append(helper.make_node("Identity", [x], ["logits"], name="logits"))
    graph = helper.make_graph(
        nodes, "digitlab", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", *model.input_shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", len(model.classes)])], inits)
    proto = helper.make_model(graph, producer_name="digitlab", opset_imports=[helper.make_opsetid("", OPSET)])
    proto.ir_version = IR_VERSION
    helper.set_model_props(proto, {SPEC_KEY: json.dumps(model.spec())})
    onnx.checker.check_model(proto)
    return proto


def export_onnx(model, path: str | os.PathLike) -> Path:
    """Write ``model`` as ONNX to ``path`` (atomically: temp file, then rename)."""
    proto = to_onnx_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(proto.SerializeToString())
    os.replace(tmp, path)
    return path


def check_onnx(path: str | os.PathLike, model, x: np.ndarray, tolerance: float = 1e-4,
               batch_size: int = 1000) -> dict[str, float]:
    """Run the ``.onnx`` in onnxruntime on ``x`` and compare with the NumPy ``model``: the largest logit
    difference, relative to the largest logit magnitude (must be <= ``tolerance``), and the fraction of
    identical predictions."""
    from digitlab.torch.onnx_model import OnnxModel

    ours = model.predict_logits(x, batch_size=batch_size)
    theirs = OnnxModel(path).predict_logits(x, batch_size=batch_size)
    diff = float(np.abs(ours - theirs).max()) if len(x) else 0.0
    rel = diff / max(float(np.abs(ours).max()), 1e-12) if len(x) else 0.0
    same = float(np.mean(ours.argmax(1) == theirs.argmax(1))) if len(x) else 1.0
    result = {"images": int(len(x)), "max_abs_diff": diff, "max_rel_diff": rel, "same_predictions": same}
    if not rel <= tolerance:
        raise DigitlabError(f"{path}: onnxruntime's logits differ from the NumPy model's by {rel:.3g} (relative), "
                            f"more than {tolerance:g}: the export is wrong; please report it")
    return result
