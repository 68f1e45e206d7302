"""Test model zoo: small PyTorch models, exporters and reference counts (tests and tools only)."""
