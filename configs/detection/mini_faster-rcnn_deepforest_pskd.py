# PS-KD version of mini_faster-rcnn_deepforest.py: custom_imports, custom_hooks and the head type, nothing else.
_base_ = './mini_faster-rcnn_deepforest.py'
custom_imports = dict(imports=['pskd.detection'], allow_failed_imports=False)
custom_hooks = [dict(type='PSKDHook', alpha_T=0.8)]
model = dict(roi_head=dict(type='PSKDStandardRoIHead'))
