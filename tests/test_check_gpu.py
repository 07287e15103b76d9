"""scripts/check_gpu.py at smoke size on the CPU: one table with the
documented columns and checks, the learning check passed, nothing overwritten, and its
memory counter checked against a planted computation."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check_gpu.py"


@pytest.fixture(scope="module")
def check_gpu():
    spec = importlib.util.spec_from_file_location("check_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_gpu"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("check_gpu", None)


@pytest.mark.slow  # the whole script end to end, every check at smoke size
def test_smoke_table_on_the_cpu(check_gpu, smoke_data_root, tmp_path, capsys):
    out = tmp_path / "gpu_check.csv"
    out.write_text("an earlier table\n")
    args = ["--device", "cpu", "--dataset", "disfa", "--data-root", str(smoke_data_root),
            "--out", str(out)]
    path = check_gpu.main(args)
    assert path == tmp_path / "gpu_check-v2.csv"  # the earlier table is never overwritten
    assert out.read_text() == "an earlier table\n"
    table = pd.read_csv(path, keep_default_na=False)
    assert list(table.columns) == check_gpu.COLUMNS
    assert {"device", "model", "parity bf16/fp32", "memory", "speed", "ddp",
            "learning"} <= set(table["check"])
    model = table[table["check"] == "model"].iloc[0]
    assert model["setting"] == "test-tiny" and "random init" in model["note"]
    memory = table[table["check"] == "memory"]
    assert len(memory) == 6 and (memory["status"] == "counted").all()  # 3 batches x ckpt
    sizes = memory["value"].astype(float).to_numpy()
    assert (sizes[2::2] > sizes[0:-2:2]).all()  # more memory for a larger batch
    assert sizes[5] < sizes[4]  # batch 8: checkpointing keeps less
    assert table.loc[table["check"] == "ddp", "status"].item() == "skipped"
    latency = table[table["setting"].str.startswith("inference")]
    assert (latency["paper"].astype(float) == 63.1).all()
    assert (latency["status"] == "not comparable").all()  # CPU, smoke size
    learning = table[table["check"] == "learning"].iloc[0]
    assert learning["status"] == "pass", learning.to_dict()
    before, after = (float(v) for v in learning["value"].split(" -> "))
    assert after < check_gpu.LOSS_DROP * before
    printed = capsys.readouterr().out
    assert "learning" in printed and str(path) in printed


def test_saved_for_backward_counts_the_activations(check_gpu):
    """Planted: y = (x @ w).relu().sum() saves x (for w's gradient) and the relu output;
    the parameter w is not counted. 8 x 16 and 8 x 4 float32 = 512 + 128 bytes."""
    w = torch.nn.Parameter(torch.randn(16, 4))
    x = torch.randn(8, 16)
    counter = check_gpu.saved_for_backward({w.untyped_storage().data_ptr()})
    with counter:
        loss = (x @ w).relu().sum()
    loss.backward()
    assert sum(counter.seen.values()) == 8 * 16 * 4 + 8 * 4 * 4
