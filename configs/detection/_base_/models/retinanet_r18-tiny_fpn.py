# RetinaNet with a CPU-sized ResNet-18 (16 base channels, trained from scratch) for the mini configs; the rest is
# mmdet's stock R-50 FPN RetinaNet config, inherited. Sized for 128-200 px images with 8-110 px objects.
_base_ = 'mmdet::_base_/models/retinanet_r50_fpn.py'

model = dict(
    backbone=dict(depth=18, base_channels=16, frozen_stages=-1, norm_eval=False, init_cfg=None),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=64, num_outs=4),
    bbox_head=dict(
        in_channels=64, feat_channels=64, stacked_convs=2,
        # base anchor 2 x stride (16 px at stride 8) instead of 4 x stride; strides 8-64
        anchor_generator=dict(octave_base_scale=2, strides=[8, 16, 32, 64])),
    test_cfg=dict(nms_pre=300, max_per_img=100))
