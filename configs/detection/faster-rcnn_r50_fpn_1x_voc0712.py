# PS-KD paper's detection setting: Faster R-CNN R-50 FPN (ImageNet-pretrained backbone), PASCAL VOC 07+12 trainval,
# tested on VOC07 test; mmdet's stock recipe (4 epochs over a 3x repeated set = 12 epochs; SGD 0.01, batch 2x8).
# Data: data/VOCdevkit/{VOC2007,VOC2012} relative to the working directory (mmdet's layout), or override
# train_dataloader.dataset.dataset.datasets.N.data_root / test_dataloader.dataset.data_root.
_base_ = 'mmdet::pascal_voc/faster-rcnn_r50_fpn_1x_voc0712.py'
