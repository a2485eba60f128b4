"""Two-tower product recommender."""
