"""pskd.core: the framework-free PS-KD method (imports torch and numpy only).

Quick start::

    from pskd.core import AlphaSchedule, DenseStore, PSKD

    policy = PSKD(num_classes=100, store=DenseStore(len(train_set), 100, dtype="fp16"),
                  schedule=AlphaSchedule(alpha_T=0.8, num_epochs=300))
    for epoch in range(300):
        for images, labels, ids in loader:          # the dataset returns its sample index
            logits = model(images)
            loss = policy.loss(logits, labels, ids, epoch)
            optimizer.zero_grad(); loss.backward(); optimizer.step()
            policy.observe(ids, logits)              # this epoch's predictions, read back next epoch
        policy.end_epoch()
"""
from .cutmix import Mix, cutmix, mix_targets
from .losses import kd_kl_div, mix_with_kd, quality_focal_loss, soft_binary_cross_entropy, soft_cross_entropy
from .metrics import classification_metrics, reliability_diagram
from .policies import CSKD, METHODS, PSKD, CrossEntropy, LabelSmoothing, TargetPolicy, TFKDReg, TFKDSelf, build_policy
from .schedules import AlphaSchedule, check_alpha, linear_alpha, linear_alpha_per_update
from .stores import DenseStore, PredictionStore, TopKStore, build_store
from .targets import check_labels, one_hot, refine_targets, smooth_one_hot
from .teacher import SnapshotTeacher, unwrap_model

__all__ = [
    "Mix", "cutmix", "mix_targets", "kd_kl_div", "mix_with_kd", "quality_focal_loss", "soft_binary_cross_entropy",
    "soft_cross_entropy", "classification_metrics", "reliability_diagram", "CSKD", "METHODS", "PSKD",
    "CrossEntropy", "LabelSmoothing", "TargetPolicy", "TFKDReg", "TFKDSelf", "build_policy", "AlphaSchedule",
    "check_alpha", "linear_alpha", "linear_alpha_per_update", "DenseStore", "PredictionStore", "TopKStore",
    "build_store", "check_labels", "one_hot", "refine_targets", "smooth_one_hot", "SnapshotTeacher", "unwrap_model",
]
from .errors import CheckpointError, ConfigError, DataError, PskdError, TrainingError  # noqa: E402
from .io import atomic_path, atomic_torch_save, atomic_write_json, atomic_write_text  # noqa: E402

__all__ += ["CheckpointError", "ConfigError", "DataError", "PskdError", "TrainingError", "atomic_path",
            "atomic_torch_save", "atomic_write_json", "atomic_write_text"]
