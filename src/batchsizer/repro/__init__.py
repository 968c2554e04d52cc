"""The paper's experiments: the 20 jobs, methods and baselines, the exact oracle, tables and figures."""
