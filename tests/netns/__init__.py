"""Tests across network namespaces (marker ``netns``); see conftest.py."""
