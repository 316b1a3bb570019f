"""Config system: overlays, typed --set, every error class is one ConfigError naming the key."""

import dataclasses

import pytest
import yaml

from tf_rlnas import config as C
from tf_rlnas.algos.reinforce.config import ReinforceConfig
from tf_rlnas.errors import ConfigError


def write(tmp_path, name, data):
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(p)


def test_defaults_are_the_reference():
    cfg = ReinforceConfig()
    assert cfg.actor.hidden == [5, 5] and cfg.train.lr == 1e-3
    assert cfg.actor.init_mu == 0.0 and cfg.actor.init_sigma == 1.0


def test_overlays_and_set_precedence(tmp_path):
    a = write(tmp_path, "a.yaml", {"algo": "reinforce", "train": {"lr": 0.01, "updates": 10},
                                   "env": {"kwargs": {"tau": 2.0}}})
    b = write(tmp_path, "b.yaml", {"train": {"updates": 20}, "env": {"kwargs": {"zeta": 0.1}}})
    cfg = C.resolve(ReinforceConfig, [a, b], ["train.updates=30", "run.name=007", "actor.hidden=[8, 8, 8]"])
    assert cfg.train.lr == 0.01 and cfg.train.updates == 30
    assert cfg.env.kwargs == {"tau": 2.0, "zeta": 0.1}  # mappings merge key by key
    assert cfg.run.name == "007"  # str keys keep the text as typed
    assert cfg.actor.hidden == [8, 8, 8]
    assert isinstance(cfg.train.lr, float)
    cfg = C.resolve(ReinforceConfig, [], ["train.lr=1"])  # int widened to float
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    # YAML 1.1 reads an exponent without a dot (3e-3) as a string: a float key takes it as the number,
    # in a file as on the command line
    c = write(tmp_path, "c.yaml", {"train": {"lr": "1E-2"}})
    assert C.resolve(ReinforceConfig, [c], []).train.lr == 0.01
    assert C.resolve(ReinforceConfig, [], ["train.lr=3e-3"]).train.lr == 0.003
    assert C.resolve(ReinforceConfig, [], ["train.lr=+.5e1"]).train.lr == 5.0


@pytest.mark.parametrize("sets, needle", [
    (["train.nope=1"], "train.nope"),
    (["nope.x=1"], "nope"),
    (["train.lr=abc"], "train.lr"),
    (["train.lr=3e-x"], "train.lr"),
    (["train.lr=1e999"], "train.lr"),
    (["run.name=1e3", "train.updates=1e3"], "train.updates"),  # ints stay strict
    (["train.updates=1.5"], "train.updates"),
    (["train.updates=0"], "train.updates"),
    (["train.gamma=1.5"], "train.gamma"),
    (["train.baseline=median"], "train.baseline"),
    (["actor.hidden=[4, x]"], "actor.hidden[1]"),
    (["actor.hidden=[0]"], "actor.hidden"),
    (["train.normalize_advantages=3"], "train.normalize_advantages"),
    (["train.baseline=batch"], "train.baseline"),  # needs episodes_per_update >= 2
    (["train"], "key=value"),
])
def test_bad_values_name_the_key(sets, needle):
    with pytest.raises(ConfigError) as e:
        C.resolve(ReinforceConfig, [], sets)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        C.resolve(ReinforceConfig, [str(tmp_path / "missing.yaml")], [])
    with pytest.raises(ConfigError, match="malformed YAML"):
        C.resolve(ReinforceConfig, [write(tmp_path, "m.yaml", "train: {lr: [1\n")], [])
    with pytest.raises(ConfigError, match="mapping"):
        C.resolve(ReinforceConfig, [write(tmp_path, "l.yaml", "- 1\n- 2\n")], [])
    with pytest.raises(ConfigError, match="unknown config key 'train.lrr'"):
        C.resolve(ReinforceConfig, [write(tmp_path, "u.yaml", {"train": {"lrr": 1}})], [])
    with pytest.raises(ConfigError, match="section"):
        C.resolve(ReinforceConfig, [write(tmp_path, "s.yaml", {"train": 3})], [])
    with pytest.raises(ConfigError, match="directory"):
        C.resolve(ReinforceConfig, [str(tmp_path)], [])


def test_roundtrip_and_diff():
    cfg = C.resolve(ReinforceConfig, [], ["train.updates=7"])
    data = yaml.safe_load(C.dump_yaml(cfg, "reinforce"))
    assert data.pop("algo") == "reinforce"
    again = C.from_dict(ReinforceConfig, data)
    assert again == cfg
    other = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, updates=9, lr=0.5))
    d = {k: ok for k, _, _, ok in C.diff(cfg, other)}
    assert d == {"train.updates": True, "train.lr": False}
