"""Regression tests for the failure signatures the fuzzer found (issue 15): one small case each.

Every case must end in NpowerError (the CLI's one line and exit 2), never a traceback, hang or crash.
"""
from __future__ import annotations

import math
import os

import pytest
import yaml
from onnx import TensorProto, helper

from npower import NpowerError, analyze
from npower.cli import main
from npower.pack import load_pack, pack_from_dict
from npower.polynomial import SparsePolynomial
from npower_frontends.caffe import FRONTEND, convert_prototxt
from npower_frontends.caffe_text import parse_prototxt

from conftest import linear_pack, single_node_model

HEAD = 'input: "data" input_shape { dim: 1 dim: 3 dim: 16 dim: 16 }\n'


def conv(params: str, layer_type: str = "Convolution") -> str:
    return HEAD + f'layer {{ name: "c1" type: "{layer_type}" bottom: "data" top: "c1"\n convolution_param {{ {params} }} }}\n'


def pool(params: str) -> str:
    return HEAD + f'layer {{ name: "p1" type: "Pooling" bottom: "data" top: "p1"\n pooling_param {{ {params} }} }}\n'


@pytest.mark.parametrize("text, message", [
    (conv('num_output: "str" kernel_size: 3'), r"net:3: layer 'c1': convolution_param.num_output must be an integer"),
    (conv("num_output { } kernel_size: 3"), r"num_output must be an integer .* got a \{ ... \} block"),
    (pool("pool: MAX kernel_size: 2 pad: MAX"), r"pooling_param.pad must be an integer"),
    (conv("num_output: 4 kernel_size: 99999999999999999999"), r"kernel_size must be an integer from 1 to 4294967295"),
    (conv("num_output: 4 kernel_size: 1099511627776"), r"kernel_size must be an integer from 1 to 4294967295"),
    (conv("num_output: 4 kernel_size: 3 stride: 0"), r"convolution_param.stride must be an integer from 1"),
    (pool("pool: MAX kernel_size: 2 stride: 0"), r"pooling_param.stride must be an integer from 1"),
    (conv("num_output: 1.5 kernel_size: 2", "Deconvolution"), r"num_output must be an integer .* got 1.5"),
    (pool("pool: AVE kernel_size: 20"), r"layer 'p1': pooling window \[20, 20\] .* does not fit input"),
    (conv("num_output: 4 kernel_size: 3 group: 2"), r"group 2 must divide the input channels \(3\)"),
    (conv("num_output: 4 kernel_size: 3 dilation: 0"), r"dilation must be an integer from 1"),
    (conv("num_output: 4 kernel_size: 30"), r"layer 'c1': .*the window does not fit the input"),
])
def test_caffe_field_type_and_range_errors_name_layer_field_and_line(text, message):
    with pytest.raises(NpowerError, match=message):
        convert_prototxt(text, "net")


@pytest.mark.parametrize("layer, message", [
    ('type: "InnerProduct" bottom: "data" top: "f" inner_product_param { num_output: 4 axis: 7 }', r"axis must be an integer from -4 to 3"),
    ('type: "Concat" bottom: "data" bottom: "data" top: "f" concat_param { axis: -9 }', r"axis must be an integer from -4 to 3"),
    ('type: "Flatten" bottom: "data" top: "f" flatten_param { axis: 2 end_axis: 1 }', r"end_axis \(1\) comes before axis"),
    ('type: "LRN" bottom: "data" top: "f" lrn_param { local_size: 0 }', r"local_size must be an integer from 1"),
    ('type: "LRN" bottom: "data" top: "f" lrn_param { alpha: nan }', r"lrn_param.alpha must be a finite number"),
    ('type: "ReLU" top: "f"', r"layer 'x': bottom count is 0: a ReLU layer takes 1"),
    ('type: "ReLU" bottom: "data"', r"layer 'x': top is missing"),
    ('type: "Pooling" bottom: "data" top: "f" pooling_param: "x"', r"pooling_param must be a \{ ... \} block"),
    ('type: "Reshape" bottom: "data" top: "f" reshape_param { shape { dim: 0 dim: -1 dim: 7 } }', r"does not divide"),
    ('type: "Slice" bottom: "data" top: "a" top: "b" slice_param { axis: 1 slice_point: 9 }', r"slice_point \[9\] must rise"),
    ('type: "Eltwise" bottom: "data" bottom: "data" top: "f" eltwise_param { coeff: 1 }', r"coeff has 1 values for 2"),
    ('type: "Power" bottom: "data" top: "f" power_param { power: inf }', r"power_param.power must be a finite number"),
])
def test_caffe_layer_parameters_out_of_range(layer, message):
    with pytest.raises(NpowerError, match=message):
        convert_prototxt(HEAD + f'layer {{ name: "x" {layer} }}', "net")


