"""Reliability tests: crash and fault tests that run real server processes, and their checkers."""
