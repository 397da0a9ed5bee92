"""pskd-cls configuration: defaults, YAML bases, dotted overrides, type and range checks, help text."""
from __future__ import annotations

import pytest
import yaml

from pskd.vision_cls.config import (Config, _walk, config_from_dict, config_help, config_to_dict, dump_config,
                                    load_config)
from pskd.vision_cls.errors import ConfigError


def test_defaults_are_valid_and_round_trip():
    cfg = load_config()
    assert cfg == Config()
    assert config_from_dict(yaml.safe_load(dump_config(cfg))) == cfg


def test_overrides_parse_values_as_yaml():
    cfg = load_config(None, ["method.name=pskd", "method.alpha_T=0.5", "optim.lr=5e-2", "optim.milestones=[3, 6]",
                             "train.amp=true", "method.store.kind=topk", "data.train_subset=null",
                             "train.progress=off", "train.out_dir=runs/x y"])
    assert (cfg.method.name, cfg.method.alpha_T, cfg.optim.lr, cfg.optim.milestones) == ("pskd", 0.5, 0.05, [3, 6])
    assert cfg.train.amp is True and cfg.method.store.kind == "topk" and cfg.train.progress == "off"
    assert cfg.train.out_dir == "runs/x y" and cfg.data.train_subset is None


def test_yaml_bases_merge_in_order(tmp_path):
    (tmp_path / "a.yaml").write_text("optim:\n  lr: 0.3\n  momentum: 0.5\ntrain:\n  epochs: 7\n")
    (tmp_path / "b.yaml").write_text("optim:\n  lr: 0.2\n")
    (tmp_path / "run.yaml").write_text("base: [a.yaml, b.yaml]\ntrain:\n  epochs: 9\n")
    cfg = load_config([str(tmp_path / "run.yaml")], ["optim.momentum=0.7"])
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.train.epochs) == (0.2, 0.7, 9)
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load_config([str(tmp_path / "loop.yaml")])


@pytest.mark.parametrize("override, message", [
    ("method.alpha=0.8", r"unknown config key 'method.alpha'"),
    ("nosection.x=1", r"unknown config key 'nosection'"),
    ("method.store.kindd=ram", r"unknown config key 'method.store.kindd'"),
    ("method.alpha_T=1.5", r"method.alpha_T must be in \[0, 1\], got 1.5"),
    ("method.alpha_T=-0.1", r"method.alpha_T must be in \[0, 1\]"),
    ("method.name=pskdd", r"unknown method.name 'pskdd'"),
    ("model.name=resnet9000", r"unknown model.name 'resnet9000'"),
    ("optim.lr=fast", r"config key 'optim.lr' must be float, got 'fast'"),
    ("train.epochs=2.5", r"config key 'train.epochs' must be int"),
    ("train.amp=maybe", r"config key 'train.amp' must be bool"),
    ("optim.schedule=linear", r"optim.schedule must be one of multistep, cosine, constant"),
    ("optim.milestones=[5, 3]", r"optim.milestones must be positive and increasing"),
    ("train.batch_size=1", r"train.batch_size must be >= 2"),
    ("cutmix.prob=2", r"cutmix.prob must be in \[0, 1\]"),
    ("cutmix.beta=0", r"cutmix.beta must be positive"),
    ("method.name=tf_kd_self", r"method.teacher is required"),
    ("data.val_split=2.5", r"data.val_split must be a fraction < 1 or a whole sample count"),
    ("train.epochs", r"not of the form section.key=value"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_help_documents_every_key():
    text = config_help()
    for key, f, _ in _walk(Config):
        assert f"  {key} (" in text, key
        assert f.metadata["help"], key
    assert "pyramidnet200_a240" in text


def test_every_field_has_a_json_friendly_default():
    flat = config_to_dict(Config())
    assert yaml.safe_load(yaml.safe_dump(flat)) == flat
