"""Records of runs and what they add up to: RunResult, SLO, sweeps on disk, and where a table turns
(cliff, knee). No HTTP client.
"""
