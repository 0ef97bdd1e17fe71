"""Pairwise judges: verdicts and their parsing (base.py), order-swap debiasing (pairwise.py), backends
(backends.py), voting ensembles (ensemble.py), agreement with human labels (validation.py) and the synthetic
preference data builder (synthetic.py)."""
