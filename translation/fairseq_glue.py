"""How the PS-KD criterion hears about epochs, updates and checkpoints inside stock fairseq-train.

fairseq gives a criterion no epoch hook and no checkpoint state of its own (a criterion's ``state_dict`` is only
saved when it has parameters, and then it is wrapped in DDP and optimised). What fairseq does offer:

* ``task.begin_epoch(epoch, model)``, called by the trainer at the start of every training epoch, also right after
  a resume;
* ``task.train_step(..., update_num, ignore_grad)``, called for every (sub-)batch with the number of finished
  updates and whether the batch is a dummy (padding of uneven data-parallel shards);
* ``task.state_dict()``, whose result the trainer writes into every checkpoint as ``task_state``.

:func:`attach` wraps those three methods on the one task instance the criterion was built for (nothing global,
nothing else changes; the wrapped task still behaves as before and any task type works, so the user only passes
``--criterion ps_kd_label_smoothed_cross_entropy``). The PS-KD state goes into ``task_state["pskd"]``: plain
dicts and tensors, so a stock fairseq (generate, interactive, hub loading) reads such checkpoints unchanged.

fairseq's ``Trainer.load_checkpoint`` never gives ``task_state`` back to the task on resume (only
``load_model_ensemble_and_task`` does, for inference). :func:`install_load_watch` therefore wraps
``fairseq.checkpoint_utils.load_checkpoint_to_cpu`` (the function the trainer calls to read the file) to note the
PS-KD entry of the checkpoint being loaded; the criterion takes it at its first ``begin_epoch``. The wrapper
returns the loaded state untouched.
"""
from __future__ import annotations

import functools
from typing import Any

__all__ = ["STATE_KEY", "attach", "install_load_watch", "take_loaded_state"]

STATE_KEY = "pskd"
_NOT_LOADED = object()
_loaded: dict[str, Any] = {"path": None, "state": _NOT_LOADED}


def install_load_watch() -> None:
    """Wrap ``fairseq.checkpoint_utils.load_checkpoint_to_cpu`` once per process (idempotent)."""
    from fairseq import checkpoint_utils

    original = checkpoint_utils.load_checkpoint_to_cpu
    if getattr(original, "_pskd_watch", False):
        return

    @functools.wraps(original)
    def load_checkpoint_to_cpu(path, *args, **kwargs):
        state = original(path, *args, **kwargs)
        task_state = state.get("task_state") if isinstance(state, dict) else None
        _loaded["path"] = str(path)
        _loaded["state"] = (task_state or {}).get(STATE_KEY)
        return state

    load_checkpoint_to_cpu._pskd_watch = True
    checkpoint_utils.load_checkpoint_to_cpu = load_checkpoint_to_cpu


def take_loaded_state() -> tuple[str | None, Any]:
    """``(path, pskd_state)`` of the last checkpoint loaded in this process, then forget it.

    ``path`` is None when no checkpoint was loaded; ``pskd_state`` is None when the checkpoint has no PS-KD entry.
    """
    path, state = _loaded["path"], _loaded["state"]
    _loaded["path"], _loaded["state"] = None, _NOT_LOADED
    return path, (None if state is _NOT_LOADED else state)


def attach(task, criterion) -> None:
    """Route ``task``'s epoch, step and checkpoint hooks to ``criterion`` (re-attaching replaces the criterion)."""
    task._pskd_criterion = criterion
    if getattr(task, "_pskd_attached", False):
        return
    task._pskd_attached = True
    begin_epoch, train_step, state_dict = task.begin_epoch, task.train_step, task.state_dict

    @functools.wraps(begin_epoch)
    def begin_epoch_hook(epoch, model):
        begin_epoch(epoch, model)
        task._pskd_criterion.begin_epoch(epoch, model)

    @functools.wraps(train_step)
    def train_step_hook(sample, model, criterion, optimizer, update_num, ignore_grad=False, **kwargs):
        task._pskd_criterion.set_step(update_num, ignore_grad)
        return train_step(sample, model, criterion, optimizer, update_num, ignore_grad=ignore_grad, **kwargs)

    @functools.wraps(state_dict)
    def state_dict_hook():
        state = dict(state_dict())
        state[STATE_KEY] = task._pskd_criterion.pskd_state_dict()
        return state

    task.begin_epoch, task.train_step, task.state_dict = begin_epoch_hook, train_step_hook, state_dict_hook


def data_parallel() -> tuple[int, int, Any]:
    """``(rank, world_size, group)`` of fairseq's data-parallel group; ``(0, 1, None)`` in a single process.

    (fairseq's own ``get_data_parallel_rank`` fails when torch.distributed is not initialised.)
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1, None
    from fairseq.distributed import utils as dist_utils

    group = dist_utils.get_data_parallel_group()
    return dist_utils.get_rank(group), dist_utils.get_world_size(group), group
