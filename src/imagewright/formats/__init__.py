"""Byte-level readers of image formats and containers. Pure Python; no subprocess.

Imports nothing of imagewright's but ``errors``, ``binary`` and ``units``.
"""
