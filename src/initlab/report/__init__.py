"""Figures (matplotlib) and, from saved results, the HTML / Markdown report."""
