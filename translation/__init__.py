"""pskd.translation: PS-KD for fairseq translation.

* :mod:`pskd.translation.criterion` - the ``ps_kd_label_smoothed_cross_entropy`` criterion (registering it imports
  fairseq, so this package does not import it eagerly);
* :mod:`pskd.translation.teachers` - snapshot and top-k teachers; :mod:`pskd.translation.topk_store` - the
  per-token memory-mapped store; :mod:`pskd.translation.fairseq_glue` - epoch / checkpoint hooks;
* :mod:`pskd.translation.cli` - the ``pskd-mt`` command (prepare, train, eval).

The ``--user-dir`` folder for stock ``fairseq-train`` is :func:`plugin_dir`.
"""
import importlib.util

__all__ = ["plugin_dir"]


def plugin_dir() -> str:
    """Folder of the ``pskd_fairseq_plugin`` package (editable or normal install), for ``--user-dir``."""
    spec = importlib.util.find_spec("pskd_fairseq_plugin")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("pskd_fairseq_plugin is not installed: pip install -e . from the pskd repository")
    return list(spec.submodule_search_locations)[0]
