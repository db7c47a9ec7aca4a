"""`dicesearch train --fid-every`: real FID of EMA samples at fixed N, logged per eval."""

import json

from click.testing import CliRunner

from dicesearch.cli import main


def test_train_scores_fid_every_n_steps(tmp_path, monkeypatch):
    monkeypatch.setenv("DICESEARCH_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "run"
    result = CliRunner().invoke(
        main,
        ["train", "DICE-digits", "--steps", "6", "--fid-every", "3", "--fid-samples", "8", "--fid-steps", "2", "--out", str(out), "--quiet"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [3, 6]
    for line in lines:
        assert line["fid_8"] > 0 and 0 <= line["precision_8"] <= 1 and 0 <= line["recall_8"] <= 1
    assert "step 3: fid_8" in result.output
    # the reference statistics were computed once and cached on disk
    assert len(list((tmp_path / "cache").rglob("*.npz"))) == 1
