"""The budgeted trainer every family trains with: a wall-clock (or step) budget, resumable, optionally DDP.

`budget` runs the loop and its bookkeeping; `clock` is the training clock; `state` the resumable state.
A family brings its step and its evaluation (masked-LM pretraining: `pretrain/loop.py`; translation:
`tasks/translation/train.py`).
"""