def test_caffe_convolution_turned_lrn_keeps_working_with_leftover_fields():
    text = conv("num_output: 4 kernel_size: 3", "LRN")
    assert [n.op_type for n in convert_prototxt(text).graph.node] == ["LRN"]


def test_caffe_input_shape_given_as_a_number():
    text = 'layer { name: "in" type: "Input" top: "data" input_param { shape: 5 } }'
    with pytest.raises(NpowerError, match=r"layer 'in': input_param.shape must be a \{ ... \} block, got 5"):
        convert_prototxt(text)


def test_caffe_string_escapes_and_nesting_are_bounded():
    with pytest.raises(NpowerError, match=r"net:1:7: invalid escape"):
        parse_prototxt(r'name: "\x"', "net")  # \x with no hex digit
    assert parse_prototxt(r'name: "a\101\x42\n\u00e9"')["name"] == ["aAB\n\u00e9"]
    with pytest.raises(NpowerError, match="nested more than 64 levels"):
        parse_prototxt("a { " * 1100 + "}" * 1100, "net")


def test_caffe_huge_dims_are_refused_naming_layer_and_size_before_allocation():
    text = HEAD.replace("dim: 16 dim: 16", "dim: 65536 dim: 65536")
    with pytest.raises(NpowerError, match=r"input 'data' of shape \(1, 3, 65536, 65536\) has 1.29e\+10 elements \(51.5 GB\)"):
        convert_prototxt(text)
    wide = HEAD + 'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 400000 } }'
    with pytest.raises(NpowerError, match=r"net:2: layer 'fc': weight 'fc_w' of shape \(400000, 768\) needs 1.23 GB"):
        convert_prototxt(wide, "net", weights="random")
    assert convert_prototxt(wide, "net").graph.node[-1].op_type == "Gemm"  # shape-only weights: nothing allocated


def test_caffe_refuses_a_fifo(tmp_path):
    fifo = tmp_path / "net.prototxt"
    os.mkfifo(fifo)
    with pytest.raises(NpowerError, match="not a regular file"):
        FRONTEND.convert(str(fifo))


def test_onnx_undefined_element_type_and_empty_first_input():
    model = single_node_model("Relu", [("x", [1, 4])])
    model.graph.input[0].type.tensor_type.elem_type = -5
    with pytest.raises(NpowerError, match=r"tensor 'x' has element type -5, which ONNX does not define"):
        analyze(model, gpu=linear_pack())
    for op, weights in (("Conv", [("w", [4, 3, 3, 3])]), ("Gemm", [("w", [8, 5])]), ("Softmax", [])):
        empty = single_node_model(op, [("", [1, 3, 8, 8] if op == "Conv" else [2, 8])], weights=weights)
        with pytest.raises(NpowerError, match=rf"\({op}\) has no first input"):
            analyze(empty, gpu=linear_pack())


def test_batch_and_input_shape_bounds_before_binding():
    model = single_node_model("Relu", [("x", ["N", 4])])
    with pytest.raises(NpowerError, match="--batch must be from 1 to 2147483647"):
        analyze(model, gpu=linear_pack(), batch=10**30)
    with pytest.raises(NpowerError, match="--input-shape x: dimensions must be from 1"):
        analyze(model, gpu=linear_pack(), input_shapes={"x": (2**40, 4)})


@pytest.mark.parametrize("argv, message", [
    (["analyze", "m.onnx", "--gpu", "p", "--batch", "1e3"], "argument --batch: must be a whole number from 1"),
    (["analyze", "m.onnx", "--gpu", "p", "--batch", "1" + "0" * 30], "argument --batch: must be a whole number"),
    (["analyze", "m.onnx", "--gpu", "p", "--top", "-1"], "argument --top: must be a whole number from 0"),
    (["analyze", "m.onnx", "--gpu", "p", "--bogus"], "unrecognized arguments: --bogus"),
    ([], "the following arguments are required: command"),
])
def test_cli_usage_errors_are_one_line_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1 and err.startswith("npower: error: ") and message in err


