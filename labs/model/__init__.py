"""The server as arithmetic, predictions before measurements: the article's figures, model anatomy
and the ceiling, step costs and limits, the fit, the one scheduler replay, sizing, prefix
arithmetic, cost, runs sized to a time budget.
"""
