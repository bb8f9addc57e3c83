"""Shared pytest settings: lab tests are marked and selected by the Makefile."""
