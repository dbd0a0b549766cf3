"""Sweeps: one recipe, one sub-run per point of a grid of field values, sharing unchanged stages.

`plan` expands and validates the points; `run` runs them under one parent run directory through
the stage store (`tlc_export.store`); the sweep report is `tlc_export.report.sweep`.
"""
