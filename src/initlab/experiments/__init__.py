"""The experiment cards of EXPERIMENTS.md, one module each."""
