"""Judging the separation: metrics with named conventions, the evaluation against the synthetic truth,
the comparison of every method, and the report figures."""
