# Runtime shared by the mini configs: mmdet's default runtime, AdamW (trains a from-scratch backbone faster than
# SGD in a few hundred iterations), a short warm-up, one LR step, and only the final checkpoint kept.
_base_ = 'mmdet::_base_/default_runtime.py'

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.002, weight_decay=0.05),
    clip_grad=dict(max_norm=10, norm_type=2))
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', interval=1000, max_keep_ckpts=1, save_last=True))
log_processor = dict(type='LogProcessor', window_size=10, by_epoch=True)
randomness = dict(seed=0)
auto_scale_lr = dict(enable=False, base_batch_size=8)
