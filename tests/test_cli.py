"""The main job: fit, score and sample from the command line."""

import numpy as np
import pytest

from skaem.cli import main

TINY_ARGS = [
    "--param",
    "hidden_features=16",
    "--param",
    "n_blocks=1",
    "--param",
    "energy_hidden_features=16",
    "--param",
    "energy_n_blocks=1",
    "--param",
    "context_features=4",
    "--param",
    "max_iter=20",
    "--param",
    "warmup_steps=10",
    "--param",
    "n_eval_importance_samples=20",
    "--param",
    "n_sampling_proposals=10",
]


def test_fit_score_sample_round_trip(tmp_path, capsys):
    model = tmp_path / "m.joblib"
    main(
        ["fit", "--data", "checkerboard", "--n-samples", "500", "--output", str(model), *TINY_ARGS]
    )
    out = capsys.readouterr().out
    assert "test log-likelihood (AEM" in out and "(truth)" in out and model.exists()

    main(["sample", str(model), "7", "--output", str(tmp_path / "s.npy")])
    samples = np.load(tmp_path / "s.npy")
    assert samples.shape == (7, 2)
    table = capsys.readouterr().out.splitlines()[-3:]
    assert table[0].split() == ["feature", "mean", "std", "min", "max"]
    assert not any("e+" in line or "e-" in line for line in table)  # no scientific notation
    rows = [line.split() for line in table[1:]]
    assert [row[0] for row in rows] == ["0", "1"]  # one summary row per feature
    np.testing.assert_allclose([float(row[1]) for row in rows], samples.mean(0), rtol=1e-3)

    csv = tmp_path / "x.csv"
    np.savetxt(csv, samples, delimiter=",", header="a,b", comments="")
    main(["score", str(model), str(csv), "--output", str(tmp_path / "scores.npy")])
    assert np.load(tmp_path / "scores.npy").shape == (7,)


def test_fit_on_a_user_file_and_clear_errors(tmp_path, capsys):
    data = tmp_path / "d.npy"
    np.save(data, np.random.default_rng(0).normal(size=(200, 3)))
    main(["fit", "--data", str(data), "--output", str(tmp_path / "m.joblib"), *TINY_ARGS])
    assert "train (160, 3)" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="neither a built-in task .*checkerboard.* nor a file"):
        main(["fit", "--data", str(tmp_path / "missing.csv")])
    (tmp_path / "empty.csv").touch()
    with pytest.raises(SystemExit, match="empty.csv holds no data"):
        main(["fit", "--data", str(tmp_path / "empty.csv")])
    with pytest.raises(SystemExit):
        main(["fit", "--data", str(data), "--param", "max_iter=-1"])
    assert "max_iter" in capsys.readouterr().err


def test_score_and_sample_name_a_missing_or_wrong_model_file(tmp_path):
    import joblib

    data = tmp_path / "d.npy"
    np.save(data, np.zeros((3, 2)))
    joblib.dump({"not": "a model"}, tmp_path / "dict.joblib")
    with pytest.raises(SystemExit, match="no such file"):
        main(["score", str(tmp_path / "missing.joblib"), str(data)])
    with pytest.raises(SystemExit, match="not a saved model"):
        main(["sample", str(data), "3"])
    with pytest.raises(SystemExit, match="holds a dict, not a fitted AEMDensity"):
        main(["sample", str(tmp_path / "dict.joblib"), "3"])


def test_bare_command_prints_the_subcommands_and_help_shows_defaults(capsys):
    main([])
    out = capsys.readouterr().out
    assert "usage: skaem" in out and all(c in out for c in ("fit", "score", "sample"))
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    out = capsys.readouterr().out
    assert "(default: aem_model.joblib)" in out and "(default: 0)" in out
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    assert "number of samples to draw" in capsys.readouterr().out
