# PS-KD RetinaNet on VOC 07+12: quality focal loss against (1 - a) * onehot + a * sigmoid(teacher).
_base_ = './retinanet_r50_fpn_1x_voc0712.py'
custom_imports = dict(imports=['pskd.detection'], allow_failed_imports=False)
custom_hooks = [dict(type='PSKDHook', alpha_T=0.8)]
model = dict(bbox_head=dict(type='PSKDRetinaHead'))
