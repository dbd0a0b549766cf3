"""`tlc plan`: pilot every size for the first fraction of its budget, extrapolate, and recommend a size.

Layers, bottom up: `fit` (curve fit, pure numpy), `choose` (constraint filtering and the recommendation),
`pilot` (the first fraction of the real pretraining run), `probe` (compression penalty, storage, latency
measured on a pilot checkpoint), `planner` (the command), `check` (the backtest).
"""
