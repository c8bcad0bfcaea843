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


# ---- functional models and the graph's layers ------------------------------------------------------
def _session_run(path, feeds):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session, session.run(None, feeds)


def _graph_model():
    """Two inputs, two outputs; every layer of the graph; BatchNorm after a Dense (folded) and not."""
    from cdnn import keras as ck

    L = ck.layers
    cdnn.utils.set_random_seed(12)
    a, b = L.Input((2, 6), name="pixels"), L.Input((5,), name="meta")
    x = L.Rescaling(0.5, offset=0.25)(a)
    norm = L.Normalization()
    norm.adapt(np.random.default_rng(1).random((50, 2, 6)) * 4 - 1)
    x = L.Normalization(mean=[0.5] * 6, variance=[2.0] * 6, invert=True)(norm(x))
    x = L.BatchNormalization()(L.Dense(4)(x))  # folded into the Dense
    x = L.LayerNormalization(epsilon=1e-2)(L.GaussianNoise(0.3)(x))
    x = L.Reshape((8,))(L.Activation("gelu")(x))
    y = L.BatchNormalization(center=False)(L.Dense(8, activation="relu")(b))  # after an activation: not folded
    y = L.Dropout(0.5)(L.LeakyReLU(0.1)(y))
    inner = ck.Sequential([L.Input((8,)), L.Dense(8), L.ReLU(), L.Identity()], name="inner")
    merged = [L.Add()([x, y]), L.Subtract()([x, y]), L.Multiply()([x, y])]
    merged += [L.Average()([x, y, inner(y)]), L.Maximum()([x, y]), L.Minimum()([x, y])]
    z = L.Concatenate()([L.Flatten()(L.Reshape((2, 4))(m)) for m in merged])
    kind = L.Softmax()(L.Dense(3)(z))
    price = L.Dense(1, name="price")(z)
    model = ck.Model({"pixels": a, "meta": b}, {"kind": kind, "price": price}, name="graph")
    # non-trivial moving statistics
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            rng = np.random.default_rng(len(layer.name))
            layer.moving_mean[...] = rng.standard_normal(layer.moving_mean.shape)
            layer.moving_variance[...] = rng.random(layer.moving_variance.shape) + 0.5
            if layer.gamma is not None:
                layer.gamma[...] = rng.random(layer.gamma.shape) + 0.5
    return model


@pytest.mark.parametrize("opset", [17, 13])
@pytest.mark.parametrize("batch", [1, 7, 1000])
def test_onnx_functional_multi_io_every_layer_predicts_what_cdnn_predicts(tmp_path, batch, opset):
    model = _graph_model()
    rng = np.random.default_rng(batch)
    feeds = {
        "pixels": rng.random((batch, 2, 6), dtype=np.float32),
        "meta": rng.standard_normal((batch, 5)).astype(np.float32),
    }
    model.export(tmp_path / "g.onnx", format="onnx", verbose=False, opset_version=opset)
    session, got = _session_run(tmp_path / "g.onnx", feeds)
    assert [i.name for i in session.get_inputs()] == ["pixels", "meta"]
    assert [o.name for o in session.get_outputs()] == ["kind", "price"]
    want = model.predict(feeds, verbose=0)
    for name, value in zip(["kind", "price"], got):
        np.testing.assert_allclose(value, want[name], rtol=1e-5, atol=1e-5)
    ops = [n.op_type for n in onnx.load(str(tmp_path / "g.onnx")).graph.node]
    assert "Dropout" not in ops and "RandomNormalLike" not in ops
    assert ("LayerNormalization" in ops) == (opset >= 17)
    # one BatchNormalization folded (no Mul for it), the other an affine map
    assert sum(1 for n in onnx.load(str(tmp_path / "g.onnx")).graph.initializer if "batch_normalization" in n.name) == 2


def test_onnx_training_flags_as_keras_export(tmp_path):
    """Keras exports ``model(x, training=False)``: a functional graph's recorded training=True is overridden,
    a subclassed call's explicit one stays (random ops); a training-mode BatchNormalization is refused."""
    from cdnn import keras as ck

    L = ck.layers
    a = L.Input((3,))
    model = ck.Model(a, L.Dense(2)(L.Dropout(0.5)(a, training=True)))
    model.export(tmp_path / "f.onnx", format="onnx", verbose=False)
    x = np.ones((4000, 3), np.float32)
    session = ort.InferenceSession(str(tmp_path / "f.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)

    class Net(ck.Model):
        def __init__(self, layer):
            super().__init__()
            self.d, self.layer = L.Dense(4, kernel_initializer="ones"), layer

        def call(self, x, training=None):
            return self.layer(self.d(x), training=True)

    for layer, check in (
        (L.Dropout(0.25), lambda y: abs((y == 0).mean() - 0.25) < 0.02 and np.allclose(y[y != 0], 4.0)),
        (L.GaussianNoise(0.5), lambda y: abs((y - 3.0).std() - 0.5) < 0.02 and abs((y - 3.0).mean()) < 0.02),
    ):
        net = Net(layer)
        net(x[:2])
        net.export(tmp_path / "s.onnx", format="onnx", verbose=False)
        session = ort.InferenceSession(str(tmp_path / "s.onnx"), providers=["CPUExecutionProvider"])
        assert check(session.run(None, {session.get_inputs()[0].name: x})[0])
    net = Net(L.BatchNormalization())
    net(x[:2])
    with pytest.raises(ValueError, match="BatchNormalization.*training=True"):
        net.export(tmp_path / "b.onnx", format="onnx", verbose=False)
