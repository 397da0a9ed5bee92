"""``pskd-mt eval``: fairseq-generate, detokenise, sacreBLEU BLEU and chrF against the untokenised references.

Hypotheses are fairseq-generate's ``D-`` lines with ``--post-process sentencepiece`` (pieces joined back into
text); references are the raw sentences ``pskd-mt prepare`` kept in ``<data>/raw/<subset>.<tgt>``, so the score is
sacreBLEU's standard detokenised BLEU (13a tokenisation), not the tokenised BLEU older papers report. A sentence
fairseq-generate skipped counts as an empty hypothesis. ``nll`` is the teacher-forced negative log-likelihood of the
reference (nats per sentencepiece token).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .data import check_binarized, dict_size, read_lines
from .errors import PSKDError

__all__ = ["evaluate", "score", "write_json_atomic"]


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write JSON through a temporary file and a rename: readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def score(hypotheses: list[str], references: list[str]) -> dict[str, Any]:
    """Corpus BLEU and chrF (sacreBLEU defaults) with their signatures."""
    import sacrebleu

    bleu = sacrebleu.metrics.BLEU()
    chrf = sacrebleu.metrics.CHRF()
    b = bleu.corpus_score(hypotheses, [references])
    c = chrf.corpus_score(hypotheses, [references])
    return {"bleu": round(b.score, 4), "chrf": round(c.score, 4),
            "signature": {"bleu": str(bleu.get_signature()), "chrf": str(chrf.get_signature())}}


def _checkpoint_vocab(checkpoint: Path) -> int | None:
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False, mmap=True)
    weights = state.get("model", {})
    for key in ("decoder.output_projection.weight", "decoder.embed_tokens.weight"):
        if key in weights:
            return int(weights[key].shape[0])
    return None


def parse_generate(path: Path, count: int) -> tuple[list[str], int]:
    """``D-<id>`` lines of a fairseq-generate output file, ordered by sentence id (missing ids -> ''), and how many
    ids were found."""
    hyps = [""] * count
    found = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("D-"):
                parts = line.rstrip("\n").split("\t", 2)  # D-<id> <score> <text> (text may be empty)
                idx, text = int(parts[0][2:]), parts[2] if len(parts) > 2 else ""
                if 0 <= idx < count:
                    hyps[idx] = text
                    found += 1
    return hyps, found


def evaluate(data_dir: str | Path, checkpoint: str | Path, out: str | Path, *, subset: str = "test",
             generate_args: list[str] | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Translate ``subset`` with ``checkpoint``, score it, write the metrics JSON to ``out``; returns it.

    Raises:
        PSKDError: missing data, references or checkpoint; a checkpoint whose vocabulary is not the data's; a
            failed fairseq-generate. ``out`` is left untouched in all these cases.
    """
    from . import plugin_dir

    data_dir, checkpoint = Path(data_dir), Path(checkpoint)
    meta_path = data_dir / "pskd_data.json"
    if not meta_path.is_file():
        raise PSKDError(f"{meta_path} not found; make the data folder with `pskd-mt prepare`")
    meta = json.loads(meta_path.read_text())
    src, tgt = meta["src"], meta["tgt"]
    check_binarized(data_dir, src, tgt, splits=(subset,))
    ref_path = data_dir / "raw" / f"{subset}.{tgt}"
    if not ref_path.is_file():
        raise PSKDError(f"references {ref_path} not found (pskd-mt prepare keeps them for valid and test)")
    if not checkpoint.is_file():
        raise PSKDError(f"checkpoint {checkpoint} not found")
    rows, size = _checkpoint_vocab(checkpoint), dict_size(data_dir / f"dict.{tgt}.txt")
    if rows is not None and rows != size:
        raise PSKDError(f"checkpoint {checkpoint} has a {rows}-token vocabulary but {data_dir}'s dictionary has "
                        f"{size}: it was trained on other data")
    refs = read_lines(ref_path)
    with tempfile.TemporaryDirectory(prefix="pskd-mt-eval-") as tmp:
        run_generate([str(data_dir), "--path", str(checkpoint), "--gen-subset", subset, "--source-lang", src,
                      "--target-lang", tgt, "--user-dir", plugin_dir(), "--post-process", "sentencepiece",
                      "--results-path", tmp, *_device_args(), *(generate_args or [])])
        hyps, translated = parse_generate(Path(tmp) / f"generate-{subset}.txt", len(refs))
    result = {"task": "translation", "metrics": {}, "subset": subset, "direction": f"{src}-{tgt}",
              "checkpoint": str(checkpoint), "data": str(data_dir), "num_sentences": len(refs),
              "translated": translated, "empty_hypotheses": sum(1 for h in hyps if not h.strip()),
              "generate_args": generate_args or []}
    scored = score(hyps, refs)
    nll = corpus_nll(data_dir, checkpoint, subset)
    result["metrics"] = {"bleu": scored["bleu"], "chrf": scored["chrf"], "nll": round(nll, 5)}
    result["signature"] = scored["signature"]
    result.update(extra or {})
    write_json_atomic(out, result)
    return result


def run_generate(argv: list[str]) -> None:
    """fairseq-generate in this process (as its ``cli_main`` does; saves a second ~10 s fairseq start-up)."""
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # see pskd_fairseq_plugin: trusted files only
    from fairseq import options
    from fairseq_cli import generate

    parser = options.get_generation_parser()
    parser.add_argument("--arch", "-a", metavar="ARCH", default="wav2vec2")  # as fairseq_cli.generate.cli_main
    try:
        generate.main(options.parse_args_and_arch(parser, input_args=argv))
    except PSKDError:
        raise  # already says what is wrong (it is a ValueError, which the clause below would re-wrap)
    except (AssertionError, RuntimeError, ValueError, KeyError, FileNotFoundError) as err:
        msg = str(err).strip().splitlines()
        raise PSKDError(f"fairseq-generate failed: {type(err).__name__}: {msg[-1] if msg else ''}") from err


def corpus_nll(data_dir: Path, checkpoint: Path, subset: str, max_tokens: int = 4096) -> float:
    """Mean negative log-likelihood of the reference tokens (nats per target token, EOS included; eval mode).

    Teacher-forced, the same quantity as fairseq's validation ``nll_loss`` (which is in bits); PS-KD claims better
    NLL, and on a tiny model it moves long before BLEU does.
    """
    import torch
    from fairseq import checkpoint_utils, utils

    models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(checkpoint)],
                                                                    arg_overrides={"data": str(data_dir)})
    model = models[0].eval()
    task.load_dataset(subset)
    itr = task.get_batch_iterator(task.dataset(subset), max_tokens=max_tokens, ignore_invalid_inputs=False,
                                  max_positions=utils.resolve_max_positions(task.max_positions(),
                                                                            model.max_positions()))
    pad, total, count = task.target_dictionary.pad(), 0.0, 0
    with torch.no_grad():
        for sample in itr.next_epoch_itr(shuffle=False):
            out = model(**sample["net_input"])
            lprobs = model.get_normalized_probs(out, log_probs=True)
            target = sample["target"]
            nll = -lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
            keep = target.ne(pad)
            total += float(nll[keep].sum())
            count += int(keep.sum())
    return total / max(count, 1)


def _device_args() -> list[str]:
    import torch

    return [] if torch.cuda.is_available() else ["--cpu"]
