"""Judging the separation: metrics with named conventions, the evaluation against the synthetic truth,
the comparison of every method, and the report figures."""

__all__: list[str] = []  # import from the submodules; nothing is re-exported here
