"""Adapters: the only modules that import google.cloud. Each implements a port from ``ports.py``."""
