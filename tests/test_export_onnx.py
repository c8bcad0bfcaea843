"""ONNX export: ONNX Runtime runs what cdnn writes and predicts what cdnn predicts."""

import numpy as np
import pytest

import cdnn
from cdnn import layers

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

ACTIVATIONS = [
    "relu",
    "sigmoid",
    "tanh",
    "softmax",
    "leaky_relu",
    "gelu",
    "linear",
    "elu",
    "selu",
    "silu",
    "softplus",
    "softsign",
    "hard_sigmoid",
    "hard_silu",
    "mish",
    "relu6",
    "exponential",
    "log_softmax",
]


def _run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    return session.run(None, {inp.name: x})[0]


def _model(hidden_activation, shape=(6, 5), units=(33, 7), out="softmax"):
    cdnn.utils.set_random_seed(11)
    stack = [layers.Input(shape=shape)] + ([layers.Flatten()] if len(shape) > 1 else [])
    for u in units:
        stack += [layers.Dense(u, activation=hidden_activation), layers.Dropout(0.3)]
    stack += [layers.Dense(3, activation=out)]
    return cdnn.Sequential(stack, name="exported")


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("batch", [1, 7, 1000])
def test_onnx_runtime_predicts_what_cdnn_predicts(tmp_path, activation, batch):
    model = _model(activation)
    x = np.random.default_rng(batch).standard_normal((batch, 6, 5)).astype(np.float32)
    model.export(tmp_path / "m.onnx", format="onnx", verbose=False)
    np.testing.assert_allclose(_run(tmp_path / "m.onnx", x), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


def test_exported_graph_has_a_dynamic_batch_no_dropout_and_the_opset_asked(tmp_path, capsys):
    model = _model("relu", shape=(784,), units=(1,), out="sigmoid")
    model.export(str(tmp_path / "m.onnx"), format="onnx")
    assert capsys.readouterr().out == f"Saved artifact at '{tmp_path / 'm.onnx'}'.\n"
    proto = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(proto)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and dims[1].dim_value == 784
    assert "Dropout" not in {n.op_type for n in proto.graph.node}
    assert proto.opset_import[0].version == 17
    model.export(tmp_path / "m18.onnx", format="onnx", verbose=False, opset_version=18)
    assert onnx.load(str(tmp_path / "m18.onnx")).opset_import[0].version == 18
    x = np.random.default_rng(0).random((3, 784), dtype=np.float32)
    np.testing.assert_allclose(_run(tmp_path / "m18.onnx", x), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_export_refuses_what_it_cannot_write(tmp_path):
    model = _model("relu")
    with pytest.raises(ValueError, match="tf_saved_model"):
        model.export(tmp_path / "m")
    with pytest.raises(ValueError, match="opset_version"):
        model.export(tmp_path / "m.onnx", format="onnx", opset_version=7)
    with pytest.raises(ValueError, match="input_signature"):
        model.export(tmp_path / "m.onnx", format="onnx", input_signature=[(None, 30)])
    with pytest.raises(TypeError, match="unsupported"):
        model.export(tmp_path / "m.onnx", format="onnx", dynamic_axes=True)
    unbuilt = cdnn.Sequential([layers.Dense(3)])
    with pytest.raises(ValueError, match="not built"):
        unbuilt.export(tmp_path / "m.onnx", format="onnx")
