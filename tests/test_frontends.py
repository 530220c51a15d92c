"""Frontend plugins; PyTorch and Keras conversions; the same architecture gives the same features."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from npower import NpowerError, analyze
from npower.cli import main
from npower.features import extract
from npower.frontend import discover, to_onnx
from npower.graph import load_graph

from conftest import linear_pack, need_shared

pytestmark = pytest.mark.frameworks  # loads PyTorch and TensorFlow: runs last (see conftest)


def costed_layers(model) -> list[tuple[str, tuple, float]]:
    """(op kind, output shape, MACs) of every layer that costs time, in order."""
    rows = []
    for node in load_graph(model).nodes:
        layer = extract(node)
        if layer.kind not in ("free", "unknown", "unresolved"):
            rows.append((layer.kind, node.outputs[0].shape, layer.specials.get("macs", 0.0)))
    return rows


def test_builtin_frontends_are_entry_points(capsys):
    assert {"caffe", "torch", "tensorflow"} <= set(discover())
    assert main(["frontends"]) == 0
    assert "caffe" in capsys.readouterr().out


def test_third_party_plugin_registers_without_touching_npower(tmp_path, monkeypatch):
    package = tmp_path / "acme_frontend.py"
    package.write_text(textwrap.dedent('''
        from npower import zoo
        class Acme:
            name, description, suffixes, extra, requires = "acme", "Acme nets", (".acme",), "acme", ()
            def accepts(self, source):
                return str(source).endswith(".acme")
            def convert(self, source, batch=None, input_shapes=None, **options):
                return zoo.build("alexnet", batch=batch or 1, weights=False)
        FRONTEND = Acme()
    '''))
    dist = tmp_path / "acme_frontend-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-frontend\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[npower.frontends]\nacme = acme_frontend:FRONTEND\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    net = tmp_path / "model.acme"
    net.write_text("whatever")
    assert "acme" in discover()
    assert analyze(str(net), gpu=linear_pack(), batch=2).batch == 2


def test_missing_dependency_says_what_to_install(monkeypatch, tmp_path):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    model = tmp_path / "m.pt"
    model.write_bytes(b"x")
    with pytest.raises(NpowerError, match=r"pip install 'npower\[torch\]'"):
        to_onnx(str(model))


def test_unknown_model_type_lists_frontends(tmp_path):
    odd = tmp_path / "m.xyz"
    odd.write_text("?")
    with pytest.raises(NpowerError, match="no frontend reads '.xyz'; installed frontends: caffe"):
        to_onnx(str(odd))


# ---------------------------------------------------------------------------------------------
torch = pytest.importorskip("torch", reason="PyTorch frontend tests need npower[torch]")
nn = torch.nn


class TorchLeNet(nn.Module):
    """The layers of Caffe's lenet.prototxt."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 20, 5), nn.Conv2d(20, 50, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.ip1, self.ip2 = nn.Linear(800, 500), nn.Linear(500, 10)

    def forward(self, x):
        x = self.pool(self.conv2(self.pool(self.conv1(x))))
        return torch.softmax(self.ip2(torch.relu(self.ip1(torch.flatten(x, 1)))), dim=1)


class TorchAlexNet(nn.Module):
    """The layers of Caffe's bvlc_alexnet.prototxt (LRN and grouped convolutions optional)."""

    def __init__(self, lrn: bool = True, groups: int = 2, fc: int = 4096):
        super().__init__()
        norm = (lambda: [nn.LocalResponseNorm(5, 1e-4, 0.75)]) if lrn else (lambda: [])
        self.features = nn.Sequential(
            nn.Conv2d(3, 96, 11, 4), nn.ReLU(), *norm(), nn.MaxPool2d(3, 2),
            nn.Conv2d(96, 256, 5, padding=2, groups=groups), nn.ReLU(), *norm(),
            nn.MaxPool2d(3, 2), nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 384, 3, padding=1, groups=groups), nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1, groups=groups),
            nn.ReLU(), nn.MaxPool2d(3, 2))
        self.classifier = nn.Sequential(nn.Linear(9216, fc), nn.ReLU(), nn.Linear(fc, fc), nn.ReLU(),
                                        nn.Linear(fc, 1000))

    def forward(self, x):
        return torch.softmax(self.classifier(torch.flatten(self.features(x), 1)), dim=1)


