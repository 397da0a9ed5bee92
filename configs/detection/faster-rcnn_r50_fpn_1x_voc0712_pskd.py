# PS-KD on the paper's setting. The paper does not publish a_T for detection; 0.8 is its CIFAR-100 value.
# E = train_cfg.max_epochs = 4 (mmdet's VOC epochs each repeat the data 3 times), so alpha steps 0, 0.4, 0.6, 0.8.
_base_ = './faster-rcnn_r50_fpn_1x_voc0712.py'
custom_imports = dict(imports=['pskd.detection'], allow_failed_imports=False)
custom_hooks = [dict(type='PSKDHook', alpha_T=0.8)]
model = dict(roi_head=dict(type='PSKDStandardRoIHead'))
