"""What the engine says about itself: the Prometheus scrape and sampler, the live widgets.
"""
