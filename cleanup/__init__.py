"""Decision rules, the sweep and its runs (issue: cleanup pipeline)."""
