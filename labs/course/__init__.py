"""What a notebook shows and asks: measurement recipes, checks, lessons, predictions, exercises,
plots, diagrams, tables, the docs' numbers.
"""
