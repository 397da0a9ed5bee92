# Faster R-CNN with a CPU-sized ResNet-18 (16 base channels, trained from scratch: no weight download) for the
# mini benchmark; everything else is mmdet's stock R-50 FPN model config, inherited. Sized for 128-200 px images
# with 8-110 px objects: FPN from stride 8 (the stride-4 level costs most of the CPU time and small objects are
# covered by 16 px anchors at stride 8), fewer proposals and RoIs.
_base_ = 'mmdet::_base_/models/faster-rcnn_r50_fpn.py'

model = dict(
    backbone=dict(depth=18, base_channels=16, frozen_stages=-1, norm_eval=False, init_cfg=None),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=64, start_level=1, num_outs=4),
    rpn_head=dict(
        in_channels=64, feat_channels=64,
        anchor_generator=dict(scales=[2, 4], strides=[8, 16, 32, 64])),
    roi_head=dict(
        bbox_roi_extractor=dict(
            # one sample per bin (torchvision kernel): the adaptive default costs most of the CPU time in backward
            roi_layer=dict(sampling_ratio=1, use_torchvision=True), out_channels=64, featmap_strides=[8, 16, 32]),
        bbox_head=dict(in_channels=64, fc_out_channels=256)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=150, max_per_img=100),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=150, max_per_img=100)))
