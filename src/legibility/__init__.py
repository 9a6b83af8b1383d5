"""legibility: measure and train chain-of-thought legibility.

Stages (each a module, each reading and writing typed JSONL records):
benchmarks -> traces -> transforms/pairs -> train -> (evaluation, later).
"""

__version__ = "0.1.0"
