# Mini baseline: Faster R-CNN with a tiny ResNet-18 trained from scratch on DeepForest tree crowns (real NEON aerial
# photos, 1 class). CPU-sized: about a minute of training.
_base_ = [
    './_base_/models/faster-rcnn_r18-tiny_fpn.py',
    './_base_/datasets/deepforest.py',
    './_base_/schedules/mini_deepforest.py',
]
model = dict(roi_head=dict(bbox_head=dict(num_classes=1)))