def torch_model(name):
    return {"lenet": TorchLeNet, "alexnet": TorchAlexNet}[name]().eval()


SHAPES = {"lenet": (1, 1, 28, 28), "alexnet": (1, 3, 227, 227)}
CAFFE = {"lenet": "lenet.prototxt", "alexnet": "bvlc_alexnet.prototxt"}


def caffe_file(name: str) -> str:
    """A shared Caffe prototxt (skips the test when the shared data folder is absent)."""
    return str(need_shared("models", "caffe") / CAFFE[name])


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_torch_module_matches_caffe_layer_for_layer(exporter):
    from npower_frontends.torch import FRONTEND
    model = FRONTEND.convert(torch_model("lenet"), input_shapes={"input": SHAPES["lenet"]}, exporter=exporter)
    caffe = to_onnx(caffe_file("lenet"), batch=1)
    assert costed_layers(model) == costed_layers(caffe)


def test_torchscript_file_and_dynamic_batch(tmp_path):
    scripted = torch.jit.trace(torch_model("lenet"), torch.randn(*SHAPES["lenet"]))
    path = tmp_path / "lenet.pt"
    scripted.save(str(path))
    out = tmp_path / "lenet.onnx"
    assert main(["convert", str(path), "-o", str(out), "--input-shape", "input=1x1x28x28", "--dynamic-batch"]) == 0
    graph_input = load_graph(str(out), batch=16).inputs[0]
    assert graph_input.shape == (16, 1, 28, 28)
    report = analyze(str(path), gpu=linear_pack(), input_shapes={"input": (4, 1, 28, 28)})
    assert report.batch == 4


def test_exported_program_file(tmp_path):
    program = torch.export.export(torch_model("lenet"), (torch.randn(*SHAPES["lenet"]),))
    path = tmp_path / "lenet.pt2"
    torch.export.save(program, str(path))
    model = to_onnx(str(path))
    assert costed_layers(model) == costed_layers(to_onnx(caffe_file("lenet"), batch=1))


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_failed_torch_export_names_the_operator(exporter):
    class Bad(nn.Module):
        def forward(self, x):
            return torch.linalg.eig(x)[0].real

    from npower_frontends.torch import FRONTEND
    with pytest.raises(NpowerError, match=r"PyTorch export to ONNX failed .*linalg_eig") as info:
        FRONTEND.convert(Bad(), input_shapes={"input": (2, 3, 3)}, exporter=exporter)
    assert "\n" not in str(info.value)


def convert_prints(path, tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "npower.cli", "convert", str(path), "-o", str(tmp_path / "m.onnx")],
                          capture_output=True, text=True)


def test_torch_conversion_prints_one_line(tmp_path):
    path = tmp_path / "lenet.pt2"
    torch.export.save(torch.export.export(torch_model("lenet"), (torch.randn(*SHAPES["lenet"]),)), str(path))
    result = convert_prints(path, tmp_path)
    assert result.returncode == 0 and result.stderr == ""  # no exporter, torchvision or TensorFlow log lines
    assert result.stdout.startswith("wrote ") and len(result.stdout.splitlines()) == 1


# ---------------------------------------------------------------------------------------------
tf = pytest.importorskip("tensorflow", reason="Keras frontend tests need npower[tensorflow]")
pytest.importorskip("tf2onnx")
keras = tf.keras


KERAS_FC = 256  # classifier width of the Keras AlexNet (see test_alexnet_same_features_in_three_frameworks)


