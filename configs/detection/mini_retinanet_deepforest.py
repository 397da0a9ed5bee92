# Mini baseline: RetinaNet with a tiny ResNet-18 trained from scratch on DeepForest tree crowns (real NEON aerial
# photos, 1 class). CPU-sized: about a minute of training.
_base_ = [
    './_base_/models/retinanet_r18-tiny_fpn.py',
    './_base_/datasets/deepforest.py',
    './_base_/schedules/mini_deepforest.py',
]
model = dict(bbox_head=dict(num_classes=1))
