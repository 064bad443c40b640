"""Config files: typed loading, and the committed configs with the pipeline script that names them.

A YAML file with an unknown option or a value of the wrong type (``steps: 400.5``) is one clear
error before any work; ``lr: 1e-4``, a string to PyYAML, is read as the number it spells. Every
file under training/configs/ must load into its subcommand's options, and every config file
that training/run_shipped.sh names, directly or through a versioned stage it lists, must exist.
"""

import argparse
import re
from pathlib import Path

import pytest

from kdsam_core.errors import KDSAMError
from kdsam_train.cli import main
from kdsam_train.config import (AverageConfig, CacheConfig, DiagnoseConfig, DistillConfig, EvalConfig, FinetuneConfig,
                                SplitConfig, resolve)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "training" / "configs").glob("*.yaml"))
KIND = {"cache": CacheConfig, "distill": DistillConfig, "finetune": FinetuneConfig, "eval": EvalConfig}


def _load(cls, path):
    return resolve(cls, argparse.Namespace(config=str(path)))


def test_yaml_values_are_typed(tmp_path):
    f = tmp_path / "ft.yaml"
    f.write_text("lr: 1e-4\nbox_jitter: 0\nsteps: 12\nembed_copies: 2\n")
    cfg = _load(FinetuneConfig, f)
    assert cfg.lr == pytest.approx(1e-4) and isinstance(cfg.lr, float)  # YAML 1.1 reads 1e-4 as a string
    assert cfg.box_jitter == 0.0 and isinstance(cfg.box_jitter, float)
    assert cfg.steps == 12 and cfg.embed_copies == 2


def test_list_items_are_typed_by_the_option(tmp_path):
    f = tmp_path / "split.yaml"
    f.write_text("fractions: [1, 0, 0]\ndatasets: [busi]\n")
    cfg = _load(SplitConfig, f)
    assert cfg.fractions == [1.0, 0.0, 0.0] and all(type(x) is float for x in cfg.fractions)
    assert cfg.datasets == ["busi"]
    ns = argparse.Namespace(config=None, models=["a", "b"], weights=["1", "2.5"], out=None)
    assert resolve(AverageConfig, ns).weights == [1.0, 2.5]


@pytest.mark.parametrize("cls, text, words", [
    (SplitConfig, "fractions: [0.7, x, 0.2]\n", ["fractions[1]", "float", "'x'"]),
    (SplitConfig, "datasets: [busi, 3]\n", ["datasets[1]", "str", "3"]),
    (AverageConfig, "weights: 2\n", ["weights", "a list", "2"]),
])
def test_bad_list_item_is_one_clear_error(tmp_path, cls, text, words):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(KDSAMError) as e:
        _load(cls, f)
    for w in words:
        assert w in str(e.value)


@pytest.mark.parametrize("text, words", [
    ("steps: 400.5\n", ["steps", "int", "400.5"]),
    ("lr: fast\n", ["lr", "float", "fast"]),
    ("coupled: 1\n", ["coupled", "bool"]),
    ("steps: true\n", ["steps", "int"]),
    ("run_dir:\n", ["run_dir", "leave the option out"]),
    ("stepz: 3\n", ["unknown option", "stepz"]),
    ("- steps\n", ["mapping"]),
    ("steps: [1\n", ["cannot read"]),
])
def test_bad_config_is_one_clear_error(tmp_path, text, words):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(KDSAMError) as e:
        _load(FinetuneConfig, f)
    assert str(f) in str(e.value)
    for w in words:
        assert w in str(e.value)


def test_cli_reports_a_bad_config_and_exits_2(tmp_path, caplog):
    f = tmp_path / "bad.yaml"
    f.write_text("steps: 400.5\n")
    assert main(["finetune", "--config", str(f), "--run-dir", str(tmp_path / "run")]) == 2
    assert "option steps must be an int, not 400.5" in caplog.text
    assert not (tmp_path / "run").exists()


def test_configs_are_found():
    assert len(CONFIGS) > 20, CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_committed_config_loads(path):
    cfg = _load(KIND[path.name.split("_")[0]], path)
    assert cfg.data_root == "../shared/data"


def _stage_configs(script: str) -> set[str]:
    """Config paths run_shipped.sh uses: literal ones and those of the versioned stages it lists."""
    paths = set(re.findall(r"training/configs/[\w.]+\.yaml", script))
    patterns = {"distill-v": "distill_kdsam256_{}.yaml", "finetune-v": "finetune_kdsam256_{}.yaml",
                "eval-val-v": "eval_val_{}.yaml", "eval-v": "eval_test_{}.yaml"}
    header = "\n".join(line for line in script.splitlines() if line.startswith("#"))
    for prefix, name in patterns.items():
        for version in re.findall(rf"(?<![\w-]){prefix}(\d\w*)", header):
            paths.add(f"training/configs/{name.format('v' + version)}")
    return paths


def test_pipeline_script_names_only_existing_configs():
    script = (ROOT / "training" / "run_shipped.sh").read_text()
    paths = _stage_configs(script)
    assert "training/configs/distill_kdsam256_v5.yaml" in paths  # a versioned stage, resolved
    assert "training/configs/eval_val_v6.yaml" in paths
    missing = sorted(p for p in paths if not (ROOT / p).is_file())
    assert not missing, f"run_shipped.sh names configs that do not exist: {missing}"


def test_written_config_names_the_split_portably_and_loads_back_anywhere(tmp_path, monkeypatch):
    """A run's config.yaml names a split file inside the repository relative to it (as results
    do), and that config, loaded from another working directory, still finds the split file; a
    split file outside the repository keeps its absolute path."""
    from kdsam_train.config import write_config
    from kdsam_train.splits import read_splits

    out = tmp_path / "config.yaml"
    write_config(FinetuneConfig(), out)
    assert "split_file: training/splits/shared_data_v1.json\n" in out.read_text()
    monkeypatch.chdir(tmp_path)
    cfg = _load(FinetuneConfig, out)
    assert set(read_splits(cfg.split_file)) >= {"train", "val", "test"}
    outside = tmp_path / "my_split.json"
    write_config(FinetuneConfig(split_file=str(outside)), out)
    assert _load(FinetuneConfig, out).split_file == str(outside.resolve())


RESULT_CONFIGS = sorted((ROOT / "training" / "results").glob("*.config.yaml"))


@pytest.mark.parametrize("path", RESULT_CONFIGS, ids=lambda p: p.name)
def test_committed_result_config_loads_and_names_its_split_in_the_repository(path):
    cfg = _load(DiagnoseConfig if path.name.startswith("diagnose") else EvalConfig, path)
    assert not Path(cfg.split_file).is_absolute() and (ROOT / cfg.split_file).is_file(), cfg.split_file
