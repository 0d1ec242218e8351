"""Evaluation: metrics against baselines, slices, the verdict, the route KPI, the report."""
