"""fairseq ``--user-dir`` plugin for PS-KD: ``fairseq-train ... --user-dir <this folder>
--criterion ps_kd_label_smoothed_cross_entropy --alpha-T 0.8 --pskd-teacher {snapshot,topk}``.

fairseq imports this folder by its base name, so the name is unique to pskd. The criterion is registered in
``pskd.translation.criterion`` only and imported here by that name: loading the plugin and importing
``pskd.translation`` in one process registers it once.
"""
import os

# torch >= 2.6 loads checkpoints with weights_only=True by default, and fairseq checkpoints hold an
# argparse.Namespace and other plain Python objects that this refuses ("Unsupported global"), which breaks resume
# and fairseq-generate. Falling back to full unpickling is only safe for checkpoints you trust (see the README).
# setdefault: a user who sets the variable explicitly keeps their choice.
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

try:
    from pskd.translation import criterion as _criterion  # noqa: E402,F401  (registers the criterion)
except ImportError as err:  # pragma: no cover - only without an installed pskd
    raise ImportError(f"the PS-KD fairseq plugin needs the pskd package installed (pip install -e .): {err}") from err
