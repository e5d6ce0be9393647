"""`cllm lattice lll|cvp|svp|bkz` through register()/run() and the stand-alone main()."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import flint
import pytest

from cllm.errors import CLLMError
from cllm.cli import main
from cllm.cli.lattice import register
from cllm.lattice.reduction import is_lll_reduced

CLASSIC = [[1, 1, 1], [-1, 0, 2], [3, 5, 6]]


def run_cli(argv, capsys):
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command")
    register(sub)
    args = p.parse_args(argv)
    assert args.func(args) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def basis_json(tmp_path):
    f = tmp_path / "basis.json"
    f.write_text(json.dumps(CLASSIC))
    return str(f)


def test_lll_json_and_text(basis_json, tmp_path, capsys):
    out = run_cli(["lattice", "lll", "--input", basis_json], capsys)
    assert out["command"] == "lll" and out["rank"] == 3 and is_lll_reduced(out["basis"])
    assert flint.fmpz_mat(out["transform"]) * flint.fmpz_mat(CLASSIC) == flint.fmpz_mat(out["basis"])
    txt = tmp_path / "basis.txt"
    txt.write_text("# classic example\n1 1 1\n-1 0 2\n\n3 5 6\n")
    out2 = run_cli(["lattice", "lll", "--input", str(txt), "--delta", "3/4"], capsys)
    assert out2["basis"] == [[0, 1, 0], [1, 0, 1], [-1, 0, 2]] and out2["delta"] == "3/4"


def test_svp_cvp_bkz(basis_json, tmp_path, capsys):
    out = run_cli(["lattice", "svp", "--input", basis_json], capsys)
    assert out == {"command": "svp", "vector": [0, -1, 0], "norm_squared": 1}
    out = run_cli(["lattice", "cvp", "--input", basis_json, "--target", "10", "-3", "1/2"], capsys)
    assert out["command"] == "cvp" and out["distance_squared"] == "1/4"
    out2 = run_cli(["lattice", "cvp", "--input", basis_json, "--target", "[10, -3, 0.5]"], capsys)
    assert out2["vector"] == out["vector"]
    tfile = tmp_path / "t.txt"
    tfile.write_text("10 -3 1\n")
    out3 = run_cli(["lattice", "cvp", "--input", basis_json, "--target", str(tfile)], capsys)
    assert out3["distance_squared"] == 0
    out = run_cli(["lattice", "bkz", "--input", basis_json, "--block-size", "3"], capsys)
    assert out["block_size"] == 3 and sum(a * a for a in out["basis"][0]) == 1


@pytest.mark.parametrize("content,target,msg", [
    (None, None, "not found"),
    ("[[1, 2], [3", None, "malformed JSON"),
    ("[[1, 2], [3]]", None, "different lengths"),
    ("1 2\n3 x\n", None, "line 2"),
    ("[[1, 2], [3, 4]]", ["1", "2", "3"], "length 3"),
    ("[[1.5, 2]]", None, "integers"),
])
def test_bad_input_raises(tmp_path, capsys, content, target, msg):
    f = tmp_path / "b.json"
    if content is not None:
        f.write_text(content)
    argv = ["lattice", "cvp" if target else "lll", "--input", str(f)] + (["--target", *target] if target else [])
    p = argparse.ArgumentParser()
    register(p.add_subparsers(dest="command"))
    args = p.parse_args(argv)
    with pytest.raises(CLLMError, match=msg):
        args.func(args)


def test_main_reports_errors(tmp_path, capsys):
    assert main(["lattice", "svp", "--input", str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cllm: error: input file not found") and err.count("\n") == 1
    f = tmp_path / "zero.json"
    f.write_text("[[0, 0]]")
    assert main(["lattice", "svp", "--input", str(f)]) == 2
    assert "rank 0" in capsys.readouterr().err


def test_module_entry_point(basis_json):
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-m", "cllm", "lattice", "svp", "--input", basis_json],
                       capture_output=True, text=True, cwd=root, timeout=60)
    assert r.returncode == 0 and json.loads(r.stdout)["norm_squared"] == 1
