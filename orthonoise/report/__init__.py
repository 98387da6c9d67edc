"""From a sweep directory to a verdict: `python -m orthonoise.report <sweep_dir>`."""
