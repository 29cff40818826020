"""Helpers shared by several test areas (imported as ``tests.support.*``; pyproject puts the
repository root on ``sys.path`` for pytest)."""
