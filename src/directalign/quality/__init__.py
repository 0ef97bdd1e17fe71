"""Is this preference data worth training on? Agreement, calibration, aggregation, diagnostics and filters.

table.py (annotation tables) -> agreement.py (kappa, alpha, bootstrap CIs), calibration.py (gold items),
aggregation.py (majority vote, Dawid-Skene); diagnostics.py and filters.py work on PreferenceRecords, pairs.py
turns scored responses into them, sources.py adapts public multi-annotator data sets.
"""
