"""Sweeps: grids of runs, the tidy results table, figures and the report."""