def _pack_text(**device) -> str:
    data = linear_pack().to_dict()
    data["runtime"] = data["runtime"] if isinstance(data["runtime"], dict) else data["runtime"].to_dict()
    data["device"].update(device)
    return yaml.safe_dump(data)


def test_pack_integer_too_large_for_a_float(tmp_path):
    data = yaml.safe_load(_pack_text())
    data["models"]["conv"]["runtime"]["terms"][0]["coef"] = 10**43 * 10**400  # an integer no float can hold
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(NpowerError, match=r"models.conv.runtime.terms\[0\].coef: expected a finite number"):
        load_pack(path)
    with pytest.raises(NpowerError, match="exponent must be an integer from 1 to 16"):
        SparsePolynomial.from_dict({"target": "linear", "unit": "ms", "intercept": 0,
                                    "terms": [{"coef": 1, "powers": {"macs": 10**58}}]})


@pytest.mark.parametrize("text, message", [
    ("[" * 100000 + "]" * 100000, "nested more than 32 levels deep"),
    ("x: " + "{a: " * 50000 + "1" + "}" * 50000, "nested more than 32 levels deep"),
    ("a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)), "expands to more than 2,000,000"),
])
def test_pack_yaml_depth_and_alias_bombs_are_refused_before_building(tmp_path, text, message):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(NpowerError, match=message):
        load_pack(path)


def test_pack_folder_with_a_fifo_lists_it_as_invalid(tmp_path, capsys):
    linear_pack().save(tmp_path / "good.yaml")
    os.mkfifo(tmp_path / "fifo.yaml")
    assert main(["packs", "--profiles", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "fifo: INVALID (pack" in out and "not a regular file" in out and "good: Test Device" in out
    assert main(["analyze", "m.onnx", "--gpu", str(tmp_path / "fifo.yaml")]) == 2
    assert main(["analyze", "m.onnx", "--gpu", "/dev/zero"]) == 2
    assert "not a regular file" in capsys.readouterr().err


@pytest.mark.parametrize("field, value", [("bandwidth_gbs", 5e-324), ("peak_gflops", 1e300),
                                          ("bandwidth_gbs", math.inf), ("peak_gflops", -1.0)])
def test_pack_absurd_device_figures_are_rejected_naming_the_field(field, value):
    data = yaml.safe_load(_pack_text(**{field: value}))
    with pytest.raises(NpowerError, match=rf"field 'device.{field}' must be a number from"):
        pack_from_dict(data)


def test_prediction_overflow_is_an_error_not_inf_in_the_report():
    pack = linear_pack()
    pack.models["conv"].runtime.terms[0] = (1e300, {"macs": 3})
    model = single_node_model("Conv", [("x", [1, 3, 8, 8])], weights=[("w", [4, 3, 3, 3])])
    with pytest.raises(NpowerError, match=r"pack field models.conv.runtime predicts inf ms for layer 'n0'"):
        analyze(model, gpu=pack)


def test_packs_command_with_a_mistyped_validation_field(tmp_path, capsys):
    data = yaml.safe_load(_pack_text())
    data["provenance"]["validation"] = "high"
    (tmp_path / "odd.yaml").write_text(yaml.safe_dump(data))
    assert main(["packs", "--profiles", str(tmp_path)]) == 0
    assert "odd: Test Device" in capsys.readouterr().out


def test_report_of_a_valid_model_is_finite():
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="r")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]),
        opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    assert math.isfinite(analyze(model, gpu=linear_pack()).runtime_ms)


def test_empty_blob_and_output_names():
    with pytest.raises(NpowerError, match=r"layer 'r': bottom is missing or empty"):
        convert_prototxt(HEAD + 'layer { name: "r" type: "ReLU" bottom: "" top: "r" }')
    model = single_node_model("Conv", [("x", [1, 3, 8, 8])], weights=[("w", [4, 3, 3, 3])])
    model.graph.node[0].output[0] = ""
    model.graph.output[0].name = ""
    with pytest.raises(NpowerError):
        analyze(model, gpu=linear_pack())


def test_forced_caffe_frontend_on_a_zoo_model_and_a_huge_zoo_name(capsys):
    assert main(["analyze", "zoo:resnet50", "--gpu", "amd-epyc", "--frontend", "caffe"]) == 2
    assert main(["zoo", "9" * 300]) == 2
    err = capsys.readouterr().err
    assert "caffe frontend reads .prototxt files" in err and "unknown network" in err