def keras_model(name, fc: int = 4096):
    layers = keras.layers
    if name == "lenet":
        return keras.Sequential([keras.Input((28, 28, 1)), layers.Conv2D(20, 5), layers.MaxPooling2D(2),
                                 layers.Conv2D(50, 5), layers.MaxPooling2D(2), layers.Flatten(),
                                 layers.Dense(500, activation="relu"), layers.Dense(10, activation="softmax")])
    return keras.Sequential([  # AlexNet without LRN (no Keras layer) and groups (tf2onnx leaves them unresolved)
        keras.Input((227, 227, 3)), layers.Conv2D(96, 11, 4, activation="relu"),
        layers.MaxPooling2D(3, 2), layers.Conv2D(256, 5, padding="same", activation="relu"),
        layers.MaxPooling2D(3, 2), layers.Conv2D(384, 3, padding="same", activation="relu"),
        layers.Conv2D(384, 3, padding="same", activation="relu"),
        layers.Conv2D(256, 3, padding="same", activation="relu"), layers.MaxPooling2D(3, 2),
        layers.Flatten(), layers.Dense(fc, activation="relu"), layers.Dense(fc, activation="relu"),
        layers.Dense(1000, activation="softmax")])


def test_keras_lenet_matches_caffe_and_torch_and_computes_the_same():
    from npower_frontends.tensorflow import FRONTEND
    model = keras_model("lenet")
    onnx_model = FRONTEND.convert(model, batch=1)
    assert "Transpose" not in [n.op_type for n in onnx_model.graph.node]
    caffe = costed_layers(to_onnx(caffe_file("lenet"), batch=1))
    keras_layers = costed_layers(onnx_model)
    # Keras fuses the Dense activation (relu) the way Caffe writes it as a layer: same list.
    assert keras_layers == caffe
    ort = pytest.importorskip("onnxruntime")
    x = np.random.default_rng(0).standard_normal((1, 28, 28, 1)).astype(np.float32)
    expected = model(x).numpy()
    session = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.transpose(0, 3, 1, 2)})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_keras_files_and_saved_model(tmp_path):
    model = keras_model("lenet")
    path = tmp_path / "lenet.keras"
    model.save(path)
    caffe = costed_layers(to_onnx(caffe_file("lenet"), batch=3))
    assert costed_layers(to_onnx(str(path), batch=3)) == caffe
    saved = tmp_path / "saved"
    model.export(str(saved))
    assert costed_layers(to_onnx(str(saved), batch=3, input_shapes={"input": (3, 1, 28, 28)})) == caffe


def test_keras_conversion_prints_one_line(tmp_path):
    path = tmp_path / "lenet.keras"
    keras_model("lenet").save(path)
    result = convert_prints(path, tmp_path)
    assert result.returncode == 0 and result.stderr == ""  # no TensorFlow/absl/oneDNN log lines
    assert result.stdout.startswith("wrote ") and len(result.stdout.splitlines()) == 1


def test_alexnet_same_features_in_three_frameworks():
    from npower_frontends.tensorflow import FRONTEND as KERAS
    from npower_frontends.torch import FRONTEND as TORCH
    # PyTorch exports LocalResponseNorm as primitive ops (Pow, Pad, AveragePool, Mul...), not ONNX LRN,
    # so the comparison leaves LRN out: every other layer must agree exactly.
    caffe = costed_layers(to_onnx(caffe_file("alexnet"), batch=1))
    def from_torch(**kw):
        return costed_layers(TORCH.convert(TorchAlexNet(**kw).eval(), exporter="torchscript",
                                           input_shapes={"input": SHAPES["alexnet"]}))
    assert [row for row in caffe if row[0] != "lrn"] == from_torch(lrn=False)
    # tf2onnx needs ~70x the weight bytes in RAM (15 GB for AlexNet's 4096-wide classifier), so Keras
    # is compared on the same convolution stack with a narrower classifier: the same layer facts per layer.
    narrow = costed_layers(KERAS.convert(keras_model("alexnet", fc=KERAS_FC), batch=1))
    assert narrow == from_torch(lrn=False, groups=1, fc=KERAS_FC)
