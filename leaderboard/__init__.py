"""Leaderboard: tables and statistics regenerated from the result records alone."""
