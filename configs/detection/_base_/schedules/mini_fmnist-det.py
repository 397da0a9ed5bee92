# fmnist-det mini schedule: 3 epochs x 38 iterations over the first 600 of the 1,200 training scenes (batch 16),
# about a minute on one CPU core (the subset and batch size are set in ../datasets/fmnist-det.py).
_base_ = './mini_runtime.py'

max_epochs = 3
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[2], gamma=0.1)
]
