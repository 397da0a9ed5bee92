# RetinaNet R-50 FPN on COCO 2017 (train2017 / val2017), mmdet's stock 1x recipe (12 epochs).
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
