from dataclasses import dataclass, field

import pytest

from selfsup.config import load_config, to_yaml, valid_keys
from selfsup.errors import ConfigError


@dataclass
class Opt:
    lr: float = 0.1
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])


@dataclass
class Cfg:
    name: str = "x"
    seed: int = 0
    root: str | None = None
    optim: Opt = field(default_factory=Opt)


def test_layers_defaults_yaml_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("seed: 5\noptim:\n  lr: 0.2\n")
    cfg = load_config(Cfg, f, ["optim.lr=0.05", "optim.milestones=[0.3]", "root=/tmp/x"])
    assert cfg.seed == 5  # from YAML
    assert cfg.optim.lr == 0.05  # override wins over YAML
    assert cfg.optim.milestones == [0.3]
    assert cfg.root == "/tmp/x"
    assert cfg.name == "x"  # default kept
    assert "lr: 0.05" in to_yaml(cfg)


def test_base_layer_is_under_file_and_overrides(tmp_path):
    cfg = load_config(Cfg, None, ["seed=2"], base={"seed": 1, "name": "saved"})
    assert (cfg.seed, cfg.name) == (2, "saved")


def test_valid_keys_lists_nested():
    assert valid_keys(Cfg) == ["name", "seed", "root", "optim.lr", "optim.milestones"]


@pytest.mark.parametrize("override", ["optim.lrr=1", "nokey=1", "optim=3"])
def test_unknown_key_lists_valid_keys(override):
    with pytest.raises(ConfigError) as e:
        load_config(Cfg, None, [override])
    msg = str(e.value)
    assert "Unknown config key" in msg and "optim.lr" in msg and "Valid keys" in msg


def test_unknown_key_in_yaml_names_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="optim.learning_rate.*bad.yaml"):
        load_config(Cfg, f)


def test_wrong_type_is_an_error():
    with pytest.raises(ConfigError, match="Wrong type for config key 'seed'"):
        load_config(Cfg, None, ["seed=abc"])


def test_malformed_inputs(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        load_config(Cfg, None, ["seed"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Cfg, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Cfg, bad)
    notmap = tmp_path / "list.yaml"
    notmap.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Cfg, notmap)


def test_yaml_is_never_executed(tmp_path):
    f = tmp_path / "evil.yaml"
    f.write_text("name: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError):
        load_config(Cfg, f)


def test_shipped_configs_load():
    from pathlib import Path

    from selfsup.vision.train import VisionTrainConfig

    root = Path(__file__).resolve().parents[1] / "configs" / "sla"
    files = sorted(root.glob("*.yaml"))
    assert len(files) >= 4
    for f in files:
        cfg = load_config(VisionTrainConfig, f)
        assert cfg.sla.mode in ("baseline", "da", "mt", "sla", "sla_sd")


def test_shipped_augself_configs_load():
    from pathlib import Path

    from selfsup.vision.methods import list_methods
    from selfsup.vision.train import VisionTrainConfig

    root = Path(__file__).resolve().parents[1] / "configs" / "augself"
    files = sorted(root.glob("*.yaml"))
    assert len(files) >= 3
    for f in files:
        cfg = load_config(VisionTrainConfig, f)
        assert cfg.method in list_methods() and cfg.augself.kinds == ["crop", "colour"]


def test_every_config_schema_of_the_package_is_frozen():
    """config.py promises frozen configs: every ``*Config`` dataclass in selfsup (the schemas
    ``load_config`` builds and their sections) refuses assignment after loading."""
    import dataclasses
    import importlib
    import pkgutil

    import selfsup

    found, thawed = [], []
    for info in pkgutil.walk_packages(selfsup.__path__, "selfsup."):
        mod = importlib.import_module(info.name)
        for name, obj in vars(mod).items():
            if (isinstance(obj, type) and dataclasses.is_dataclass(obj) and name.endswith("Config")
                    and obj.__module__ == mod.__name__):
                found.append(f"{mod.__name__}.{name}")
                if not obj.__dataclass_params__.frozen:
                    thawed.append(f"{mod.__name__}.{name}")
    assert len(found) >= 40 and thawed == []
