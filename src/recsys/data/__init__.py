"""Synthetic data: the category catalogue and the generator of users, items and interactions."""
