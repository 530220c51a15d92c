"""`import npower` and `npower analyze` stay free of heavy frameworks."""
from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "tensorflow", "onnxruntime", "sklearn")


def test_import_and_analyze_do_not_load_heavy_modules(tmp_path, pack_dir):
    code = f"""
import sys, npower
from npower import zoo
from npower.cli import main
import onnx
onnx.save(zoo.build('resnet18', weights=False), r'{tmp_path}/m.onnx')
assert main(['analyze', r'{tmp_path}/m.onnx', '--gpu', 'testpack', '--profiles', r'{pack_dir}', '--format', 'json']) == 0
loaded = [m for m in {HEAVY!r} if m in sys.modules]
print('LOADED', loaded)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout
