"""`nextvlad list-models`, `params` and `import-tf`, called in-process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nextvlad.checkpoint import load_model
from nextvlad.cli import main
from nextvlad.models import InputTransform, list_models, load_eigenvalues
from tests.conftest import shared_path


def test_list_models(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list-models"]) == 0
    out = capsys.readouterr().out
    for name in list_models():
        assert name in out


def test_list_models_shows_the_papers_presets_first_and_marks_the_small_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["list-models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "The paper's models (Table 1, Table 2):"
    assert lines[1].split()[0] == "nextvlad-8g-128k-2048h"
    small = lines.index("Small presets for CPU demos and tests (not for results):")
    assert [line.split()[0] for line in lines[small + 1 :]] == [
        "nextvlad-8g-16k-256h",
        "meanpool-256h",
    ]
    baselines = lines.index("Baselines (mean pooling, the starter code's video-level models):")
    assert {"meanpool-2048h", "video-logistic", "video-moe"} == {
        line.split()[0] for line in lines[baselines + 1 : small] if line
    }
    assert main(["list-models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["group"] for r in rows][-2:] == ["small", "small"]
    assert rows[0]["group"] == "paper" and {r["name"] for r in rows} == set(list_models())


def test_params_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["params", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["nextvlad-8g-128k-2048h"]["trainable_params"] == 88_889_378
    assert rows["nextvlad-8g-112k-2048h"]["trainable_params"] == 78_643_170
    assert rows["nextvlad-8g-128k-2048h"]["paper_params"] == 89_000_000
    assert rows["video-moe"]["paper_params"] is None
    for name in ("mix3-nextvlad-8g-112k-2048h", "netvlad-128k-2048h"):
        assert abs(rows[name]["relative_to_paper"]) < 0.01


def test_params_unknown_preset_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:  # a usage error: exit code 2
        main(["params", "--preset", "nextvlad-8g"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown model preset 'nextvlad-8g'" in err and "Traceback" not in err


def test_import_tf_from_npz(tmp_path: Path) -> None:
    source = shared_path("fixtures/tf_reference/nextvlad_single_infer.npz")
    with np.load(source) as data:
        fixture = {k: data[k] for k in data.files}
    variables = {k: v for k, v in fixture.items() if k.startswith("tower/")}
    np.savez(tmp_path / "vars.npz", **variables)
    assert main(["import-tf", str(tmp_path / "vars.npz"), "--out", str(tmp_path / "ckpt")]) == 0
    model = load_model(tmp_path / "ckpt")
    transform = InputTransform(
        (1024, 128), load_eigenvalues(shared_path("data/yt8m_pca/eigenvals.npy"))
    )
    n = torch.from_numpy(fixture["num_frames"]).long()
    with torch.no_grad():
        logits = model(transform(torch.from_numpy(fixture["quantized"]), n), n).logits
    np.testing.assert_allclose(logits.numpy(), fixture["logits"], rtol=0, atol=1e-5)


def test_import_tf_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["import-tf", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2
