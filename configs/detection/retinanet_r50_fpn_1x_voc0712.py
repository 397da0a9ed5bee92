# RetinaNet R-50 FPN on PASCAL VOC 07+12 (tested on VOC07 test), mmdet's stock recipe.
_base_ = 'mmdet::pascal_voc/retinanet_r50_fpn_1x_voc0712.py'
