# Mini baseline: Faster R-CNN with a tiny ResNet-18 trained from scratch on Fashion-MNIST composite scenes (10
# classes; the objects are real Fashion-MNIST images, the scenes are synthetic composites). CPU-sized: about a minute
# of training.
_base_ = [
    './_base_/models/faster-rcnn_r18-tiny_fpn.py',
    './_base_/datasets/fmnist-det.py',
    './_base_/schedules/mini_fmnist-det.py',
]
model = dict(roi_head=dict(bbox_head=dict(num_classes=10)))
