"""The task modules build command lines the adapters' own parsers accept (no training runs here)."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from pskd.benchmarks.jobs import expand
from pskd.benchmarks.suite import load_suite
from pskd.benchmarks.tasks.det import pskd_config

REPO = Path(__file__).resolve().parent.parent


def jobs_of(tmp_path: Path, text: str) -> dict:
    path = tmp_path / "suite.yaml"
    path.write_text(textwrap.dedent(text))
    return {j.id: j for j in expand(load_suite(str(path)), tmp_path / "run", cwd=REPO)}


def test_cls_command(tmp_path):
    jobs = jobs_of(tmp_path, """
        tasks:
          fm:
            task: cls
            config: configs/cls/fmnist_small_cnn.yaml
            epochs: 2
            data: {root: data/fashion-mnist}
            overrides: {optim.lr: 0.05}
            models: [tiny_cnn]
            methods: [ce, {name: pskd-cm, method: pskd+cutmix, overrides: {cutmix.prob: 1.0}}]
    """)
    (cmd,) = jobs["fm/tiny_cnn/pskd-cm/seed0"].commands
    argv = cmd.argv
    assert Path(argv[0]).name == "pskd-cls" and argv[1] == "train" and cmd.distributed
    assert argv[2:4] == ["--config", str(REPO / "configs/cls/fmnist_small_cnn.yaml")]
    assert argv[4:6] == ["--resume", "auto"]
    assert argv[6:] == ["method.name=pskd", "cutmix.prob=1.0", "model.name=tiny_cnn", "train.seed=0",
                        "train.epochs=2", f"data.root={REPO / 'data/fashion-mnist'}", "optim.lr=0.05",
                        f"train.out_dir={tmp_path / 'run/jobs/fm/tiny_cnn/pskd-cm/seed0'}"]
    assert "cutmix.prob" not in " ".join(jobs["fm/tiny_cnn/ce/seed0"].commands[0].argv)


def test_cls_command_is_accepted_by_pskd_cls(tmp_path):
    cli = pytest.importorskip("pskd.vision_cls.cli")
    config = pytest.importorskip("pskd.vision_cls.config")
    for suite in ("mini", "paper-cifar100", "paper-imagenet"):
        for job in expand(load_suite(suite), tmp_path / suite, cwd=REPO):
            if job.task != "cls" or job.seed != 0:  # seeds differ in train.seed only
                continue
            args = cli.build_parser().parse_args(job.commands[0].argv[1:])
            cfg = config.load_config(args.config, args.overrides)  # unknown keys and bad values raise here
            assert cfg.train.out_dir == str(job.dir) and cfg.train.seed == job.seed


def test_det_command(tmp_path):
    jobs = jobs_of(tmp_path, """
        tasks:
          forest:
            task: det
            config: configs/detection/mini_faster-rcnn_deepforest.py
            data: {root: data/deepforest}
            epochs: 3
            methods: [baseline, pskd]
    """)
    base = jobs["forest/default/baseline/seed0"].commands[0].argv
    pskd = jobs["forest/default/pskd/seed0"].commands[0].argv
    assert base[2] == str(REPO / "configs/detection/mini_faster-rcnn_deepforest.py")
    assert pskd[2] == str(REPO / "configs/detection/mini_faster-rcnn_deepforest_pskd.py")
    out = tmp_path / "run/jobs/forest/default/pskd/seed0"
    assert pskd[3:] == ["--work-dir", str(out), "--seed", "0", "--out", str(out / "metrics.json"), "--resume",
                        "--cfg-options", "train_cfg.max_epochs=3",
                        *[f"{k}={REPO / 'data/deepforest'}/" for k in ("train_dataloader.dataset.data_root",
                                                                        "val_dataloader.dataset.data_root",
                                                                        "test_dataloader.dataset.data_root")]]
    assert pskd_config("a/b/x.py") == "a/b/x_pskd.py"


def test_det_command_is_accepted_by_pskd_det(tmp_path):
    cli = pytest.importorskip("pskd.detection.cli")
    pytest.importorskip("mmengine")
    for suite in ("mini", "paper-voc"):
        for job in expand(load_suite(suite), tmp_path / suite, cwd=REPO):
            if job.task == "det":
                args = cli._parser().parse_args(job.commands[0].argv[1:])
                assert args.command == "train" and args.resume == "auto" and args.work_dir == str(job.dir)
                assert Path(args.config).is_file(), args.config


def test_mt_commands(tmp_path):
    jobs = jobs_of(tmp_path, """
        tasks:
          ding:
            task: mt
            recipe: mini_ding_de_en
            vocab_size: 2000
            data: {raw_dir: data/ding-de-en}
            epochs: 2
            methods:
              - ls
              - {name: topk, method: pskd, overrides: {teacher: topk, alpha_T: 0.5, lr: 0.001, fp16: true}}
    """)
    prep = jobs["prepare/ding"].commands[0].argv
    data = str(tmp_path / "run/prepare/ding/data")
    assert prep[1:] == ["prepare", "--recipe", "mini_ding_de_en", "--dest", data, "--overwrite", "--raw-dir",
                        str(REPO / "data/ding-de-en"), "--vocab-size", "2000"]
    train, evaluate = jobs["ding/default/topk/seed0"].commands
    out = tmp_path / "run/jobs/ding/default/topk/seed0"
    assert train.argv[1:] == ["train", "--recipe", "mini_ding_de_en", "--save-dir", str(out), "--method", "pskd",
                              "--seed", "0", "--max-epoch", "2", "--teacher", "topk", "--alpha-T", "0.5", data,
                              "--", "--lr", "0.001", "--fp16"]
    assert evaluate.argv[1:] == ["eval", "--recipe", "mini_ding_de_en", "--checkpoint",
                                 str(out / "checkpoint_last.pt"), "--out", str(out / "metrics.json"), data]
    assert jobs["ding/default/ls/seed0"].after == ["prepare/ding"]


def test_mt_commands_are_accepted_by_pskd_mt(tmp_path):
    cli = pytest.importorskip("pskd.translation.cli")
    for suite in ("mini", "paper-iwslt15"):
        for job in expand(load_suite(suite), tmp_path / suite, cwd=REPO):
            if job.task == "mt":
                for cmd in job.commands:
                    argv = cmd.argv[1:]
                    cut = argv.index("--") if "--" in argv else len(argv)  # as pskd-mt's main() splits them
                    args = cli._parser().parse_args(argv[:cut])
                    assert args.command == cmd.argv[1] and argv[cut:] == []
                    if args.command in ("train", "eval"):
                        assert args.data == str(job.dir.parents[4] / "prepare" / job.entry / "data")
                    if args.command == "train":
                        assert args.save_dir == str(job.dir) and args.seed == job.seed
                        assert args.method == job.method_base
