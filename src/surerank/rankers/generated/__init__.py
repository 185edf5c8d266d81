"""Selectors among generated candidates (N sampled outputs of one prompt): MBR, QE, voting, execution.

The candidates are outputs of a generator, not retrieved documents: they are judged against each other
(:mod:`.similarity`, :mod:`.answers`), by a quality estimator, or by running them (:mod:`.execution`).
"""
