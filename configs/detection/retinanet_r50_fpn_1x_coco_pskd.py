# PS-KD RetinaNet on COCO, 12 epochs: alpha = 0 in epoch 0, then a_T * (e + 1) / 12.
_base_ = './retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['pskd.detection'], allow_failed_imports=False)
custom_hooks = [dict(type='PSKDHook', alpha_T=0.8)]
model = dict(bbox_head=dict(type='PSKDRetinaHead'))
