"""Reward models: Bradley-Terry training (bradley_terry.py), scoring (scoring.py), stacked and ensembles
(stacked.py)."""
